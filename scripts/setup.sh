#!/usr/bin/env bash
# Installs what building and testing runner needs on a fresh Debian machine
# with rustup and Python 3: pytest, pytest-xdist and the plugins the tests
# use for the interpreter runner will use (requirements-dev.txt), ruff (the
# pinned version: another may lint differently), pytest-randomly where only
# the tests that ask for it see it, tmux (the debugger tests drive pdb in
# it), and a wasm32 toolchain for the built-in policies.
# Idempotent: re-running it only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
# Every pinned package at its version, or pip installs them all.
if ! "$python" - requirements-dev.txt <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, pinned = line.split("==")
        if version(name) != pinned:
            sys.exit(1)
PY
    "$python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
fi
# pytest-randomly shuffles every suite of an interpreter it is installed
# for: it goes apart, on the PYTHONPATH of the tests that use it only.
randomly=target/python-plugins/randomly
if [[ ! -d "$randomly/pytest_randomly" ]]; then
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$randomly" pytest-randomly==5.1.0
fi
if ! command -v tmux >/dev/null; then
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    # The debugger tests skip, saying so, where tmux can't be had.
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq tmux >/dev/null; } ||
        echo "setup: could not install tmux; the debugger tests will be skipped" >&2
fi
bash scripts/install-wasm-toolchain.sh
