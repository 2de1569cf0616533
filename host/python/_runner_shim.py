"""runner's Python side: a pytest plugin plus the zygote and worker loops.

The host starts one interpreter (the zygote) with this file. The zygote runs
real pytest (``pytest.main``) with the user's arguments and this plugin; after
collection the plugin takes over ``pytest_runtestloop``: it sends the
collected tests to the host, then forks workers on request. A forked worker
inherits the imported project and the collected items, connects back to the
host and runs the items it is given through pytest's full
``pytest_runtest_protocol``, streaming each test's reports as JSON.

Everything crosses a unix socket as frames: a 4-byte big-endian length and a
UTF-8 JSON object. Never pickle: the host must be able to reject a bad frame.
"""

import faulthandler
import gc
import io
import json
import math
import os
import platform
import random
import select
import selectors
import signal
import socket
import struct
import sys
import traceback
import types
from collections import deque

import pytest

# Frames above this size are a protocol error (the host enforces the same).
MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
# A worker asks for more tests once it holds this many or fewer.
PREFETCH = 2


class Channel:
    """A framed JSON connection to the host.

    Only the process that opened it speaks on it: a process forked from that
    one (a test's child) shares the socket, and a frame from it would be
    taken for the owner's. Writes go out whole even when a signal handler
    raises (a KeyboardInterrupt): a partial frame would break the stream.
    """

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.owner = os.getpid()
        self._buf = bytearray()
        self._out = bytearray()

    def send(self, message):
        self.queue(message)
        self.flush()

    def queue(self, message):
        """Adds a message to the next flush: one system call for several."""
        data = json.dumps(message, separators=(",", ":"), default=str).encode()
        if len(data) > MAX_FRAME:
            # Oversized output (say, a test printing 100 MB) must not kill
            # the protocol: keep the head and say what was cut.
            message = _truncated(message)
            data = json.dumps(message, separators=(",", ":"), default=str).encode()
        self._out += _HEADER.pack(len(data)) + data

    def flush(self):
        if not self._out:
            return
        if os.getpid() != self.owner:
            raise RuntimeError("runner: a process forked by a test tried to speak for its worker")
        with _signals_deferred():
            data = bytes(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def recv(self):
        """The next message, or None when the host closed the connection."""
        self.flush()
        while True:
            if len(self._buf) >= 4:
                (size,) = _HEADER.unpack_from(self._buf)
                if size > MAX_FRAME:
                    raise RuntimeError(f"runner: frame of {size} bytes from host")
                if len(self._buf) >= 4 + size:
                    frame = bytes(self._buf[4 : 4 + size])
                    del self._buf[: 4 + size]
                    return json.loads(frame)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self._buf += chunk

    def poll(self):
        """Whether a message can be read without blocking."""
        if self.has_buffered_frame():
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def has_buffered_frame(self):
        if len(self._buf) < 4:
            return False
        (size,) = _HEADER.unpack_from(self._buf)
        return len(self._buf) >= 4 + size

    def close(self):
        try:
            self.flush()
        finally:
            self.sock.close()

    def abandon(self):
        """Closes this process's end without sending what is queued: for a
        forked child, whose copy of the connection belongs to its parent."""
        self._out.clear()
        self.sock.close()


class _signals_deferred:
    """Holds back SIGINT's Python handler (KeyboardInterrupt) while runner's
    own bookkeeping must not be cut in two; a SIGINT that arrives meanwhile
    is raised again, under the handler it would have met, right after."""

    def __enter__(self):
        self._arrived = False
        # None: a handler set outside Python, which can't be put back.
        self._handler = signal.getsignal(signal.SIGINT)
        if self._handler is not None:
            signal.signal(signal.SIGINT, self._hold)

    def _hold(self, *_):
        self._arrived = True

    def __exit__(self, *_):
        if self._handler is not None:
            signal.signal(signal.SIGINT, self._handler)
        if self._arrived:
            signal.raise_signal(signal.SIGINT)


def _truncated(message):
    limit = 1024 * 1024
    for report in message.get("reports", ()):
        if len(report.get("longrepr", "")) > limit:
            report["longrepr"] = report["longrepr"][:limit] + "\n[runner: output truncated]"
        report["sections"] = [
            (name, text[:limit] + ("\n[runner: output truncated]" if len(text) > limit else ""))
            for name, text in report.get("sections", ())
        ]
    return message


def _markers(item):
    return sorted({mark.name for mark in item.iter_markers()})


def _group(item):
    mark = item.get_closest_marker("xdist_group")
    if mark is None:
        return None
    name = mark.args[0] if mark.args else mark.kwargs.get("name")
    return None if name is None else str(name)


def _timeout(item):
    """Seconds from ``@pytest.mark.timeout(N)`` (pytest-timeout's marker)."""
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return None
    value = mark.args[0] if mark.args else mark.kwargs.get("timeout")
    return None if value is None else _float_or_none(value)


def _float_or_none(value):
    """A finite number of seconds, or None: JSON has no inf or NaN, and the
    host reads no limit where there is none."""
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _describe(item):
    path, line, _ = item.location
    return {
        "id": item.nodeid,
        "file": path,
        "line": None if line is None else line + 1,
        "markers": _markers(item),
        "group": _group(item),
        "timeout": _timeout(item),
    }


def _format_warning(warning_message):
    try:
        from _pytest.warnings import warning_record_to_str
    except ImportError:  # a pytest that moved it: the plain format is close
        import warnings

        return warnings.formatwarning(
            warning_message.message,
            warning_message.category,
            warning_message.filename,
            warning_message.lineno,
            warning_message.line,
        )
    return warning_record_to_str(warning_message)


def _longrepr_as_printed(report):
    """A report's longrepr as pytest's terminal report writes it (its
    `longreprtext` strips the blank line a traceback starts with, and with
    it the indentation of the first source line)."""
    try:
        from _pytest._io import TerminalWriter
    except ImportError:  # a pytest without it: the stripped text
        return report.longreprtext
    out = io.StringIO()
    writer = TerminalWriter(file=out)
    writer.hasmarkup = False
    report.toterminal(writer)
    return out.getvalue()


def _serialize_report(config, report):
    """What the host needs of a report; fields that are empty by default are
    left out (most reports are a passing setup, call or teardown)."""
    category = config.hook.pytest_report_teststatus(report=report, config=config)[0]
    data = {
        "when": report.when,
        "outcome": report.outcome,
        "category": category,
        "duration": report.duration,
    }
    if report.longrepr is not None:
        data["longrepr"] = _longrepr_as_printed(report)
    if report.sections:
        data["sections"] = [list(section) for section in report.sections]
    if report.failed:
        data["head_line"] = report.head_line or ""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        data["message"] = crash.message
    elif isinstance(report.longrepr, str):
        # A report whose longrepr is text (an XPASS(strict)) shows it in
        # pytest's short summary.
        data["message"] = report.longrepr
    if hasattr(report, "wasxfail"):
        data["wasxfail"] = report.wasxfail
    if report.skipped and isinstance(report.longrepr, tuple):
        path, lineno, reason = report.longrepr
        data["skip"] = {"path": str(path), "line": lineno, "reason": str(reason)}
    return data


class RunnerPlugin:
    """Registered in the zygote; forked workers inherit it."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.collect_errors = []
        self.collect_warnings = []
        self.deselected = 0
        self.is_worker = False
        self._reports = None
        self._warnings = None

    # --- collection (zygote) -------------------------------------------------

    def pytest_addoption(self, parser):
        parser.addini("runner_timeout", "runner: default per-test timeout in seconds", default="")

    def pytest_configure(self, config):
        self.config = config
        if not any(line.startswith("timeout") for line in config.getini("markers")):
            config.addinivalue_line("markers", "timeout(seconds): fail the test if it runs longer (runner)")
        # xdist brings its own worker_id fixture; without it, provide ours.
        if not config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_xdist_compat(), "runner-xdist-compat")

    def pytest_collectreport(self, report):
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            self.collect_errors.append(
                {
                    "id": report.nodeid,
                    "longrepr": report.longreprtext,
                    "message": None if crash is None else crash.message,
                }
            )

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        record = {"nodeid": nodeid, "message": _format_warning(warning_message)}
        if self._warnings is not None:
            self._warnings.append(record)
        elif not self.is_worker:
            self.collect_warnings.append(record)

    def pytest_deselected(self, items):
        self.deselected += len(items)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        config = session.config
        if config.option.collectonly:
            return None  # pytest's own loop prints the collection
        interrupted = None
        if session.testsfailed and not config.option.continue_on_collection_errors:
            count = session.testsfailed
            interrupted = f"{count} error{'s' if count != 1 else ''} during collection"
        channel = Channel(self.socket_path)
        channel.send({"t": "hello", "role": "zygote", "pid": os.getpid()})
        channel.send(
            {
                "t": "collected",
                "rootdir": str(config.rootpath),
                "python": platform.python_version(),
                "pytest": pytest.__version__,
                "tests": [] if interrupted else [_describe(item) for item in session.items],
                "errors": self.collect_errors,
                "warnings": self.collect_warnings,
                "deselected": self.deselected,
                "interrupted": interrupted,
                "maxfail": config.option.maxfail or 0,
                "timeout": _float_or_none(config.getini("runner_timeout")),
            }
        )
        if interrupted:
            channel.close()
            raise session.Interrupted(interrupted)
        return Zygote(self, session, channel).serve()

    # --- running (worker) ----------------------------------------------------

    def pytest_runtest_logreport(self, report):
        if self._reports is not None:
            self._reports.append(_serialize_report(self.config, report))


class Zygote:
    """Waits for the host's commands and forks workers on request."""

    def __init__(self, plugin, session, channel):
        self.plugin = plugin
        self.session = session
        self.channel = channel
        self.children = {}  # pid -> worker id

    def serve(self):
        # Collected objects never change again: freeze them so that forked
        # workers share their pages instead of copying them on first GC.
        gc.collect()
        gc.freeze()
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        zygote = os.getpid()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.channel.sock, selectors.EVENT_READ, "host")
        selector.register(wake_r, selectors.EVENT_READ, "child")

        def close_wakeup():
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            selector.close()
            os.close(wake_r)
            os.close(wake_w)

        while True:
            if not self.channel.has_buffered_frame():
                sources = {key.data for key, _ in selector.select()}
                if "child" in sources:
                    os.read(wake_r, 4096)
                    self._reap()
                if "host" not in sources:
                    continue
            message = self.channel.recv()
            if message is None or message["t"] == "shutdown":
                break
            if message["t"] == "last_failed":
                self._record_last_failed(message)
            if message["t"] == "fork":
                pid = os.fork()
                if pid == 0:
                    _die_with_parent(libc, zygote)
                    # Nothing of the zygote's own may outlive the fork
                    # unclosed: the worker would collect it and, under
                    # `filterwarnings = error`, fail on the ResourceWarning.
                    close_wakeup()
                    self.channel.abandon()
                    return Worker(self.plugin, self.session, message).serve()
                self.children[pid] = message["worker"]
                self.channel.send({"t": "forked", "worker": message["worker"], "pid": pid})
        close_wakeup()
        self._wait_all()
        self.channel.close()
        return True

    def _record_last_failed(self, message):
        # The workers' reports never pass through the zygote's hooks, so
        # tell pytest's cacheprovider what they were; it saves them at exit.
        lfplugin = self.session.config.pluginmanager.get_plugin("lfplugin")
        if lfplugin is None:
            return
        for test_id in message["passed"]:
            lfplugin.lastfailed.pop(test_id, None)
        for test_id in message["failed"]:
            lfplugin.lastfailed[test_id] = True

    def _reap(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._report_exit(pid, status)

    def _wait_all(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            self._report_exit(pid, status)

    def _report_exit(self, pid, status):
        worker = self.children.pop(pid, None)
        if worker is None:
            return
        message = {"t": "worker_exited", "worker": worker, "pid": pid}
        if os.WIFSIGNALED(status):
            message["signal"] = os.WTERMSIG(status)
        else:
            message["code"] = os.waitstatus_to_exitcode(status)
        try:
            self.channel.send(message)
        except OSError:
            pass


# prctl(2): the signal a process gets when its parent exits.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(libc, parent):
    """A worker must not outlive the zygote, which dies with runner: the
    kernel SIGKILLs it when the zygote exits, however that happens."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the zygote died before the signal was armed
        os._exit(1)


def _record_forks(path):
    """Which test started a process is in its environment (pytest's
    PYTEST_CURRENT_TEST), except for a fork without exec, which still shows
    the zygote's: each forked child records its pid and the test here, for
    runner to name the test if it is left running (see descendants.rs)."""

    def record():
        try:
            line = f"{os.getpid()} {json.dumps(os.environ.get('PYTEST_CURRENT_TEST', ''))}\n"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except BaseException:  # never disturb the child: the record is a courtesy
            pass

    os.register_at_fork(after_in_child=record)


class Worker:
    """Runs the items the host sends, in order, through pytest's protocol."""

    def __init__(self, plugin, session, fork_message):
        self.plugin = plugin
        self.session = session
        self.config = session.config
        self.worker_id = fork_message["worker"]
        self.worker_count = fork_message["count"]
        self.items = {item.nodeid: item for item in session.items}
        plugin.is_worker = True

    def serve(self):
        self._become_worker()
        self.pid = os.getpid()
        self.current = None  # (item, reports, warnings) while a test runs
        hello = {"t": "hello", "worker": self.worker_id, "pid": self.pid}
        # faulthandler writes crash and timeout tracebacks straight to a
        # socket the host reads: pytest's capture can't swallow them, and
        # they arrive even if this process dies right after.
        self.evidence = Channel(self.plugin.socket_path)
        self.evidence.send({**hello, "role": "evidence"})
        faulthandler.enable(file=self.evidence.sock.fileno(), all_threads=True)
        faulthandler.register(signal.SIGUSR1, file=self.evidence.sock.fileno(), all_threads=True)
        self.channel = channel = Channel(self.plugin.socket_path)
        channel.send({**hello, "role": "worker"})
        os.register_at_fork(after_in_child=self._forked_by_a_test)
        try:
            self._loop(channel)
        except (KeyboardInterrupt, pytest.exit.Exception) as stop:
            # pytest stops the session here: tell the host, then let pytest
            # finish it (its sessionfinish tears down what is set up).
            self._stop_session(channel, stop)
            raise
        finally:
            # Close what this worker opened: left to the garbage collector,
            # each would be a ResourceWarning at pytest's unconfigure.
            faulthandler.unregister(signal.SIGUSR1)
            faulthandler.disable()
            try:
                channel.close()
            finally:
                self.evidence.close()
        return True

    def _loop(self, channel):
        self.pending = deque()
        self.shutting_down = False
        asked = False
        while True:
            # Take in commands that already arrived, without waiting.
            while channel.poll():
                asked = self._handle(channel.recv(), asked)
            # Ask for more before running out, so that a request is always
            # in flight while a test runs (no round trip between tests).
            if not asked and not self.shutting_down and len(self.pending) <= PREFETCH:
                channel.queue({"t": "ready"})
                asked = True
            # pytest needs the next item to know which fixtures to tear down,
            # so an item runs once its successor is known or the host says
            # there is nothing more (as in xdist).
            if len(self.pending) >= 2 or (self.shutting_down and self.pending):
                item = self.pending.popleft()
                self._run(channel, item, self.pending[0] if self.pending else None)
                if self.session.shouldfail:
                    # --maxfail reached by this worker's own failures (pytest
                    # counts them in its session): start nothing more. The
                    # host, which counts every worker's, has stopped too.
                    self.pending.clear()
                    self.shutting_down = True
            elif self.shutting_down:
                break
            else:
                asked = self._handle(channel.recv(), asked)

    def _handle(self, message, asked):
        """Applies one host command; returns whether a request is still out."""
        if message is None or message["t"] == "shutdown":
            self.shutting_down = True
            if message is not None and message.get("drop_pending"):
                self.pending.clear()  # --maxfail reached: what is queued won't run
            return asked
        if message["t"] == "run":
            # Tests sent before the host heard of this worker's --maxfail
            # failure start no more than those it held (the host counts
            # every test it gave this worker and did not hear of as not run).
            if not self.session.shouldfail:
                self.pending.extend(self.items[test_id] for test_id in message["ids"])
            return False
        return asked

    def _become_worker(self):
        # Its own process group, so that the host can stop the worker and
        # every process a test started with one signal.
        os.setpgid(0, 0)
        _record_forks(os.path.join(os.path.dirname(self.plugin.socket_path), "forks"))
        os.environ["PYTEST_XDIST_WORKER"] = self.worker_id
        os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(self.worker_count)
        # What xdist's worker_id/testrun_uid fixtures and cacheprovider read.
        self.config.workerinput = {
            "workerid": self.worker_id,
            "workercount": self.worker_count,
            "testrunuid": os.environ.get("RUNNER_RUN_ID", ""),
            "mainargv": list(sys.argv),
        }
        self.config.workeroutput = {}
        # Siblings must not share the zygote's random state.
        random.seed()
        # The global capture's temp file is shared with the zygote and the
        # other workers after fork; give this worker its own.
        capman = self.config.pluginmanager.getplugin("capturemanager")
        if capman is not None and capman._global_capturing is not None:
            capman.stop_global_capturing()
            capman.start_global_capturing()
            capman.suspend_global_capture()

    def _run(self, channel, item, nextitem):
        # The previous result, a request for more and this start go out in
        # one write; the host must know the start before the test runs.
        channel.queue({"t": "started", "id": item.nodeid})
        channel.flush()
        self.plugin._reports = reports = []
        self.plugin._warnings = warnings = []
        self.current = (item, reports, warnings)
        try:
            self.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        except BaseException:
            if os.getpid() != self.pid:
                os._exit(1)
            raise
        if os.getpid() != self.pid:
            # A process the test forked returned into this loop: it is not
            # the worker, and its test ends here (plain pytest would run the
            # rest of the session in it). Its status says how its part went.
            os._exit(1 if any(r["outcome"] == "failed" for r in reports) else 0)
        channel.queue({"t": "result", "id": item.nodeid, "reports": reports, "warnings": warnings})
        # Queued: from here a stop must not send it again.
        self.current = None
        self.plugin._reports = self.plugin._warnings = None

    def _stop_session(self, channel, stop):
        """A KeyboardInterrupt (a SIGINT, too) or pytest.exit() ends pytest's
        session: sends what the test got through, then why the run stops."""
        reason, detail = _describe_stop(self.config, stop)
        returncode = getattr(stop, "returncode", None)
        message = {
            "t": "stop",
            "id": None,
            "reason": reason,
            "detail": detail,
            "exit_code": 2 if returncode is None else int(returncode),
        }
        with _signals_deferred():
            if self.current is not None:
                item, reports, warnings = self.current
                message["id"] = item.nodeid
                if reports:
                    channel.queue({"t": "result", "id": item.nodeid, "reports": reports, "warnings": warnings})
            channel.queue(message)
            try:
                channel.flush()
            except OSError:
                pass  # the host is gone: nobody to tell

    def _forked_by_a_test(self):
        """Runs in every process forked from this worker (os.fork in a test,
        multiprocessing): it shares the worker's connections and must never
        speak on them, nor write its crashes to the worker's evidence."""
        faulthandler.unregister(signal.SIGUSR1)
        faulthandler.disable()
        self.channel.abandon()
        self.evidence.abandon()


def _describe_stop(config, stop):
    """The title of pytest's `!!! ... !!!` line for an exception that stops
    the session, and the lines it prints under it (as its terminal
    reporter's _report_keyboardinterrupt does)."""
    try:
        from _pytest._code import ExceptionInfo
        from _pytest._io import TerminalWriter

        excrepr = ExceptionInfo.from_exc_info((type(stop), stop, stop.__traceback__)).getrepr(funcargs=True)
        reason = excrepr.reprcrash.message
        if "KeyboardInterrupt" not in reason:
            return reason, ""
        out = io.StringIO()
        writer = TerminalWriter(file=out)
        writer.hasmarkup = False
        if config.option.fulltrace:
            excrepr.toterminal(writer)
        else:
            excrepr.reprcrash.toterminal(writer)
            writer.line("(to show a full traceback on KeyboardInterrupt use --full-trace)")
        return reason, out.getvalue()
    except Exception:  # a pytest without these internals: the plain form
        return "".join(traceback.format_exception_only(type(stop), stop)).strip(), ""


@pytest.fixture(scope="session")
def worker_id(request):
    """xdist's worker id: gw0, gw1, ... in a worker, "master" otherwise."""
    workerinput = getattr(request.config, "workerinput", None)
    return "master" if workerinput is None else workerinput["workerid"]


@pytest.fixture(scope="session")
def testrun_uid(request):
    """An id shared by all workers of one run."""
    workerinput = getattr(request.config, "workerinput", None)
    return os.environ.get("RUNNER_RUN_ID", "") if workerinput is None else workerinput["testrunuid"]


def _xdist_compat():
    """The fixtures xdist provides, as a plugin, for suites that use them without xdist."""
    plugin = types.ModuleType("runner_xdist_compat")
    plugin.worker_id = worker_id
    plugin.testrun_uid = testrun_uid
    return plugin


def main(args):
    plugin = RunnerPlugin(os.environ["RUNNER_SOCKET"])
    code = pytest.main(args, plugins=[plugin])
    if plugin.is_worker:
        # Skip atexit handlers inherited from the zygote: they belong to it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return int(code)
