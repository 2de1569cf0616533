"""The pytest plugin: what the zygote collects and what the workers report.

In the zygote it gathers collection errors, warnings and deselections, then
takes over ``pytest_runtestloop`` to send the collected tests to the host
and serve it (zygote.py). Forked workers inherit it: there it turns each
test's reports and warnings into what the host reads.
"""

import io
import math
import os
import platform

import pytest

from . import output, xdist_compat, xdist_options
from .controller import LOST_WORDS, serialize_warning
from .framing import Channel
from .zygote import Zygote


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
        # What runner has to say about the run itself (tests that did not
        # run, leaky tests), written in pytest's summary by the zygote.
        self.notes = []
        # Why runner stopped the run, when pytest did not stop it itself.
        self.stop = None
        self.untrusted = False
        # What pytest can't see through the pipe its output goes through:
        # whether the user reads it on a terminal, and its width. Taken out
        # of the environment the tests see.
        self.terminal_color = os.environ.pop("RUNNER_COLOR", None) == "1"
        self.terminal_columns = os.environ.pop("RUNNER_COLUMNS", None)

    # --- collection (zygote) -------------------------------------------------

    def pytest_addoption(self, parser):
        parser.addini("runner_timeout", "runner: default per-test timeout in seconds", default="")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_load_initial_conftests(self, early_config, parser, args):
        yield
        xdist_options.register_missing(parser)  # once conftests could bring xdist

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_cmdline_main(self, config):
        xdist_options.take_over(config)  # before xdist's own hooks act on them
        yield

    def pytest_configure(self, config):
        self.config = config
        if not any(line.startswith("timeout") for line in config.getini("markers")):
            config.addinivalue_line("markers", "timeout(seconds): fail the test if it runs longer (runner)")
        # xdist brings its own worker_id fixture; without it, provide ours.
        if not config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(xdist_compat, "runner-xdist-compat")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        terminal = session.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None:
            return
        if self.terminal_columns and self.terminal_columns.isdigit():
            terminal._tw.fullwidth = int(self.terminal_columns)
        # As pytest's --color=auto decides for a terminal; the variables
        # pytest reads itself keep their say.
        chosen = any(name in os.environ for name in ("PY_COLORS", "NO_COLOR", "FORCE_COLOR"))
        if self.terminal_color and not chosen and session.config.option.color == "auto":
            terminal._tw.hasmarkup = True
            terminal._tw.code_highlight = session.config.option.code_highlight == "yes"

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
            record["when"] = when
            record["pytest"] = serialize_warning(warning_message)
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
                **output.describe(config),
                "xdist": xdist_options.taken(config),
            }
        )
        if interrupted:
            channel.close()
            raise session.Interrupted(interrupted)
        return Zygote(self, session, channel).serve()

    # --- the report (zygote) -------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report, config):
        lost = getattr(report, "runner_lost", None)
        if lost in LOST_WORDS:
            letter, word = LOST_WORDS[lost]
            return "failed", letter, (word, {"red": True})
        return None

    def pytest_terminal_summary(self, terminalreporter):
        if self.is_worker:
            return
        session = terminalreporter._session
        if self.stop is not None and not session.shouldfail:
            session.shouldstop = self.stop
        if self.untrusted:
            _closing_line_in_red(terminalreporter)
        if self.notes:
            terminalreporter.write_sep("=", "runner", yellow=True)
            for note in self.notes:
                terminalreporter.write_line(note)

    @pytest.hookimpl(trylast=True)
    def pytest_keyboard_interrupt(self, excinfo):
        """A KeyboardInterrupt the zygote raised for one in a worker: pytest
        shows where the worker's test was interrupted, not the zygote."""
        where = getattr(excinfo.value, "runner_detail", None)
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if where is not None and terminal is not None:
            terminal._keyboardinterrupt_memo = _Interrupted(str(excinfo.value) or "KeyboardInterrupt", where)

    # --- running (worker) ----------------------------------------------------

    def start_test(self):
        """Collects the reports and warnings of the test about to run, into
        the lists returned (until ``end_test``)."""
        self._reports = []
        self._warnings = []
        return self._reports, self._warnings

    def end_test(self):
        self._reports = self._warnings = None

    def pytest_runtest_logreport(self, report):
        if self._reports is not None:
            data = _serialize_report(self.config, report)
            if _capture_is_on(self.config):
                # Logged from inside a test (a unittest subTest's report):
                # what pytest's terminal wrote then went to the capture.
                data["pytest"]["runner_captured"] = True
            self._reports.append(data)


def _capture_is_on(config):
    capture = config.pluginmanager.get_plugin("capturemanager")
    state = getattr(getattr(capture, "_global_capturing", None), "_state", None)
    return state == "started"


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


def _markers(item):
    return sorted({mark.name for mark in item.iter_markers()})


def _mark_value(item, name, keyword):
    """The closest ``name`` marker's first argument, or its ``keyword``."""
    mark = item.get_closest_marker(name)
    if mark is None:
        return None
    return mark.args[0] if mark.args else mark.kwargs.get(keyword)


def _group(item):
    name = _mark_value(item, "xdist_group", "name")
    return None if name is None else str(name)


def _timeout(item):
    """Seconds from ``@pytest.mark.timeout(N)`` (pytest-timeout's marker)."""
    value = _mark_value(item, "timeout", "timeout")
    return None if value is None else _float_or_none(value)


def _float_or_none(value):
    """A finite number of seconds, or None: JSON has no inf or NaN, and the
    host reads no limit where there is none."""
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


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
    # All of it, for the zygote's pytest to replay.
    data["pytest"] = config.hook.pytest_report_to_serializable(config=config, report=report)
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


class _Interrupted:
    """What pytest's terminal reporter shows of a KeyboardInterrupt: its
    title and where it was raised (the lines under it). It is its own
    ``reprcrash``."""

    def __init__(self, message, lines):
        self.message = message
        self.lines = lines
        self.reprcrash = self

    def toterminal(self, writer):
        for line in self.lines:
            writer.line(line)


def _closing_line_in_red(terminalreporter):
    """Whatever passed, the closing line of a run that can't be trusted is
    never green."""
    build = terminalreporter.build_summary_stats_line

    def in_red():
        parts, _ = build()
        return [(text, {"red": True, "bold": True}) for text, _ in parts], "red"

    terminalreporter.build_summary_stats_line = in_red
