#!/usr/bin/env bash
# Installs what building and testing runner needs on a fresh Debian machine
# with rustup and Python 3: pytest and pytest-xdist for the interpreter
# runner will use, and a wasm32 toolchain for the built-in policies.
# Idempotent: re-running it only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
if ! "$python" -c "import pytest, xdist" 2>/dev/null; then
    "$python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
fi
bash scripts/install-wasm-toolchain.sh
