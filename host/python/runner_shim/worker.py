"""A forked worker: it inherits the imported project and the collected items,
connects back to the host and runs the items it is given through pytest's
full ``pytest_runtest_protocol``, streaming each test's reports."""

import contextlib
import faulthandler
import io
import os
import random
import signal
import sys
import traceback
from collections import deque

import pytest

from . import coverage_fork
from .framing import Channel, signals_deferred
from .output import WorkerOutput
from .processes import record_forks
from .xdist_compat import as_xdist_worker

# A worker asks for more tests once it holds this many or fewer.
PREFETCH = 2


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
        self.pid = os.getpid()
        hello = {"t": "hello", "worker": self.worker_id, "pid": self.pid}
        self.output = WorkerOutput(self.config, self.plugin.socket_path, hello)
        self._become_worker()
        self.current = None  # (item, reports, warnings) while a test runs
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
            try:
                self._loop(channel)
            except (KeyboardInterrupt, pytest.exit.Exception) as stop:
                # pytest stops the session here: tell the host, then tear
                # down what is set up, as pytest's end of session would.
                self._stop_session(channel, stop)
                self._teardown()
            # Before the connections close: the host counts a worker whose
            # connection closed as gone, and stops what is left of it. The
            # last result goes out first: what follows is outside any test.
            with contextlib.suppress(OSError):  # the host is gone: nobody to tell
                channel.flush()
            self._finish_session()
            coverage_fork.save_in_worker()
        finally:
            faulthandler.unregister(signal.SIGUSR1)
            faulthandler.disable()
            try:
                channel.close()
            finally:
                self.evidence.close()
                self.output.close()
        # The rest of the session's end belongs to the zygote, which
        # replays every report: a worker's would run main-process plugins
        # a second time (a JUnit file, a coverage report, a terminal summary
        # written once per worker). Its atexit handlers are the zygote's.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def _finish_session(self):
        """As under xdist, a conftest's ``pytest_sessionfinish`` runs in each
        worker too (per-worker clean-up lives there); plugins' run once, in
        the zygote."""
        manager = self.config.pluginmanager
        others = [plugin for plugin in manager.get_plugins() if not _is_conftest(plugin)]
        finish = manager.subset_hook_caller("pytest_sessionfinish", remove_plugins=others)
        status = 1 if self.session.testsfailed else 0
        try:
            finish(session=self.session, exitstatus=status)
        except Exception:  # pytest would show it as an internal error
            traceback.print_exc()

    def _teardown(self):
        with contextlib.suppress(Exception):
            self.session._setupstate.teardown_exact(None)

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
        record_forks(os.path.join(os.path.dirname(self.plugin.socket_path), "forks"))
        as_xdist_worker(self.config, self.worker_id, self.worker_count)
        coverage_fork.restart_in_worker()
        # Siblings must not share the zygote's random state.
        random.seed()
        # The global capture's temp file is shared with the zygote and the
        # other workers after fork; give this worker its own. It saves the
        # descriptors it finds as the ones to restore: this worker's own
        # stdin, stdout and stderr, pointed where they belong in between.
        capman = self.config.pluginmanager.getplugin("capturemanager")
        restart = capman is not None and capman._global_capturing is not None
        if restart:
            capman.stop_global_capturing()
        self.output.attach()
        if restart:
            capman.start_global_capturing()
            capman.suspend_global_capture()

    def _run(self, channel, item, nextitem):
        # The previous result, a request for more and this start go out in
        # one write; the host must know the start before the test runs.
        channel.queue({"t": "started", "id": item.nodeid})
        channel.flush()
        reports, warnings = self.plugin.start_test()
        self.current = (item, reports, warnings)
        self.output.test_started(item.nodeid)
        try:
            self.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        except BaseException:
            if os.getpid() != self.pid:
                os._exit(1)
            self.output.test_finished()
            raise
        if os.getpid() != self.pid:
            # A process the test forked returned into this loop: it is not
            # the worker, and its test ends here (plain pytest would run the
            # rest of the session in it). Its status says how its part went.
            os._exit(1 if any(r["outcome"] == "failed" for r in reports) else 0)
        self.output.test_finished()
        channel.queue({"t": "result", "id": item.nodeid, "reports": reports, "warnings": warnings})
        # Queued: from here a stop must not send it again.
        self.current = None
        self.plugin.end_test()

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
        with signals_deferred():
            if self.current is not None:
                item, reports, warnings = self.current
                message["id"] = item.nodeid
                if reports:
                    channel.queue({"t": "result", "id": item.nodeid, "reports": reports, "warnings": warnings})
            channel.queue(message)
            with contextlib.suppress(OSError):  # the host is gone: nobody to tell
                channel.flush()

    def _forked_by_a_test(self):
        """Runs in every process forked from this worker (os.fork in a test,
        multiprocessing): it shares the worker's connections and must never
        speak on them, nor write its crashes to the worker's evidence."""
        faulthandler.unregister(signal.SIGUSR1)
        faulthandler.disable()
        self.channel.abandon()
        self.evidence.abandon()
        self.output.forked()


def _is_conftest(plugin):
    return os.path.basename(getattr(plugin, "__file__", None) or "") == "conftest.py"


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
