#!/usr/bin/env bash
# Installs what building and testing runner needs on a fresh Debian machine
# with rustup and Python 3: pytest and pytest-xdist for the interpreter
# runner will use, ruff (the pinned version: another may lint differently),
# and a wasm32 toolchain for the built-in policies.
# Idempotent: re-running it only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
ruff_version=$(sed -n 's/^ruff==//p' requirements-dev.txt)
if ! "$python" -c "import pytest, xdist" 2>/dev/null ||
    [[ "$("$python" -m ruff --version 2>/dev/null)" != "ruff $ruff_version" ]]; then
    "$python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
fi
bash scripts/install-wasm-toolchain.sh
