#!/usr/bin/env bash
# Compare runner with plain pytest on real open-source test suites.
#
#   scripts/compare-real-suites.sh [--runner PATH] [-n N] [--only NAME] [--verbose]
#
# Downloads each suite's sdist (pinned; its tests ship in the sdist) into
# scripts/work/ (gitignored), installs its test dependencies with pip, and runs
# tests/compare_outcomes.py on it: the same per-test outcomes, exit code and
# closing-line counts as plain pytest, or the script fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/scripts/work"
PYTHON="${PYTHON:-python3}"
N=2
ONLY=""
VERBOSE=()
RUNNER=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --runner) RUNNER="$2"; shift 2 ;;
    -n) N="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --verbose|-v) VERBOSE=(-v); shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [[ -z "$RUNNER" ]]; then
  for cand in "$ROOT/target/release/runner" "$ROOT/target/debug/runner"; do
    if [[ -x "$cand" ]]; then RUNNER="$cand"; break; fi
  done
fi
if [[ -z "$RUNNER" || ! -x "$RUNNER" ]]; then
  echo "no runner binary (build it with: cargo build -r -p runner, or pass --runner PATH)" >&2
  exit 2
fi

# name | version | dir inside the sdist that goes on PYTHONPATH | pip test deps | pytest args
SUITES=(
  "six|1.17.0|.||"
  "toolz|1.2.0|.||"
  "click|8.5.1|src||"
  "more-itertools|10.7.0|.||"
  "packaging|25.0|src|pretend==1.0.9|"
)

find_sdist() {  # dir name normalized-name version
  local f
  for f in "$1/$2-$4.tar.gz" "$1/$3-$4.tar.gz"; do
    if [[ -f "$f" ]]; then echo "$f"; return; fi
  done
}

mkdir -p "$WORK"
declare -a REPORT=()
FAILED=0

for spec in "${SUITES[@]}"; do
  IFS='|' read -r name version pypath deps pyargs <<<"$spec"
  if [[ -n "$ONLY" && "$ONLY" != "$name" ]]; then continue; fi
  echo "=== $name==$version"
  dist="$WORK/dist"
  mkdir -p "$dist"
  norm="$(echo "$name" | tr '-' '_')"
  sdist="$(find_sdist "$dist" "$name" "$norm" "$version")"
  if [[ -z "$sdist" ]]; then
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps -d "$dist" "$name==$version"
    sdist="$(find_sdist "$dist" "$name" "$norm" "$version")"
  fi
  if [[ -z "$sdist" ]]; then echo "sdist of $name==$version not found in $dist" >&2; exit 2; fi
  src="$WORK/$name-$version"
  rm -rf "$src"
  mkdir -p "$src"
  tar -xzf "$sdist" -C "$src" --strip-components=1
  if [[ -n "$deps" ]]; then
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore $deps
  fi
  # shellcheck disable=SC2206
  extra=($pyargs)
  set +e
  PYTHONPATH="$src/$pypath${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" "$ROOT/tests/compare_outcomes.py" "${VERBOSE[@]}" --runner "$RUNNER" --python "$(command -v "$PYTHON")" \
      --suite "$src" -n "$N" -- "${extra[@]}" | tee "$WORK/$name.compare.txt"
  rc=${PIPESTATUS[0]}
  set -e
  summary="$(grep -E 'tests compared' "$WORK/$name.compare.txt" | tail -1)"
  if [[ $rc -eq 0 ]]; then
    REPORT+=("PASS  $name==$version: $summary")
  else
    REPORT+=("FAIL  $name==$version: ${summary:-no comparison} (compare exit $rc, details in scripts/work/$name.compare.txt)")
    FAILED=1
  fi
done

echo
echo "=== real-suite comparison, runner -n $N ($RUNNER)"
printf '%s\n' "${REPORT[@]}"
exit $FAILED
