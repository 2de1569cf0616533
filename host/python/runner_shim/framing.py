"""The wire: frames of a 4-byte big-endian length and a UTF-8 JSON object.

Never pickle: the host must be able to reject a bad frame. The host's end is
``host/src/wire.rs``; both enforce the same frame bound.
"""

import json
import os
import select
import signal
import socket
import struct

# Frames above this size are a protocol error (the host enforces the same).
MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
# What is kept of one report's longrepr or output section in a frame that
# would exceed MAX_FRAME.
_TRUNCATE_AT = 1024 * 1024
_TRUNCATED = "\n[runner: output truncated]"


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
        with signals_deferred():
            data = bytes(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def recv(self):
        """The next message, or None when the host closed the connection."""
        self.flush()
        while True:
            if len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if size > MAX_FRAME:
                    raise RuntimeError(f"runner: frame of {size} bytes from host")
                end = _HEADER.size + size
                if len(self._buf) >= end:
                    frame = bytes(self._buf[_HEADER.size : end])
                    del self._buf[:end]
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
        if len(self._buf) < _HEADER.size:
            return False
        (size,) = _HEADER.unpack_from(self._buf)
        return len(self._buf) >= _HEADER.size + size

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


class signals_deferred:
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
    for report in message.get("reports", ()):
        if len(report.get("longrepr", "")) > _TRUNCATE_AT:
            report["longrepr"] = report["longrepr"][:_TRUNCATE_AT] + _TRUNCATED
        report["sections"] = [
            (name, text[:_TRUNCATE_AT] + (_TRUNCATED if len(text) > _TRUNCATE_AT else ""))
            for name, text in report.get("sections", ())
        ]
    return message
