"""How many times a file is opened, as the kernel sees it (inotify): what a test asserts
when the point is that something is *not* read again, whichever library would read it."""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

_IN_OPEN, _IN_CLOSE_NOWRITE, _IN_CLOSE_WRITE = 0x20, 0x10, 0x08
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class Opens:
    """Counts opens of one file from now on (by any process). The close events are watched
    too: inotify merges identical events that follow each other unread, and an open between
    two closes is never identical to the one before it."""

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = _IN_OPEN | _IN_CLOSE_NOWRITE | _IN_CLOSE_WRITE
        if self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.count = 0

    def __call__(self) -> int:
        """Opens seen so far."""
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return self.count
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                self.count += bool(mask & _IN_OPEN)

    def close(self) -> None:
        os.close(self._fd)
