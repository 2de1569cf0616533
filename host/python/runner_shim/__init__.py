"""runner's Python side: a pytest plugin plus the zygote and worker loops.

The host starts one interpreter (the zygote) with this package. The zygote
runs real pytest (``pytest.main``) with the user's arguments and the plugin
(plugin.py); after collection the plugin takes over ``pytest_runtestloop``:
it sends the collected tests to the host, then forks workers on request
(zygote.py). A forked worker inherits the imported project and the
collected items, connects back to the host and runs the items it is given
through pytest's full ``pytest_runtest_protocol``, streaming each test's
reports (worker.py). Everything crosses a unix socket as length-prefixed
JSON frames (framing.py).

The host writes these files to a private directory of the run and imports
them as the package ``_runner_shim`` by path, never through ``sys.path``:
nothing of the project can be shadowed by them. Modules import each other
relatively, so the package's name is the bootstrap's alone.
"""

import os
import sys

import pytest

from .plugin import RunnerPlugin


def main(args):
    plugin = RunnerPlugin(os.environ["RUNNER_SOCKET"])
    code = pytest.main(args, plugins=[plugin])
    if plugin.is_worker:
        # Skip atexit handlers inherited from the zygote: they belong to it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return int(code)
