"""The ties of runner's processes: a worker dies with the zygote, and each
process forked without exec records which test started it."""

import json
import os
import signal

# prctl(2): the signal a process gets when its parent exits.
_PR_SET_PDEATHSIG = 1


def die_with_parent(libc, parent):
    """A worker must not outlive the zygote, which dies with runner: the
    kernel SIGKILLs it when the zygote exits, however that happens."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the zygote died before the signal was armed
        os._exit(1)


def record_forks(path):
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
