"""A bare line socket to the worker, for sending what no well-behaved client would."""

from __future__ import annotations

from pathlib import Path

from pipeline.wire import protocol
from pipeline.wire.framing import connect_unix, socket_path


class Raw:
    """One connection to a project's worker, speaking raw newline-framed bytes."""

    def __init__(self, project: Path) -> None:
        self.sock = connect_unix(socket_path(project), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> protocol.Message:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "worker closed the connection"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return protocol.decode(line)

    def close(self) -> None:
        self.sock.close()
