#!/usr/bin/env python3
"""Benchmark runner against plain pytest and pytest-xdist.

    python3 bench/bench.py [--runner PATH] [--reps N] [--quick] [-n WORKERS] [--only SUITE]

Generates three suites into bench/work/ (gitignored) and times, in one run,
for each suite:

    pytest   python3 -m pytest -q -p no:cacheprovider
    xdist    python3 -m pytest -q -p no:cacheprovider -n 2
    runner   runner -n 2 -- -q -p no:cacheprovider

The suites:

  trivial       2000 `assert True` tests in 20 files: per-test overhead.
  heavy_import  200 quick tests in 10 files; conftest.py imports heavy.py, whose
                import does ~1.5 s of pure-Python CPU work (a fixed-count
                integer loop, calibrated on this machine when the suite is
                generated; no sleep): the cost of importing/collecting once
                versus once per worker.
  cpu_bound     40 tests each spinning 0.1-0.25 s of pure-Python CPU work
                (fixed-count loops, calibrated at generation): scheduling.
                The ideal wall time is the sum of the test times (the median
                over the timed plain pytest runs, from their JUnit XML)
                divided by the worker count;
                the overhead of each parallel contender is reported against it.

Every contender runs with PYTHONDONTWRITEBYTECODE unset, after one untimed
warm-up run per suite (so .pyc files exist for all). Prints median wall times,
ratios, and writes bench/work/results.json. Exit status is non-zero if any
contender's run fails (exit code other than 0).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
SUITES = ("trivial", "heavy_import", "cpu_bound")


def spin(n):
    """The CPU work used by the generated suites (must match SPIN_SRC)."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1000003
    return acc


SPIN_SRC = textwrap.dedent("""
    def spin(n):
        acc = 0
        for i in range(n):
            acc = (acc * 31 + i) % 1000003
        return acc
""")


def calibrate():
    """Loop iterations per second of spin() on this machine."""
    n = 200_000
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()  # CPU time: less sensitive to other load than wall time
        spin(n)
        best = min(best, time.process_time() - t0)
    return n / best


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


INI = "[pytest]\ntestpaths = tests\n"


def generate(rate):
    if WORK.exists():
        for name in SUITES:
            shutil.rmtree(WORK / name, ignore_errors=True)
    # (a) trivial
    d = WORK / "trivial"
    write(d / "pytest.ini", INI)
    for f in range(20):
        body = "".join(f"def test_{i}():\n    assert True\n\n\n" for i in range(100))
        write(d / "tests" / f"test_trivial_{f:02d}.py", body)
    # (b) heavy import
    d = WORK / "heavy_import"
    write(d / "pytest.ini", INI)
    heavy_n = int(rate * 1.5)
    write(
        d / "heavy.py",
        f'"""Imported by conftest.py: ~1.5 s of CPU work at import ({heavy_n} iterations)."""\n'
        + SPIN_SRC
        + f"\nTABLE = spin({heavy_n})\n",
    )
    write(d / "conftest.py", "import heavy  # noqa: F401  (the expensive import)\n")
    for f in range(10):
        body = "import heavy\n\n\n" + "".join(f"def test_{i}():\n    assert heavy.TABLE >= 0\n\n\n" for i in range(20))
        write(d / "tests" / f"test_heavy_{f:02d}.py", body)
    # (c) cpu bound: durations 0.10, 0.15, 0.20, 0.25 s, in a fixed rotation
    d = WORK / "cpu_bound"
    write(d / "pytest.ini", INI)
    for f in range(4):
        body = SPIN_SRC + "\n\n"
        for i in range(10):
            k = f * 10 + i
            secs = 0.10 + 0.05 * (k % 4)
            body += f"def test_cpu_{k}():\n    # ~{secs:.2f} s\n    assert spin({int(rate * secs)}) >= 0\n\n\n"
        write(d / "tests" / f"test_cpu_{f}.py", body)
    write(WORK / "calibration.json", json.dumps({"spin_iterations_per_sec": rate}))


def run_once(cmd, cwd, env):
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )
    return time.perf_counter() - t0, proc.returncode, proc.stdout


TIMES_XML = WORK / "cpu_bound_times.xml"


