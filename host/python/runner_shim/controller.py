"""The zygote as pytest's controller, as xdist's controller is: every test
the host recorded is replayed through the zygote's own pytest hooks
(``pytest_runtest_logstart``, ``pytest_runtest_logreport`` per phase,
``pytest_runtest_logfinish``, ``pytest_warning_recorded``), so pytest's
terminal reporter writes the report and main-process plugins (junitxml,
pytest-cov, pytest-split, a conftest's ``pytest_terminal_summary``) see
every result. pytest's session then ends as it always does, with the real
exit status.

Workers never write the report: their terminal reporter writes nowhere.
"""

import ast
import contextlib
import importlib
import io
import os
import warnings

from _pytest._code.code import ReprFileLocation
from _pytest.reports import TestReport

# Words and letters for the reports runner makes itself, for a test whose
# worker hung or crashed: failures, shown as such in pytest's report.
LOST_WORDS = {"hung": ("H", "HUNG"), "crashed": ("C", "CRASHED")}


class Controller:
    """Replays the host's results into the zygote's pytest session."""

    def __init__(self, plugin, session):
        self.plugin = plugin
        self.session = session
        self.config = session.config
        self.items = {item.nodeid: item for item in session.items}
        self.runs = 0
        terminal = self.terminal()
        self.showfspath = terminal is not None and terminal.showfspath
        # pytest flushes its terminal after each test's letter: through the
        # pipe to runner, each flush wakes runner up. Held, the output goes
        # out when the zygote has nothing more to replay for now.
        self.held = None
        if terminal is not None and hasattr(terminal, "_tw"):
            self.held = _Held(terminal._tw._file)
            terminal._tw._file = self.held

    def terminal(self):
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def release_output(self):
        """Writes what pytest's terminal held: the zygote is about to wait."""
        if self.held is not None:
            self.held.release()

    def forked(self):
        """In a worker just forked: what the zygote held is the zygote's to
        write; the worker's terminal writes straight out (its own output
        rules apply, output.py)."""
        terminal = self.terminal()
        if self.held is not None and terminal is not None and terminal._tw._file is self.held:
            terminal._tw._file = self.held.file
        self.held = None

    def stop_holding(self):
        """pytest's session ends: its terminal writes straight out again."""
        terminal = self.terminal()
        if self.held is not None:
            self.held.release()
            if terminal is not None and terminal._tw._file is self.held:
                terminal._tw._file = self.held.file
            self.held = None

    def start_run(self, message):
        """A run starts: for the second and later of a session, the
        terminal reporter starts afresh."""
        self.runs += 1
        self.plugin.notes = []
        terminal = self.terminal()
        if terminal is not None:
            # With more than one worker, tests of many files finish
            # interleaved: progress without the file names, as under xdist.
            terminal.showfspath = self.showfspath and message.get("workers", 1) <= 1
        if self.runs == 1:
            return
        session = self.session
        session.testsfailed = 0
        session.shouldfail = False
        session.shouldstop = False
        session.testscollected = message.get("tests", 0)
        terminal = self.terminal()
        if terminal is None:
            return
        from _pytest import timing

        terminal.stats = {}
        terminal._progress_nodeids_reported = set()
        terminal.currentfspath = None
        terminal._session_start = timing.Instant()
        terminal.ensure_newline()
        count = message.get("tests", 0)
        terminal.write_sep("=", f"run {self.runs}: {count} test{'s' if count != 1 else ''}", bold=True)

    def test_finished(self, message):
        """One test's reports, in the order its phases ran."""
        hook = self.config.hook
        nodeid = message["id"]
        item = self.items.get(nodeid)
        location = item.location if item is not None else (nodeid.split("::")[0], None, nodeid)
        hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        for data in message["reports"]:
            if isinstance(data.get("longrepr"), list):
                # A skip's (path, line, reason), a list once through JSON.
                data["longrepr"] = tuple(data["longrepr"])
            captured = data.pop("runner_captured", False)
            report = hook.pytest_report_from_serializable(config=self.config, data=data)
            if report is None:
                continue
            _verbatim_subtest_values(report)
            if captured:
                # pytest's own terminal wrote this report into the test's
                # capture, where nobody saw it: the same here.
                with self._terminal_to_nowhere():
                    hook.pytest_runtest_logreport(report=report)
            else:
                hook.pytest_runtest_logreport(report=report)
        lost = message.get("lost")
        if lost is not None:
            hook.pytest_runtest_logreport(report=_lost_report(nodeid, location, item, lost))
        hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)

    def deselected(self, message):
        """Tests the scheduler chose not to run: pytest counts them as it
        counts those ``-k`` and ``-m`` deselect."""
        items = [self.items[nodeid] for nodeid in message["ids"] if nodeid in self.items]
        if items:
            self.config.hook.pytest_deselected(items=items)

    @contextlib.contextmanager
    def _terminal_to_nowhere(self):
        writer = getattr(self.terminal(), "_tw", None)
        kept = getattr(writer, "_file", None)
        if kept is None:
            yield
            return
        writer._file = io.StringIO()
        try:
            yield
        finally:
            writer._file = kept

    def warning(self, message):
        """A warning a test raised in its worker."""
        self.config.hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": _unserialize_warning(message["warning"]),
                "when": message.get("when", "runtest"),
                "nodeid": message.get("nodeid", ""),
                "location": None,
            }
        )

    def end_run(self, message):
        """The end of a run that is not the session's last: pytest's summary
        as its terminal reporter writes it at the end of a session. The
        session's last run ends with pytest's session itself."""
        self.take_end(message)
        terminal = self.terminal()
        if terminal is None:
            return
        exitstatus = message.get("exit_code", 0)
        terminal._tw.line("")
        self.config.hook.pytest_terminal_summary(terminalreporter=terminal, exitstatus=exitstatus, config=self.config)
        if self.session.shouldfail:
            terminal.write_sep("!", str(self.session.shouldfail), red=True)
        elif self.session.shouldstop:
            terminal.write_sep("!", str(self.session.shouldstop), red=True)
        terminal.summary_stats()
        self.release_output()

    def take_end(self, message):
        """What the host says at a run's end: notes for the summary, and why
        runner stopped the run early, if it did."""
        self.plugin.notes = message.get("notes") or []
        self.plugin.stop = message.get("stopped")
        self.plugin.untrusted = bool(message.get("untrusted"))

    def raise_stop(self, message):
        """A test stopped pytest's session in its worker (pytest.exit, a
        KeyboardInterrupt): the zygote's session stops the same way."""
        stop = message.get("session_stop")
        if stop is None:
            return
        reason = stop["reason"]
        prefix = "_pytest.outcomes.Exit: "
        if reason.startswith(prefix):
            import pytest

            raise pytest.exit.Exception(reason[len(prefix) :], stop.get("exit_code"))
        interrupt = KeyboardInterrupt()
        interrupt.runner_detail = [
            line for line in stop.get("detail", "").splitlines() if line and not line.startswith("(to show a full")
        ]
        raise interrupt

    def silence(self):
        """The session ends after runs that were each reported: pytest's own
        end of session has nothing more to say."""
        terminal = self.terminal()
        if terminal is not None:
            self.config.pluginmanager.unregister(terminal)


