#!/usr/bin/env bash
# Wrapper: bench/bench.sh [--runner PATH] [--reps N] [--quick] ... (see bench/bench.py)
exec "${PYTHON:-python3}" "$(dirname "$0")/bench.py" "$@"
