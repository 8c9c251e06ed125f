"""Files a render publishes outside the cache (previews, segment copies, the film), safely.

Two renders of one storyboard — two terminals, or a CLI render beside the worker —
used to break each other 11 times in 12 (``FileNotFoundError: previews/dawn.tmp.png``):
every temporary had a fixed name. Here:

- every temporary is unique (``.<name>.<pid>.<random>.partial<ext>``, the extension
  kept so PIL and the muxer still know the format) and removed when its write fails;
- the file is fsynced before the rename and the folder after it, so a power loss leaves
  the old file or the new one, never a 0-byte one;
- a write that runs out of disk (``ENOSPC``) becomes a one-line :class:`RenderError`
  naming the file (kind ``disk_full``), with the partial file gone;
- :class:`OutputLock` is an ``flock`` per output folder (``renders/<stem>/.lock``) held
  for the whole render: a second render of the same storyboard is told in one line
  that one is running (PID included) instead of racing it. It also holds the project's
  ``.sulphur/cache.lock`` shared, which a prune takes exclusively: a render that starts
  while a prune runs waits for it, and a prune never deletes entries under a render.
"""

from __future__ import annotations

import errno
import fcntl
import filecmp
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.project.files import fsync_dir, pid_alive
from pipeline.project.layout import cache_lock, folder_problem
from pipeline.render.errors import RenderError
from pipeline.render.usage import open_cache_lock
from pipeline.stages.base import Cancelled
from pipeline.wire import protocol
from pipeline.wire.framing import lock_pid

if TYPE_CHECKING:
    from pipeline.project.storyboard import Storyboard


def unique_tmp(dst: Path) -> Path:
    """A temporary beside ``dst`` that no other process or thread will pick."""
    return dst.with_name(f".{dst.stem}.{os.getpid()}.{secrets.token_hex(4)}.partial{dst.suffix}")



def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_error(path: Path, exc: OSError, what: str) -> RenderError:
    """One line for a failed write of ``path``: ``disk_full`` for ENOSPC/EDQUOT."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    reason = "no space left on the disk" if full else (exc.strerror or str(exc))
    return RenderError("disk_full" if full else "write_failed",
                       f"{what} not written: {path}: {reason}; finished stages are kept in the cache")


@contextmanager
def publishing(dst: Path, what: str) -> Iterator[Path]:
    """Yield a unique temporary for ``dst``; on success it is fsynced and renamed over ``dst``.

    On any failure the temporary is removed; an ``OSError`` comes out as :func:`disk_error`.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(dst)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(dst, exc, what) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a unique temporary (see :func:`publishing`), unless ``dst``
    already holds the same bytes: a cached segment keeps its file and its mtime (which editors
    and file managers show as when it was rendered)."""
    if dst.exists() and filecmp.cmp(src, dst, shallow=False):
        return
    with publishing(dst, "segment copy") as tmp:
        shutil.copyfile(src, tmp)


def sweep_temporaries(folder: Path) -> int:
    """Remove ``*.partial*`` files left in ``folder`` (and below) by processes that are gone."""
    n = 0
    if not folder.is_dir():
        return 0
    for p in folder.rglob(".*.partial*"):
        parts = p.name.split(".")
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0
        if pid_alive(pid):
            continue
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n

    return True


class RenderBusy(RenderError):
    """Another process renders into the same output folder."""


class OutputLock:
    """``flock`` on ``<render dir>/.lock`` for the length of a render (dropped by the kernel on
    any exit), and the project's cache lock shared beside it (see the module docstring).

    ``waiting(message)`` is told once when a prune holds the cache lock (the render waits for
    it, polling ``cancel``); the output folder is taken only after that wait, so a waiting
    render does not read as a running one.
    """

    def __init__(self, folder: Path, storyboard: Path, *, project: Path | None = None,
                 waiting: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> None:
        self.path = Path(folder) / ".lock"
        self.storyboard = storyboard
        self.project = Path(project) if project is not None else Path(storyboard).parent  # Storyboard.folder
        self.waiting, self.cancel = waiting, cancel
        self._fd: int | None = None
        self._cache_fd: int | None = None

    @classmethod
    def for_storyboard(cls, sb: Storyboard, emit: Callable[[protocol.Event], None],
                       cancel: threading.Event | None) -> OutputLock:
        """The lock a render of ``sb`` takes: its render folder and its project's cache, a wait
        for a prune told as a Log event."""
        return cls(sb.render_dir(), sb.path, project=sb.folder, cancel=cancel,
                   waiting=lambda why: emit(protocol.Log(message=why)))

    def __enter__(self) -> OutputLock:
        self._cache_fd = _share_cache(self.project, self.waiting, self.cancel)
        try:
            self._fd = self._take_output_folder()
        except BaseException:
            self.release_cache()
            raise
        return self

    def _take_output_folder(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR):  # a link or a folder planted there
                raise self._not_a_lock(exc) from None
            raise  # a read-only or full disk: the caller says so in words
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_pid(fd)
            os.close(fd)
            who = f" (PID {holder})" if holder and holder > 0 else ""
            raise RenderBusy("busy", f"{self.storyboard.name}: another render of it is running{who}; "
                                     "wait for it to finish or cancel it") from None
        except OSError as exc:
            os.close(fd)
            raise self._not_a_lock(exc) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as exc:  # a FIFO or a device put there: not a lock we can use
            os.close(fd)
            raise self._not_a_lock(exc) from None
        return fd

    def _not_a_lock(self, exc: OSError) -> OSError | RenderError:
        """What a lock file that is not one (a FIFO, a device, a link) becomes: one line naming
        it. Any other failure stays the OSError the caller words."""
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.EINVAL, errno.ESPIPE, errno.ENOTSUP, errno.ENOLCK):
            return exc
        return RenderError("lock", f"{self.path}: not usable as the render lock ({exc.strerror or exc}); "
                                   "remove it and render again")

    def release_cache(self) -> None:
        """Drop the shared cache lock: the render is done with the cache (it prunes next)."""
        if self._cache_fd is not None:
            os.close(self._cache_fd)
            self._cache_fd = None

    def __exit__(self, *exc: object) -> None:
        self.release_cache()
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _share_cache(project_dir: Path, waiting: Callable[[str], None] | None,
                 cancel: threading.Event | None) -> int | None:
    """The project's cache lock, shared: waits while a prune holds it (saying so once, and
    giving up with :class:`Cancelled` when ``cancel`` is set). None where it cannot be taken
    (a read-only project, a folder or a link planted there): the render goes on without it."""
    try:
        cache_lock(project_dir).parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    fd = open_cache_lock(project_dir)
    if fd is None:
        return None
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        except OSError:
            os.close(fd)
            return None
        try:  # a prune holds it: wait, saying so once (what ``waiting`` raises is the caller's)
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while waiting for a cache prune")
            if not told and waiting is not None:
                waiting("waiting for a cache prune of this project to finish (sulphur cache --prune)")
            told = True
            time.sleep(0.1)
        except BaseException:
            os.close(fd)
            raise


__all__ = ["OutputLock", "RenderBusy", "atomic_copy", "disk_error", "fsync_dir", "publishing", "refuse_blocked_folders",
           "sweep_temporaries", "unique_tmp"]


def refuse_blocked_folders(storyboard_path: str | os.PathLike[str]) -> None:
    """A file where ``.sulphur/`` or ``renders/<stem>/`` goes, named before any stage or actor
    starts (it failed inside the draft as "File exists")."""
    problem = folder_problem(storyboard_path)
    if problem:
        raise RenderError("os_error", problem)
