"""Opening files a user named, without ever blocking on one that is not a file.

A storyboard, an anchor image or a clip to extend is a path the user (or a hostile
submit) chose. ``open()`` on a FIFO blocks until someone writes to it, ``/dev/zero``
never ends and a directory fails with a bare errno: each is refused here, in one line,
before a byte is read. The check is race-free: the file is opened with ``O_NONBLOCK``
(which never waits on a FIFO) and the *open descriptor* is checked with ``fstat``, so a
path swapped for a FIFO between a check and the open cannot slip through.

Torch-free; the worker, the CLI and the storyboard loader share it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

#: Seconds to wait for another writer's lock before writing anyway (a stuck holder must not stall a render).
LOCK_WAIT = 10.0


class NotAFile(OSError):
    """A path that exists but is not a regular file (FIFO, device, socket, directory)."""


def kind_of(mode: int) -> str:
    """Human name of a file type, for the one-line refusal."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """``stat`` a path and refuse anything but a regular file; never opens it.

    Raises ``FileNotFoundError`` (or another ``OSError``) as ``os.stat`` does and
    :class:`NotAFile` for a special file.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAFile(f"{path}: is {kind_of(st.st_mode)}, not a regular file")
    return st


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of a regular file, opened without blocking; the caller closes it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(f"{path}: is {kind_of(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of a regular file; :class:`NotAFile` for anything else, ``ValueError`` past ``limit``."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes")
    return data


def describe_os_error(path: str | os.PathLike[str] | None, exc: OSError) -> str:
    """One line for an ``OSError`` about ``path``: the reason in words, never a bare errno.

    ``path`` may be ``exc.filename``, which is ``None`` (or ``""``) when the error names no
    file: then the reason alone, not ``None: …`` or ``.: …``.
    """
    if isinstance(exc, NotAFile):
        return str(exc)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{Path(path)}: {reason}" if path else reason


# ------------------------------------------------------------------ writing a user's file


def real_target(path: str | os.PathLike[str]) -> Path:
    """The file a write must replace: a symlink's target, never the link itself."""
    return Path(os.path.realpath(path))


@contextmanager
def storyboard_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the storyboard's advisory write lock (best effort: no lock where none can be made)."""
    target = real_target(path)
    try:
        # The folder itself is the lock (flock works on a directory descriptor): no lock
        # file to create, and the folder is what the atomic rename writes to anyway.
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield  # no folder to lock: the write will say why
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break  # write unlocked rather than hang behind a stuck holder
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse (``PermissionError``) to replace a file its owner made read-only.

    A rename needs only the folder's write bit, so a 0444 storyboard would be silently
    replaced; a user who set 0444 meant "do not change this".
    """
    target = real_target(path)
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return
    # The write bits, not os.access: root may write anything, but 0444 still says "keep".
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(target, os.W_OK):
        raise PermissionError(13, "the file is read-only", str(target))



def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (the folder's entry is data too)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename still happened
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a lock or partial file's owner); never signals."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

__all__ = ["LOCK_WAIT", "NotAFile", "check_writable", "real_target", "storyboard_lock", "check_regular", "describe_os_error", "file_digest", "file_version", "kind_of", "open_regular", "read_regular", "remembered"]

_T = TypeVar("_T")

#: (reader, path as named) -> (file_version, what the reader said). One slot per file and
#: reader, so it is bounded by the files asked about: a new version replaces the old one,
#: which can never be asked for again (a file's ctime does not go back).
_REMEMBERED: dict[tuple[Callable[[Path], Any], str], tuple[tuple[str, int, int, int, int], Any]] = {}


def file_version(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int]:
    """(path, size, mtime, ctime, inode): a key that moves whenever the file's bytes may have.
    ctime too: a copy that keeps the mtime (``cp -p``, an edit then ``touch -r``) still moves it."""
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def remembered(path: Path, read: Callable[[Path], _T], st: os.stat_result | None = None) -> _T:
    """``read(path)``, read again only when the file is another :func:`file_version` than last
    time: digests, headers and records are asked for far more often than files change.

    ``st``: the caller's ``os.stat(path)`` when it has one (else stat'ed here; ``OSError`` as
    ``os.stat``). ``read`` is part of the key, so it must be a module-level function;
    the path as named is part of it too, since a reader's answer may name it."""
    version = file_version(path, path.stat() if st is None else st)
    slot = _REMEMBERED.get((read, str(path)))
    if slot is None or slot[0] != version:
        slot = _REMEMBERED[read, str(path)] = (version, read(path))
    return slot[1]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (LoRAs, stills, sound tracks in cache keys), remembered per
    :func:`file_version`: keys are asked for often."""
    return remembered(path, _sha256)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
