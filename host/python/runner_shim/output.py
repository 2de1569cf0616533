"""A worker's standard streams, and the debugger's terminal.

A worker's stdout and stderr (descriptors 1 and 2, which every process a
test starts inherits) go to the host, never to the zygote's: on connections
of their own (role "output", raw bytes after the hello frame). When
pytest's capture lets a test's output through (``-s``, ``--capture=no``,
``sys`` or ``tee-sys``), each test writes on a connection of its own, opened
as it starts and closed as it ends: the host knows exactly which test every
byte belongs to, and the connection's end marks the end of its output. The
host prints it line by line, each line prefixed with the worker and the
test (see connections.rs and run/output.rs).

Under a debugger (``--pdb``, ``--trace``) the run has one worker, attached
to runner's terminal instead: its stdin, stdout and stderr are runner's
own, which the host passes to the zygote (``RUNNER_TERMINAL``), and its
process group takes the terminal's foreground so that pdb can read from it.

Without a terminal, pdb would read end of file and quit: a ``breakpoint()``
(or ``pdb.set_trace()``) in a worker that has none fails its test with a
message that says how to debug it.
"""

import contextlib
import ctypes
import os
import signal
import sys

import pytest

from .framing import Channel

# The host's copies of runner's stdin, stdout and stderr, and runner's
# process group: "IN,OUT,ERR,PGID".
_TERMINAL_ENV = "RUNNER_TERMINAL"

NO_TERMINAL = (
    "breakpoint(){where} needs a terminal, and runner's workers have none "
    "(their stdin is /dev/null: pdb would read end of file and quit). To "
    "debug, run `runner -- --pdb` (or `--trace`): one worker, attached to "
    "this terminal."
)


def _terminal():
    """runner's terminal as the zygote received it: its three descriptors
    and runner's process group, or None. Taken (and made non-inheritable)
    as the zygote imports the shim, so that nothing it or a test starts
    holds runner's terminal."""
    value = os.environ.pop(_TERMINAL_ENV, "")
    try:
        *fds, runner_pgid = (int(number) for number in value.split(","))
        if len(fds) != 3:
            return None
        for fd in fds:
            os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return None
    return tuple(fds), runner_pgid


TERMINAL, _RUNNER_PGID = _terminal() or (None, None)


def debugger(config):
    """The option that may stop a test in pdb, or None."""
    if getattr(config.option, "usepdb", False):
        return "--pdb"
    if getattr(config.option, "trace", False):
        return "--trace"
    return None


def lets_output_through(config):
    """Whether pytest's capture lets a test's output reach the worker's
    stdout and stderr: all of it (``no``, ``tee-sys``, and no capture
    plugin at all), or what is written to the descriptors (``sys``)."""
    return getattr(config.option, "capture", "no") != "fd"


def describe(config):
    """What the host must know of the run's output, for the collected message."""
    return {
        "output": "live" if lets_output_through(config) else "captured",
        "debugger": debugger(config),
    }


