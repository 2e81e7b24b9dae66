"""The wire between the plugin and its model host: messages on a Unix socket pair, no HTTP, no pickling.

A message is a JSON header and binary parts: the input instances' bytes one way, the results' Part 10 bytes the
other. On the socket: the header's length (4 bytes, big-endian), the header (UTF-8 JSON, with ``parts``: the
sizes of the parts), then the parts' bytes one after the other. The kernel copies the bytes once each way; the
plugin's thread waits in ``select`` with the GIL released.

Plugin to host: ``run`` (job, model, the instances as parts), ``cancel`` (job), ``stop``.
Host to plugin: ``ready`` (pid, device, versions, each model's status), ``progress`` (job, percent, text),
``done`` (job, stage timings, the result objects' UIDs, their bytes as parts), ``failed`` (job, kind, message).

This module is shared by both sides, so it imports nothing that talks to Orthanc.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")
_LENGTH = struct.Struct("!I")
MAX_HEADER_BYTES = 64 * 2**20

# what the host sends back for a failed run: a cancel request, and bad input that no retry will mend
CANCELED_KIND = "CancelRequested"


class ChannelClosed(ConnectionError):
    """The other end closed the channel (the host or the plugin is gone)."""


class CancelRequested(Exception):
    """A cancel request arrived for the workitem being run."""


@dataclass
class Message:
    header: dict[str, Any]
    parts: list[bytes] = field(default_factory=list)

    @property
    def op(self) -> str:
        return str(self.header.get("op", ""))


class Channel:
    """One end of the socket pair. ``send`` may be called from several threads; ``receive`` from one at a time."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(True)
        self._send_lock = threading.Lock()

    def send(self, header: dict[str, Any], parts: Sequence[bytes | bytearray | memoryview] = ()) -> None:
        head = json.dumps({**header, "parts": [len(part) for part in parts]}).encode()
        try:
            with self._send_lock:
                self.sock.sendall(_LENGTH.pack(len(head)) + head)
                for part in parts:
                    self.sock.sendall(part)
        except TimeoutError:  # a socket timeout the caller set: the other end stopped reading
            raise
        except OSError as error:  # EPIPE, ECONNRESET: the other end is gone
            raise ChannelClosed(f"the channel is closed: {error}") from error

    def ready(self, timeout: float) -> bool:
        """Whether a message (or the end of the channel) can be read within ``timeout`` seconds."""
        readable, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        return bool(readable)

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next message; None when none began within ``timeout`` seconds (None: wait as long as it takes).
        Once a message has begun it is read to its end. ChannelClosed at the end of the channel."""
        begun = self.receive_header(timeout)
        if begun is None:
            return None
        header, sizes = begun
        return Message(header, [self.read(size) for size in sizes])

    def receive_header(self, timeout: float | None = None) -> tuple[dict[str, Any], list[int]] | None:
        """The next message's header and the sizes of its parts, which the caller then reads, in order, with
        :meth:`read` (so that it can use each part as it arrives); None as for :meth:`receive`."""
        if timeout is not None and not self.ready(timeout):
            return None
        (size,) = _LENGTH.unpack(self.read(_LENGTH.size))
        if size > MAX_HEADER_BYTES:
            raise ChannelClosed(f"a message header of {size} bytes: the channel is out of step")
        header = json.loads(self.read(size))
        return header, [int(n) for n in header.pop("parts", [])]

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes. One ``recv(MSG_WAITALL)`` lands them in the bytes object handed on, so an
        instance is neither zero-filled first nor copied again (``BytesIO(bytes)`` shares its buffer). When a
        socket timeout (a non-blocking socket) or a signal cuts that short, the rest is gathered and copied once."""
        if not size:
            return b""
        first = self._receive(self.sock.recv, size, socket.MSG_WAITALL)
        if len(first) == size:
            return first
        buffer = bytearray(size)
        buffer[:len(first)] = first
        view, got = memoryview(buffer), len(first)
        while got < size:
            got += self._receive(self.sock.recv_into, view[got:], size - got)
        return bytes(buffer)

    @staticmethod
    def _receive(call: Callable[..., _T], *args: Any) -> _T:
        try:
            answer = call(*args)
        except TimeoutError:  # a socket timeout the caller set: the other end stopped writing
            raise
        except OSError as error:
            raise ChannelClosed(f"the channel is closed: {error}") from error
        if not answer:  # b"" or 0 bytes: the end of the channel
            raise ChannelClosed("the other end closed the channel")
        return answer

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


_SIGNAL_HINTS = {
    signal.SIGABRT: "an abort, e.g. a failed assertion in native code or os.abort()",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGBUS: "a crash in native code",
    signal.SIGFPE: "a crash in native code",
    signal.SIGILL: "a crash in native code",
    signal.SIGKILL: "killed from outside, e.g. by the kernel's out-of-memory killer",
}


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: ``died of SIGABRT (signal 6: an abort...)`` or ``exited with code 3``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    number = -returncode
    try:
        known = signal.Signals(number)
    except ValueError:
        return f"died of signal {number}"
    hint = _SIGNAL_HINTS.get(known)
    return f"died of {known.name} (signal {number}{': ' + hint if hint else ''})"
