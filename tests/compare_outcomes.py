#!/usr/bin/env python3
"""Compare runner's per-test outcomes with plain pytest's on one suite.

    python3 tests/compare_outcomes.py --runner PATH --suite DIR [-n N] [--pytest-arg ARG]... -- PYTEST_ARGS...

1. Runs ``python3 -m pytest -p no:cacheprovider -p outcome_recorder [ARG...] PYTEST_ARGS``
   in DIR; the recorder plugin (tests/outcome_recorder.py) stores, per node id,
   the list of [when, category] that pytest_report_teststatus gives for each
   report, and the exit status. (``--pytest-arg`` is for plain pytest only:
   ``-p no:xdist -o addopts=`` to compare a suite whose addopts say ``-n auto``
   with pytest run in one process.)
2. Runs ``runner -n N --run-log TMP -- -p no:cacheprovider PYTEST_ARGS`` in DIR
   (without ``-n`` for ``-n none``: pytest's own ``-n`` decides) and reads the
   ``result`` and ``run-finished`` lines of its run log.
3. Compares node ids, phases, exit codes and the counts in the closing summary
   line; prints every difference and a summary line; exits 0 only if there
   were no differences and at least one test was compared.

Exit codes: 0 identical, 1 differences, 2 a side produced nothing usable.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLOSING_RE = re.compile(r"^(?P<counts>.+?) in \d+(?:\.\d+)?s\b")
PART_RE = re.compile(r"^(\d+) ([a-z][a-z ]*)$")


def closing_counts(output):
    """{"passed": 3, "subtests passed": 8, ...} from pytest's closing line, or None.

    The closing line is the last line shaped like `3 failed, 10 passed in 0.52s`
    (with or without the `=====` decoration), or `no tests ran in 0.01s`.
    """
    for line in reversed(output.splitlines()):
        m = CLOSING_RE.match(line.strip().strip("=").strip())
        if not m:
            continue
        text = m.group("counts")
        if text == "no tests ran":
            return {}
        counts = {}
        for part in text.split(", "):
            pm = PART_RE.match(part)
            if not pm:
                break
            word = {"error": "errors", "warning": "warnings"}.get(pm.group(2), pm.group(2))
            counts[word] = int(pm.group(1))
        else:
            return counts
    return None


def run(cmd, cwd, env, timeout, label, verbose):
    if verbose:
        print(f"[{label}] $ cd {cwd} && {shlex.join(cmd)}", file=sys.stderr)
    t0 = time.monotonic()
    try:
        # Each in its own process group, as a shell runs a job: a test that
        # signals its group must reach pytest, not this script.
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        print(f"[{label}] TIMED OUT after {timeout}s: {shlex.join(cmd)}\n{out[-4000:]}", file=sys.stderr)
        return None, out, timeout
    return proc.returncode, proc.stdout, time.monotonic() - t0


def load_runner_log(path):
    results, dups, finished, bad = {}, [], None, 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                print(f"runner log line {lineno} is not JSON: {line[:200]}", file=sys.stderr)
                continue
            kind = obj.get("type")
            if kind == "test-finished":
                nodeid = obj.get("id")
                phases = [list(p) for p in obj.get("phases") or []]
                if nodeid in results:
                    dups.append(nodeid)
                results[nodeid] = {"phases": phases, "outcome": obj.get("outcome")}
            elif kind == "run-finished":
                finished = obj
    return results, dups, finished, bad


def fmt(phases):
    if phases is None:
        return "(absent)"
    return " ".join(f"{w}={c or '-'}" for w, c in phases)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runner", required=True, help="path to the runner binary")
    ap.add_argument("--suite", required=True, help="directory to run both in (the pytest rootdir)")
    ap.add_argument("-n", default="2", help="runner workers: N, auto, logical, or none for no -n (default 2)")
    ap.add_argument(
        "--pytest-arg",
        action="append",
        default=[],
        help="an argument for plain pytest only, before PYTEST_ARGS (repeatable)",
    )
    ap.add_argument("--python", default=sys.executable, help="python for plain pytest and for runner --python")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    ap.add_argument("--no-summary-check", action="store_true", help="do not compare the closing line's counts")
    ap.add_argument("--allow-empty", action="store_true", help="accept zero compared tests (for exit-code-only checks)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print commands and both outputs")
    ap.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: arguments for pytest")
    args = ap.parse_args(argv)
    pytest_args = list(args.pytest_args)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]

    suite = Path(args.suite).resolve()
    runner = Path(args.runner).resolve()
    if not suite.is_dir():
        ap.error(f"--suite {suite} is not a directory")
    if not runner.is_file():
        ap.error(f"--runner {runner} does not exist (build it: cargo build -p runner)")

    env = dict(os.environ)
    for var in (
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_CURRENT_TEST",
        "OUTCOME_RECORDER_OUT",
    ):
        env.pop(var, None)
    common = ["-p", "no:cacheprovider"]

    with tempfile.TemporaryDirectory(prefix="compare-outcomes-") as tmp:
        rec_path = Path(tmp) / "pytest-outcomes.json"
        log_path = Path(tmp) / "runner-run.jsonl"

        py_env = dict(env)
        py_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        py_env["OUTCOME_RECORDER_OUT"] = str(rec_path)
        py_cmd = [args.python, "-m", "pytest", *common, "-p", "outcome_recorder", *args.pytest_arg, *pytest_args]
        py_rc, py_out, py_t = run(py_cmd, suite, py_env, args.timeout, "pytest", args.verbose)

        workers = [] if args.n == "none" else ["-n", args.n]
        rn_cmd = [
            str(runner),
            *workers,
            "--python",
            args.python,
            "--run-log",
            str(log_path),
            "--",
            *common,
            *pytest_args,
        ]
        rn_rc, rn_out, rn_t = run(rn_cmd, suite, env, args.timeout, "runner", args.verbose)

        if args.verbose:
            print("----- pytest output -----\n" + py_out + "\n----- runner output -----\n" + rn_out, file=sys.stderr)

        fatal = []
        py_results = {}
        if rec_path.exists():
            data = json.loads(rec_path.read_text(encoding="utf-8"))
            py_results = data["results"]
            if py_rc is not None and data["exitstatus"] != py_rc:
                fatal.append(f"pytest's recorded exit status {data['exitstatus']} != its process exit code {py_rc}")
        else:
            fatal.append("plain pytest wrote no outcome record (did it start? output tail below)\n" + py_out[-3000:])

        rn_results, dups, finished, bad = {}, [], None, 0
        if log_path.exists():
            rn_results, dups, finished, bad = load_runner_log(log_path)
        else:
            fatal.append(f"runner wrote no run log at {log_path} (exit {rn_rc}); output tail:\n" + rn_out[-3000:])

    diffs = []
    if py_rc != rn_rc:
        diffs.append(("<exit code>", str(py_rc), str(rn_rc)))
    if finished is None and log_path_exists_flag(rn_results, fatal):
        diffs.append(("<run-finished line>", "present", "absent"))
    elif finished is not None and finished.get("exit_code") != rn_rc:
        diffs.append(("<run-finished exit_code vs runner's exit>", str(rn_rc), str(finished.get("exit_code"))))
    if bad:
        diffs.append(("<run log>", "valid JSON lines", f"{bad} unparseable lines"))
    diffs.extend((d, "one result", "duplicate result lines") for d in sorted(set(dups)))

    all_ids = sorted(set(py_results) | set(rn_results))
    compared = 0
    for nodeid in all_ids:
        p = py_results.get(nodeid)
        r = rn_results.get(nodeid, {}).get("phases") if nodeid in rn_results else None
        if p is not None and r is not None:
            compared += 1
        if p != r:
            diffs.append((nodeid, fmt(p), fmt(r)))

    if not args.no_summary_check and not fatal:
        pc, rc = closing_counts(py_out), closing_counts(rn_out)
        if pc != rc:
            diffs.append(("<closing line counts>", str(pc), str(rc)))

    label = " ".join(pytest_args) or "(no args)"
    print(
        f"suite {suite} [{label}], runner -n {args.n}: pytest exit {py_rc} in {py_t:.2f}s, "
        f"runner exit {rn_rc} in {rn_t:.2f}s"
    )
    for msg in fatal:
        print("FATAL: " + msg)
    if diffs:
        w = max(len(d[0]) for d in diffs)
        w = min(w, 90)
        print(f"{'node id':<{w}}  {'pytest':<40}  runner")
        for nodeid, p, r in diffs:
            print(f"{nodeid:<{w}}  {p:<40}  {r}")
    print(f"{compared} tests compared, {len(diffs)} differences")

    if fatal:
        return 2
    if compared == 0 and not args.allow_empty:
        print("FAIL: zero tests were compared (both sides must report at least one test)")
        return 2
    if not py_results and not args.allow_empty:
        print("FAIL: plain pytest reported no tests")
        return 2
    return 1 if diffs else 0


def log_path_exists_flag(rn_results, fatal):
    # Only complain about a missing run-finished line if the log itself existed.
    return not any(m.startswith("runner wrote no run log") for m in fatal)


if __name__ == "__main__":
    sys.exit(main())
