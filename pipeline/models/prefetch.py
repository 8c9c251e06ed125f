"""Have the kernel read weight files into the page cache in the background, before they are loaded.

A cold first render reads its draft weights (transformer, LoRA, VAEs, vocoder, connectors: ~22 GB for
LTX-2.3) only after the text encoder's pass, so the disk sits idle while that pass computes and the
load waits on it afterwards (issue 20 goal 3). ``posix_fadvise(WILLNEED)`` starts the reads without
copying a byte into this process. Linux reads at most one readahead window per call
(max(``read_ahead_kb``, ``max_sectors_kb``) of the device, mm/readahead.c ``force_page_cache_ra``), so
a whole-file hint reads only its first megabytes: files are hinted one window at a time.

Everything here is a hint: a file that cannot be read, a platform without ``posix_fadvise`` or too
little spare memory means nothing is prefetched, never an error in the render.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.memory.plan import HOST_RESERVE

# Deferred imports: psutil — loaded when a stage asks what memory is spare, not when presets are read

#: Files that hold weights (configs and tokenizers are small and read at once anyway).
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pth")
#: Bytes per hint where the device's window cannot be read (an overlay or network file system): the
#: kernel's default readahead window, so no part of a file is skipped.
DEFAULT_WINDOW = 128 << 10
#: The smallest hint (a device that reports no window).
PAGE = 4096
#: Larger windows are hinted in pieces of this size (a read_ahead_kb set very high reads no faster).
MAX_WINDOW = 64 << 20


@dataclass(frozen=True)
class Prefetch:
    """What :func:`prefetch` found, and the thread reading it (None: nothing was started)."""

    files: tuple[Path, ...]
    nbytes: int
    limit_bytes: int | None
    thread: threading.Thread | None

    def describe(self) -> str:
        """One log line: what is read ahead, or why not."""
        n = len(self.files)
        what = f"{n} file{'' if n == 1 else 's'}, {self.nbytes / 1e9:.1f} GB"
        if self.thread is not None:
            return f"prefetch: {what}"
        if not hasattr(os, "posix_fadvise"):
            return f"prefetch: skipped, {what} (no posix_fadvise on this platform)"
        if not self.files:
            return "prefetch: nothing to read"
        return f"prefetch: skipped, {what} exceed the {max(self.limit_bytes or 0, 0) / 1e9:.1f} GB of memory to spare"


def weight_files(paths: Iterable[Path]) -> list[tuple[Path, int]]:
    """``(file, size)`` of every weights file among ``paths`` (files, or folders walked in name order),
    in the order given, each once; a path that is missing or unreadable is left out."""
    out: dict[Path, int] = {}
    for path in paths:
        try:
            found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        except OSError:
            continue
        for f in found:
            try:
                if f.suffix.lower() in WEIGHT_SUFFIXES and f not in out:
                    out[f] = f.stat().st_size
            except OSError:  # this file only: the rest of its folder is still read
                continue
    return list(out.items())


def spare_memory(host_bytes: int) -> int:
    """Bytes the page cache can keep while a stage runs: what the OS calls available now, less the
    plan's host peak (``StagePlan.host_bytes``, e.g. a text encoder on the CPU) and the reserve the
    planner keeps. Prefetching more would evict the first files before they are loaded: wasted reads."""
    import psutil

    return int(psutil.virtual_memory().available) - int(host_bytes) - HOST_RESERVE


def prefetch(paths: Iterable[Path], *, limit_bytes: int | None,
             stop: threading.Event | None = None) -> Prefetch:
    """Start a daemon thread that hints every weights file under ``paths`` into the page cache, in order.

    Nothing starts when the files' total exceeds ``limit_bytes`` (None: no limit) or the platform has
    no ``posix_fadvise``. ``stop``: once set, no further read is asked for (a cancelled or failed
    render reads no more).
    """
    files = weight_files(paths)
    nbytes = sum(size for _, size in files)
    over = limit_bytes is not None and nbytes > limit_bytes
    thread = None
    if files and not over and hasattr(os, "posix_fadvise"):
        thread = threading.Thread(target=hint_all, args=([f for f, _ in files], stop or threading.Event()),
                                  name="sulphur-prefetch", daemon=True)
        thread.start()
    return Prefetch(files=tuple(f for f, _ in files), nbytes=nbytes, limit_bytes=limit_bytes, thread=thread)


def hint_all(files: list[Path], stop: threading.Event) -> None:
    """Hint ``files`` in order until ``stop`` is set; a file that cannot be hinted is skipped."""
    for path in files:
        try:
            _hint(path, stop)
        except Exception:  # a hint only: the loader reads the file anyway, and says what is wrong with it
            continue


def _hint(path: Path, stop: threading.Event) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        window = _window(st.st_dev)
        for offset in range(0, st.st_size, window):
            if stop.is_set():
                return
            os.posix_fadvise(fd, offset, window, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _window(dev: int, sysfs: Path = Path("/sys")) -> int:
    """Bytes one WILLNEED call reads on the block device ``dev``: max(read_ahead_kb, max_sectors_kb)
    from sysfs (a partition's are its disk's); :data:`DEFAULT_WINDOW` where sysfs does not say."""
    node = sysfs / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    for queue in (node / "queue", node.resolve().parent / "queue"):
        try:
            kb = max(int((queue / name).read_text()) for name in ("read_ahead_kb", "max_sectors_kb"))
        except (OSError, ValueError):
            continue
        return min(max(kb << 10, PAGE), MAX_WINDOW)
    return DEFAULT_WINDOW