class _Held:
    """A file whose writes are held until ``release``: pytest's ``flush``
    after each test does not reach the pipe."""

    def __init__(self, file):
        self.file = file
        self.parts = []

    def write(self, text):
        self.parts.append(text)
        return len(text)

    def flush(self):
        pass

    def release(self):
        if self.parts:
            self.file.write("".join(self.parts))
            self.parts.clear()
        self.file.flush()

    def __getattr__(self, name):
        return getattr(self.file, name)


def _verbatim_subtest_values(report):
    """A subtest's keyword values cross as their reprs, and pytest's
    deserializer takes the repr of that text again (`i='0'`): undo the
    second one, so they show as in one process (`i=0`)."""
    context = getattr(report, "context", None)
    kwargs = getattr(context, "kwargs", None)
    if not isinstance(kwargs, dict):
        return
    once = {}
    for key, value in kwargs.items():
        try:
            unquoted = ast.literal_eval(value) if isinstance(value, str) else value
        except (ValueError, SyntaxError):  # cut short by saferepr: as it is
            unquoted = value
        once[key] = unquoted if isinstance(unquoted, str) else value
    object.__setattr__(context, "kwargs", once)


def _lost_report(nodeid, location, item, lost):
    """The report for a test whose worker hung or crashed."""
    keywords = {} if item is None else dict.fromkeys(item.keywords, 1)
    path, line, _ = location
    crash = ReprFileLocation(path, (line or 0) + 1, lost.get("message", ""))
    report = TestReport(
        nodeid=nodeid,
        location=location,
        keywords=keywords,
        outcome="failed",
        longrepr=LostRepr(lost["longrepr"], crash),
        when="call",
        duration=lost.get("duration", 0.0),
    )
    report.sections = [tuple(section) for section in lost.get("sections", [])]
    report.runner_lost = lost["outcome"]
    return report


class LostRepr:
    """runner's account of a lost test, as a longrepr: its text, and the
    one-line message pytest's short summary and junitxml take from a
    crash location."""

    def __init__(self, text, reprcrash):
        self.text = text
        self.reprcrash = reprcrash

    def toterminal(self, writer):
        for line in self.text.rstrip("\n").split("\n"):
            writer.line(line)

    def __str__(self):
        return self.text


def serialize_warning(warning_message):
    """What a worker sends of a warning: enough to rebuild it in the zygote
    (as xdist's workers do)."""
    category = warning_message.category
    return {
        "message": str(warning_message.message),
        "category_module": category.__module__,
        "category_name": category.__qualname__,
        "filename": warning_message.filename,
        "lineno": warning_message.lineno,
        "line": warning_message.line,
    }


def _unserialize_warning(data):
    category = UserWarning
    try:
        module = importlib.import_module(data["category_module"])
        found = getattr(module, data["category_name"], None)
        if isinstance(found, type) and issubclass(found, Warning):
            category = found
    except Exception:  # a category of a module the zygote can't import
        pass
    try:
        message = category(data["message"])
    except Exception:  # a category whose constructor wants more
        message = UserWarning(data["message"])
    return warnings.WarningMessage(
        message=message,
        category=category,
        filename=data.get("filename") or os.devnull,
        lineno=data.get("lineno") or 0,
        line=data.get("line"),
    )