class WorkerOutput:
    """Points a worker's descriptors 0, 1 and 2 where they belong, and
    switches 1 and 2 to a new connection for each test when its output
    gets through pytest's capture."""

    def __init__(self, config, socket_path, hello):
        self.config = config
        self.socket_path = socket_path
        self.hello = {**hello, "role": "output"}
        self.debugger = debugger(config)
        self.per_test = lets_output_through(config) and self.debugger is None
        self.idle = None  # the worker's own connection, for output between tests
        self.reporter = None

    def attach(self):
        """Called right after fork, with pytest's global capture stopped
        (it saves the descriptors it finds as the ones to restore)."""
        _discard_inherited_buffers()
        if self.debugger and TERMINAL is not None:
            for fd, target in zip(TERMINAL, (0, 1, 2)):
                os.dup2(fd, target)
            _close_terminal()
            _take_foreground(0, _RUNNER_PGID)
        else:
            _close_terminal()
            self.idle = self._connect(None)
            _point_at(self.idle.sock.fileno())
        if self.debugger or self.per_test:
            # A terminal shows each line as it is printed; so does the host.
            _line_buffered()
        self._quiet_terminal_reporter()
        self.config.pluginmanager.register(self, "runner-output")

    def test_started(self, nodeid):
        if not self.per_test:
            return
        _flush()
        test = self._connect(nodeid)
        _point_at(test.sock.fileno())
        # Descriptors 1 and 2 keep the connection open.
        test.abandon()

    def test_finished(self):
        if not self.per_test:
            return
        _flush()
        # The test's connection ends here, unless a process the test left
        # running still holds it (its output stays the test's).
        _point_at(self.idle.sock.fileno())

    def close(self):
        """The worker leaves: descriptors 1 and 2 stay open to the end."""
        if self.idle is not None:
            self.idle.abandon()
            self.idle = None

    def forked(self):
        """In a process a test forked: the worker's own connection is not its."""
        self.close()

    def _connect(self, nodeid):
        channel = Channel(self.socket_path)
        channel.send({**self.hello, "test": nodeid})
        return channel

    def _quiet_terminal_reporter(self):
        """The worker's copy of pytest's terminal reporter would print its
        progress (the zygote reports for the run); it writes nothing, except
        what pytest's --pdb shows before pdb starts (the traceback)."""
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        writer = getattr(reporter, "_tw", None)
        if writer is None or not hasattr(writer, "_file"):
            return
        self.reporter = writer._file = _Gate(writer._file)

    # --- hooks (registered in the worker only) --------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_exception_interact(self, node, call, report):
        if self.reporter is None or not self.debugger:
            return (yield)
        self.reporter.open = True
        try:
            return (yield)
        finally:
            self.reporter.open = False

    def pytest_enter_pdb(self, config, pdb):
        if self.debugger:
            return
        # pytest suspended its capture for pdb; the test goes on without it.
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.resume()
        pytest.fail(NO_TERMINAL.format(where=_caller(config)), pytrace=False)


def _caller(config):
    """` at FILE:LINE` of the code that called breakpoint(): the first frame
    up the stack that is not pytest's, pluggy's or runner's."""
    skipped = (os.sep + "_pytest" + os.sep, os.sep + "pluggy" + os.sep, os.path.dirname(__file__))
    frame = sys._getframe(1)
    while frame is not None and any(part in frame.f_code.co_filename for part in skipped):
        frame = frame.f_back
    if frame is None:
        return ""
    try:
        path = os.path.relpath(frame.f_code.co_filename, config.rootpath)
    except ValueError:
        path = frame.f_code.co_filename
    return f" at {path}:{frame.f_lineno}"


class _Gate:
    """Stands in for the file the worker's terminal reporter writes to:
    what it writes is dropped unless the gate is open."""

    def __init__(self, file):
        self.file = file
        self.open = False

    def write(self, text):
        if self.open:
            return self.file.write(text)
        return len(text)

    def flush(self):
        if self.open:
            self.file.flush()

    def __getattr__(self, name):
        return getattr(self.file, name)


def _point_at(fd):
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _close_terminal():
    for fd in TERMINAL or ():
        with contextlib.suppress(OSError):
            os.close(fd)


def _flush():
    """What Python and C buffered goes out before the descriptors change."""
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}.values():
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        _libc().fflush(None)


def _discard_inherited_buffers():
    """What the zygote had buffered and not written is the zygote's: the
    worker's copy goes to /dev/null, not out a second time as its own."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        _point_at(devnull)
        _flush()
    finally:
        os.close(devnull)


def _line_buffered():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=True)


def _take_foreground(fd, runner_pgid):
    """Makes this worker's process group the terminal's foreground one, so
    that reading it does not stop the worker (SIGTTIN) and Ctrl-C reaches
    the test; runner takes it back after the run. Only from runner: a
    runner started in the background leaves the shell its terminal. Asking
    from a background group sends SIGTTOU, ignored meanwhile as shells do."""
    try:
        if not os.isatty(fd) or os.tcgetpgrp(fd) != runner_pgid:
            return
    except OSError:
        return  # not our controlling terminal
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, os.getpgrp())
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, previous)


_LIBC = []


def _libc():
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None))
    return _LIBC[0]
