"""Length-safe JSON-lines framing and Unix-socket paths, shared by the worker and its clients.

Torch-free and import-light: the TUI imports it through :mod:`pipeline.worker.client`.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from pipeline.wire.protocol import MAX_LINE_BYTES

#: How the worker's last ``Log`` to subscribers begins when it stops on purpose; a stream
#: that ends without it means the worker died.
GOODBYE = "worker stopped"

#: ``sockaddr_un.sun_path`` holds 108 bytes on Linux, terminator included.
_SUN_PATH_MAX = 107


class LineBuffer:
    """Splits a byte stream into lines without ever holding more than ``limit`` bytes of one.

    ``feed`` returns complete lines (newline stripped). A line that grows past ``limit``
    is reported once as ``None`` as soon as it does (so the peer gets its error without
    having to finish sending), and everything up to its newline is then discarded: the
    stream resynchronises at the next line.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        self._buf += data
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(self._buf[start:nl])
            start = nl + 1
            if self._discarding:
                self._discarding = False  # the tail of an oversized line: already answered
                continue
            out.append(None if len(line) > self.limit else line)
        del self._buf[:start]
        if len(self._buf) > self.limit:
            if not self._discarding:
                self._discarding = True
                out.append(None)
            self._buf.clear()
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held (useful to tell a truncated last message)."""
        return len(self._buf)


def socket_path(project_dir: Path) -> Path:
    return Path(project_dir) / ".sulphur" / "worker.sock"


class _ShortPath:
    """A path usable with bind/connect even when the real one exceeds ``sun_path``.

    Long paths go through ``/proc/self/fd/<dirfd>/<name>`` (Linux), which the kernel
    resolves like the real folder; the directory descriptor lives as long as this object.
    """

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        raw = os.fsencode(path)
        if len(raw) <= _SUN_PATH_MAX:
            self.address = str(path)
        else:
            self._fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            self.address = f"/proc/self/fd/{self._fd}/{path.name}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> str:
        return self.address

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_unix(path: Path, timeout: float | None = None) -> socket.socket:
    """A connected blocking socket; raises ``FileNotFoundError``/``ConnectionRefusedError`` if no one listens.

    A listener whose backlog is full answers ``EAGAIN`` at once (a socket with a timeout
    is non-blocking inside): that is a busy worker, not a missing one, so the connect is
    retried with a growing pause until ``timeout`` (10 s when None) has passed.
    """
    deadline = time.monotonic() + (10.0 if timeout is None else timeout)
    pause = 0.005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with _ShortPath(path) as address:
                sock.connect(address)
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() + pause > deadline:
                raise TimeoutError(f"{path}: the worker's connection queue stayed full") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        except BaseException:
            sock.close()
            raise


def private_dir(path: Path) -> Path:
    """Create ``path`` (a project's ``.sulphur``) readable by its owner only, and tighten an old one.

    It holds the journal (every prompt), the log and the cache: nobody else on the
    machine has any business reading them.
    """
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(path, 0o700)
    except OSError:
        pass  # not ours to change: leave it as the owner set it
    return path


def state_dir(project_dir: Path) -> Path:
    """``<project>/.sulphur``, created 0700."""
    return private_dir(Path(project_dir) / ".sulphur")


def bind_unix(path: Path, mode: int = 0o600) -> socket.socket:
    """A listening socket at ``path`` readable and writable by its owner only.

    The mode is set between ``bind`` and ``listen``: no client can connect before the
    permissions are final.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _ShortPath(path) as address:
            sock.bind(address)
        os.chmod(path, mode)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# ------------------------------------------------------------------ project lock


def lock_path(project_dir: Path) -> Path:
    return Path(project_dir) / ".sulphur" / "worker.lock"


class WorkerLocked(RuntimeError):
    """Another worker holds the project's lock."""

    def __init__(self, pid: int | None, path: Path) -> None:
        self.pid, self.path = pid, path
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"a worker is already running for {path.parent.parent} ({who} holds {path})")


class ProjectLock:
    """``flock`` on ``.sulphur/worker.lock`` with the holder's PID written inside.

    The kernel drops a ``flock`` when its holder dies, even by ``kill -9``, so a stale
    file never blocks a new worker; the PID is only there to tell the user who holds it.
    The file is never unlinked (unlinking a lock file races with the next locker).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # A few tries: `lock_holder` in a client takes a shared lock for a moment.
        for attempt in range(10):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 9:
                    pid = lock_pid(fd)
                    os.close(fd)
                    raise WorkerLocked(pid, self.path) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def lock_holder(project_dir: Path) -> int | None:
    """PID of the live worker holding the project's lock, or None when no worker runs."""
    path = lock_path(project_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock_pid(fd) or -1  # held, PID not written yet
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_pid(fd: int) -> int | None:
    """The PID a lock holder wrote into its lock file (open as ``fd``), or None."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
