"""Compatibility with pytest-xdist: what code written for xdist reads.

The zygote registers this module as a plugin when xdist is absent, for its
``worker_id`` and ``testrun_uid`` fixtures; each worker presents itself as
an xdist worker with ``as_xdist_worker``.
"""

import os
import sys

import pytest


def as_xdist_worker(config, worker_id, worker_count):
    """xdist's environment variables, and the ``config.workerinput`` that
    xdist's fixtures and pytest's cacheprovider read in a worker."""
    os.environ["PYTEST_XDIST_WORKER"] = worker_id
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(worker_count)
    config.workerinput = {
        "workerid": worker_id,
        "workercount": worker_count,
        "testrunuid": os.environ.get("RUNNER_RUN_ID", ""),
        "mainargv": list(sys.argv),
    }
    config.workeroutput = {}


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