def junit_test_times(xml):
    """Sum of the test times pytest recorded in a JUnit file."""
    root = ET.parse(xml).getroot()
    return sum(float(tc.get("time", 0)) for tc in root.iter("testcase"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runner", default=str(ROOT / "target" / "release" / "runner"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one repetition, no warm-up")
    ap.add_argument("-n", type=int, default=2, help="workers for xdist and runner (default 2)")
    ap.add_argument("--only", choices=SUITES, action="append", help="run only these suites")
    ap.add_argument("--no-runner", action="store_true", help="time pytest and xdist only")
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    suites = args.only or list(SUITES)

    env = dict(os.environ)
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_XDIST_WORKER"):
        env.pop(var, None)

    runner = Path(args.runner).resolve()
    use_runner = not args.no_runner
    if use_runner and not runner.is_file():
        print(
            f"runner binary {runner} not found: timing pytest and xdist only "
            f"(build it with `cargo build -r -p runner` or pass --runner)",
            file=sys.stderr,
        )
        use_runner = False

    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.5:
        print(
            f"warning: load average is {load:.1f} on {os.cpu_count()} CPUs; "
            "wall times (and parallel speedups) will be distorted",
            file=sys.stderr,
        )
    rate = calibrate()
    generate(rate)
    print(f"calibration: {rate:,.0f} spin iterations/s; {reps} repetition(s); -n {args.n}; python {args.python}")

    q = ["-q", "-p", "no:cacheprovider"]
    contenders = {
        "pytest": [args.python, "-m", "pytest", *q],
        "xdist": [args.python, "-m", "pytest", *q, "-n", str(args.n)],
    }
    if use_runner:
        contenders["runner"] = [str(runner), "-n", str(args.n), "--python", args.python, "--", *q]

    results = {}
    failed = False
    for suite in suites:
        cwd = WORK / suite
        if not args.quick:
            run_once(contenders["pytest"], cwd, env)  # warm-up: writes .pyc files
        times = {name: [] for name in contenders}
        sums = []
        for _ in range(reps):
            for name, cmd in contenders.items():  # interleaved, so drift hits all alike
                if suite == "cpu_bound" and name == "pytest":
                    # The test times come from the same runs as the wall
                    # times, so that the ideal drifts with the machine too.
                    cmd = [*cmd, f"--junitxml={TIMES_XML}"]
                t, rc, out = run_once(cmd, cwd, env)
                if rc != 0:
                    failed = True
                    print(f"!! {suite}/{name} exited {rc}:\n{out[-2000:]}", file=sys.stderr)
                times[name].append(t)
                if suite == "cpu_bound" and name == "pytest":
                    sums.append(junit_test_times(TIMES_XML))
        entry = {"times": times, "median": {k: statistics.median(v) for k, v in times.items()}}
        if suite == "cpu_bound":
            total = statistics.median(sums)
            entry["sum_test_times"] = total
            entry["ideal"] = total / args.n
        results[suite] = entry
        med = entry["median"]
        print(f"  {suite}: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()), flush=True)

    names = list(contenders)
    print()
    header = f"{'suite':<14}" + "".join(f"{n + ' (s)':>13}" for n in names)
    if use_runner:
        header += f"{'runner/pytest':>15}{'runner/xdist':>14}"
    print(header)
    for suite in suites:
        med = results[suite]["median"]
        line = f"{suite:<14}" + "".join(f"{med[n]:>13.2f}" for n in names)
        if use_runner:
            line += f"{med['runner'] / med['pytest']:>15.2f}{med['runner'] / med['xdist']:>14.2f}"
        print(line)
    if "cpu_bound" in results:
        r = results["cpu_bound"]
        print(
            f"\ncpu_bound: sum of test times {r['sum_test_times']:.2f}s, ideal with {args.n} workers {r['ideal']:.2f}s"
        )
        for n in names:
            if n == "pytest":
                continue
            over = (r["median"][n] - r["ideal"]) / r["ideal"] * 100
            print(f"  {n:<7} {r['median'][n]:.2f}s = {over:+.1f}% over ideal")
    WORK.mkdir(exist_ok=True)
    meta = {
        "loadavg_start": load,
        "loadavg_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "reps": reps,
        "workers": args.n,
        "spin_iterations_per_sec": rate,
    }
    (WORK / "results.json").write_text(json.dumps({"meta": meta, "suites": results}, indent=2))
    print(f"\nraw times: {WORK / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
