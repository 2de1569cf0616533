"""pytest-xdist's options, taken over by runner.

pytest parses its arguments, the ini file's ``addopts`` and
``PYTEST_ADDOPTS`` here, in the zygote, so this is where xdist's options
are read. runner distributes the tests itself, so xdist must never act on
them. When xdist is installed it stays registered (conftests implement its
hooks, such as ``pytest_configure_node``, whose specs it provides), and
``take_over`` records its options and turns them off before its
``pytest_cmdline_main`` (tryfirst; turns ``-n`` into ``--tx`` specs) and its
``pytest_configure`` (starts the distributed session) see them: the zygote
and the workers then look like xdist's workers, with distribution off.
When xdist is absent, ``register_missing`` registers its options, so that a
project whose addopts say ``-n auto`` still runs. The host reads what was
asked (``taken``) in the ``collected`` message and decides.
"""

import argparse
import os
import warnings

import pytest

# The environment variable with runner's own -n, when it is auto or logical.
_RUNNER_CPU_MODE = "RUNNER_COUNT_CPUS"
_CPU_MODES = ("auto", "logical")
_TAKEN = pytest.StashKey[dict]()


def _numprocesses(text):
    """xdist's ``-n``: a number of workers, ``auto`` or ``logical``."""
    if text in _CPU_MODES:
        return text
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected a number of workers (0 means one), auto or logical; got {text!r}")
    return count


_DIST_MODES = ["each", "load", "loadscope", "loadfile", "loadgroup", "worksteal", "no"]

# xdist 3.8's command-line options (xdist/plugin.py, xdist/looponfail.py),
# with its names, destinations and defaults, for when it is absent.
_OPTIONS = [
    (
        ("-n", "--numprocesses"),
        {
            "dest": "numprocesses",
            "metavar": "numprocesses",
            "type": _numprocesses,
            "help": "Number of workers (taken over by runner): N, 0 for one, auto or logical.",
        },
    ),
    (
        ("--maxprocesses",),
        {
            "dest": "maxprocesses",
            "metavar": "maxprocesses",
            "type": int,
            "help": "At most this many workers for -n (taken over by runner).",
        },
    ),
    (
        ("--max-worker-restart",),
        {
            "dest": "maxworkerrestart",
            "default": None,
            "help": "Workers that may be replaced after crashes (taken over by runner).",
        },
    ),
    (
        ("--dist",),
        {
            "dest": "dist",
            "metavar": "distmode",
            "choices": _DIST_MODES,
            "default": "no",
            "help": "xdist's distribution mode (runner load-balances; it warns about the others).",
        },
    ),
    (("--loadscope-reorder",), {"dest": "loadscopereorder", "action": "store_true", "default": True}),
    (("--no-loadscope-reorder",), {"dest": "loadscopereorder", "action": "store_false"}),
    (("--tx",), {"dest": "tx", "action": "append", "default": [], "metavar": "xspec"}),
    (("--px",), {"dest": "px", "action": "append", "default": [], "metavar": "xspec"}),
    (("-d",), {"dest": "distload", "action": "store_true", "default": False, "help": "--dist=load."}),
    (("--rsyncdir",), {"dest": "rsyncdir", "action": "append", "default": [], "metavar": "DIR"}),
    (("--rsyncignore",), {"dest": "rsyncignore", "action": "append", "default": [], "metavar": "GLOB"}),
    (("--testrunuid",), {"dest": "testrunuid"}),
    (("--maxschedchunk",), {"dest": "maxschedchunk", "type": int}),
    (("-f", "--looponfail"), {"dest": "looponfail", "action": "store_true", "default": False}),
]


def register_missing(parser):
    """Registers the xdist options no plugin registered (xdist is not
    installed, or disabled), so that arguments and addopts written for
    xdist parse. Called once the initial conftests are loaded, which may
    bring xdist themselves."""
    groups = [parser._anonymous, *parser._groups]
    taken = {name for group in groups for option in group.options for name in option.names()}
    missing = [(names, attrs) for names, attrs in _OPTIONS if taken.isdisjoint(names)]
    if not missing:
        return
    group = parser.getgroup("xdist", "distributed and subprocess testing (xdist's options, taken over by runner)")
    for names, attrs in missing:
        group._addoption(*names, **attrs)  # -n, -d and -f are short lowercase options


def take_over(config):
    """Records what xdist's options ask for, then turns them off (as xdist
    does in its workers), so that xdist never distributes anything."""
    option = config.option
    numprocesses = getattr(option, "numprocesses", None)
    if isinstance(numprocesses, int) and numprocesses < 0:  # xdist's parser takes any int
        raise pytest.UsageError(
            f"-n/--numprocesses: expected a number of workers (0 means one), auto or logical; got {numprocesses}"
        )
    maxprocesses = getattr(option, "maxprocesses", None)
    if maxprocesses is not None and maxprocesses < 0:
        raise pytest.UsageError(f"--maxprocesses: expected a number of workers, got {maxprocesses}")
    dist = getattr(option, "dist", "no")
    if getattr(option, "distload", False):
        dist = "load"
    modes = {numprocesses, os.environ.pop(_RUNNER_CPU_MODE, None)}
    cpus, notes = _count_cpus(config, [mode for mode in _CPU_MODES if mode in modes])
    config.stash[_TAKEN] = {
        "numprocesses": numprocesses,
        "maxprocesses": maxprocesses,
        "maxworkerrestart": _max_worker_restart(getattr(option, "maxworkerrestart", None)),
        "dist": dist,
        "tx": list(getattr(option, "tx", None) or []),
        "looponfail": bool(getattr(option, "looponfail", False)),
        "cpus": cpus,
        "notes": notes,
    }
    off = {
        "numprocesses": None,
        "maxprocesses": None,
        "maxworkerrestart": None,
        "dist": "no",
        "distload": False,
        "tx": [],
        "looponfail": False,
    }
    for name, value in off.items():
        if hasattr(option, name):
            setattr(option, name, value)


def taken(config):
    """What ``take_over`` recorded, for the host."""
    return config.stash.get(_TAKEN, {})


def _max_worker_restart(value):
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise pytest.UsageError(f"--max-worker-restart: expected a number (0 or more), got {value!r}")
    return count


def _count_cpus(config, modes):
    """What ``-n auto`` and ``-n logical`` come to, for the modes asked,
    exactly as xdist counts them; and what the counting warned about."""
    counts = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mode in modes:
            counts[mode] = max(0, int(_count(config, mode)))
    notes = list(dict.fromkeys(str(warning.message) for warning in caught))
    return counts, notes


def _count(config, mode):
    # xdist's hook (its own implementation, or a project's) when xdist is
    # there; its implementations read which mode was asked from the option.
    hook = getattr(config.hook, "pytest_xdist_auto_num_workers", None)
    if hook is not None and hook.get_hookimpls():
        saved = getattr(config.option, "numprocesses", None)
        config.option.numprocesses = mode
        try:
            count = hook(config=config)
        finally:
            config.option.numprocesses = saved
        if count is not None:
            return count
    return _xdist_count(mode)


def _xdist_count(mode):
    """xdist 3.8's own ``pytest_xdist_auto_num_workers``."""
    env_var = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if env_var:
        try:
            return int(env_var)
        except ValueError:
            warnings.warn(f"PYTEST_XDIST_AUTO_NUM_WORKERS is not a number: {env_var!r}. Ignoring it.", stacklevel=2)
    try:
        import psutil
    except ImportError:
        pass
    else:
        count = psutil.cpu_count(logical=mode == "logical") or psutil.cpu_count()
        if count:
            return count
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
