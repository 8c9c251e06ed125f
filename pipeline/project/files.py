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

import os
import stat
from pathlib import Path


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


def describe_os_error(path: str | os.PathLike[str], exc: OSError) -> str:
    """One line for an ``OSError`` about ``path``: the reason in words, never a bare errno."""
    if isinstance(exc, NotAFile):
        return str(exc)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{Path(path)}: {reason}"


__all__ = ["NotAFile", "check_regular", "describe_os_error", "kind_of", "open_regular", "read_regular"]
