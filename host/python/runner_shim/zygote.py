"""The zygote's serve loop: after collection it waits for the host's
commands, forks workers on request and reports how each one exited."""

import contextlib
import gc
import os
import selectors
import signal

from .controller import Controller
from .processes import die_with_parent
from .worker import Worker


class Zygote:
    """Waits for the host's commands and forks workers on request."""

    def __init__(self, plugin, session, channel):
        self.plugin = plugin
        self.session = session
        self.channel = channel
        self.children = {}  # pid -> worker id
        self.controller = Controller(plugin, session)

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
                self.controller.release_output()
                sources = {key.data for key, _ in selector.select()}
                if "child" in sources:
                    os.read(wake_r, 4096)
                    self._reap()
                if "host" not in sources:
                    continue
            message = self.channel.recv()
            if message is None or message["t"] == "shutdown":
                break
            kind = message["t"]
            if kind == "test":
                self.controller.test_finished(message)
            elif kind == "deselected":
                self.controller.deselected(message)
            elif kind == "warning":
                self.controller.warning(message)
            elif kind == "run_start":
                self.controller.start_run(message)
            elif kind == "run_end":
                self.controller.end_run(message)
                self.channel.send({"t": "reported"})
            elif kind == "last_failed":
                self._record_last_failed(message)
            if message["t"] == "fork":
                pid = os.fork()
                if pid == 0:
                    die_with_parent(libc, zygote)
                    # Nothing of the zygote's own may outlive the fork
                    # unclosed: the worker would collect it and, under
                    # `filterwarnings = error`, fail on the ResourceWarning.
                    close_wakeup()
                    self.channel.abandon()
                    self.controller.forked()
                    return Worker(self.plugin, self.session, message).serve()
                self.children[pid] = message["worker"]
                self.channel.send({"t": "forked", "worker": message["worker"], "pid": pid})
        close_wakeup()
        self.controller.stop_holding()
        if message is not None and message.get("kill_workers"):
            self._kill_all()
        self._wait_all()
        self.channel.close()
        if message is not None:
            if message.get("silent"):
                self.controller.silence()
            self.controller.take_end(message)
            self.controller.raise_stop(message)
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

    def _kill_all(self):
        for pid in self.children:
            with contextlib.suppress(OSError):  # gone already
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):  # not yet its own group
                os.kill(pid, signal.SIGKILL)

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
        with contextlib.suppress(OSError):  # the host is gone: nobody to tell
            self.channel.send(message)
