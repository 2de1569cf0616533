"""pytest plugin used by compare_outcomes.py to record what plain pytest reports.

Load it with ``-p outcome_recorder`` (with this directory on PYTHONPATH) and set
OUTCOME_RECORDER_OUT to a file path. For every test report it records the
category that pytest's own ``pytest_report_teststatus`` hook gives (the same
string runner writes into the ``phases`` of its run log), and at the end it
writes one JSON object:

    {"results": {nodeid: [[when, category], ...]}, "exitstatus": N}
"""

import json
import os

import pytest

_config = None
_results = {}


def pytest_configure(config):
    global _config
    _config = config


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    category = _config.hook.pytest_report_teststatus(report=report, config=_config)[0]
    _results.setdefault(report.nodeid, []).append([report.when, category])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("OUTCOME_RECORDER_OUT")
    if not path or hasattr(session.config, "workerinput"):
        return  # under pytest-xdist, the controller has every report
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"results": _results, "exitstatus": int(exitstatus)}, f)
