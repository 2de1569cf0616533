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

from . import xdist_compat, xdist_options
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
                "xdist": xdist_options.taken(config),
            }
        )
        if interrupted:
            channel.close()
            raise session.Interrupted(interrupted)
        return Zygote(self, session, channel).serve()

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
            self._reports.append(_serialize_report(self.config, report))


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
