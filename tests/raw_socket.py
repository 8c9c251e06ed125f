"""A bare line socket to the worker, for sending what no well-behaved client would."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


@contextmanager
def full_backlog(path: Path) -> Iterator[tuple[socket.socket, int]]:
    """A listener at ``path`` whose connection queue is full (a non-blocking connect says
    EAGAIN), as a busy worker's is; yields it and how many connections fill it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(path))
            except BlockingIOError:
                s.close()
                break
            fillers.append(s)
        else:
            pytest.skip("the kernel never reported a full backlog")
        yield listener, len(fillers)
    finally:
        for s in fillers:
            s.close()
        listener.close()
