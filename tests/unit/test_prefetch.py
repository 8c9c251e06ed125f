"""The page-cache prefetch (pipeline/models/prefetch.py) against the real kernel: a file evicted with
``POSIX_FADV_DONTNEED`` is resident after :func:`prefetch`, as ``mincore(2)`` reports it."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline.memory.plan import HOST_RESERVE
from pipeline.models import prefetch as pf

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise") or not hasattr(os, "major"),
                                reason="posix_fadvise and mincore are Linux/BSD calls")

#: Larger than this machine's readahead window (8 MB on the dev VM's disk), so one whole-file hint
#: would leave most of it unread.
SIZE = 40 << 20


def resident(path: Path) -> float:
    """Fraction of ``path``'s pages in the page cache, from mincore(2) on a fresh shared mapping."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * pages)()
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(v & 1 for v in vec) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold_file(path: Path, size: int = SIZE) -> Path:
    """A file of random bytes written to disk and dropped from the page cache (skips where the file
    system keeps it: tmpfs, or an overlay that ignores DONTNEED)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    evict(path)
    if resident(path) > 0.1:
        pytest.skip(f"DONTNEED did not evict {path} ({resident(path):.0%} still cached): this file system "
                    "keeps it in memory, so a prefetch cannot be seen")
    return path


def wait_resident(path: Path, at_least: float = 0.99, timeout: float = 10.0) -> float:
    """Readahead returns once the reads are queued; mincore counts a page once its read completes."""
    deadline = time.monotonic() + timeout
    while (r := resident(path)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return r


def test_a_cold_file_is_in_the_page_cache_after_the_prefetch(tmp_path: Path) -> None:
    path = cold_file(tmp_path / "transformer.gguf")
    ahead = pf.prefetch([path], limit_bytes=None)
    assert ahead.thread is not None and ahead.files == (path,) and ahead.nbytes == SIZE
    ahead.thread.join(10)
    assert not ahead.thread.is_alive()
    assert wait_resident(path) >= 0.99, "every window of the file is hinted, not only the first"
    assert ahead.describe() == "prefetch: 1 file, 0.0 GB"


def test_every_weights_file_of_a_folder_is_read_in_the_order_given(tmp_path: Path) -> None:
    vae = cold_file(tmp_path / "diffusers" / "vae" / "diffusion_pytorch_model.safetensors", 4 << 20)
    (tmp_path / "diffusers" / "vae" / "config.json").write_text("{}")
    lora = cold_file(tmp_path / "lora.safetensors", 2 << 20)
    nested = cold_file(tmp_path / "diffusers" / "vocoder" / "sub" / "weights.bin", 1 << 20)
    ahead = pf.prefetch([lora, tmp_path / "diffusers", lora], limit_bytes=None)
    assert ahead.files == (lora, vae, nested), "folders walked, configs left out, each file once"
    assert ahead.nbytes == 7 << 20
    assert ahead.thread is not None
    ahead.thread.join(10)
    for path in ahead.files:
        assert wait_resident(path) >= 0.99, path


def test_over_the_limit_nothing_is_started(tmp_path: Path) -> None:
    path = cold_file(tmp_path / "big.safetensors")
    ahead = pf.prefetch([path], limit_bytes=SIZE - 1)
    assert ahead.thread is None and ahead.nbytes == SIZE
    assert "skipped" in ahead.describe() and "memory to spare" in ahead.describe()
    time.sleep(0.3)
    assert resident(path) < 0.1, "no read was issued"
    at_limit = pf.prefetch([path], limit_bytes=SIZE)  # exactly fits: read
    assert at_limit.thread is not None
    at_limit.thread.join(10)
    assert wait_resident(path) >= 0.99


def test_a_stopped_prefetch_asks_for_no_more_reads(tmp_path: Path) -> None:
    path = cold_file(tmp_path / "vae.safetensors")
    stop = threading.Event()
    stop.set()  # a cancelled render
    ahead = pf.prefetch([path], limit_bytes=None, stop=stop)
    assert ahead.thread is not None
    ahead.thread.join(10)
    time.sleep(0.3)
    assert resident(path) < 0.1, "nothing is read once stopped"


def test_missing_and_vanished_files_are_ignored_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = cold_file(tmp_path / "gone.gguf", 1 << 20)
    kept = cold_file(tmp_path / "kept.safetensors", 4 << 20)
    listed = pf.weight_files([tmp_path / "missing.gguf", tmp_path / "no-folder", gone, kept])
    assert [f for f, _ in listed] == [gone, kept]
    gone.unlink()  # after the listing, before the reads
    pf.hint_all([f for f, _ in listed], threading.Event())  # raises nothing
    assert wait_resident(kept) >= 0.99, "the files after a failed one are still read"


def test_no_posix_fadvise_means_no_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\0" * 4096)
    monkeypatch.delattr(os, "posix_fadvise")
    ahead = pf.prefetch([path], limit_bytes=None)
    assert ahead.thread is None and ahead.files == (path,)
    assert "no posix_fadvise" in ahead.describe()


def test_spare_memory_is_available_less_the_plan_and_the_reserve() -> None:
    before = psutil.virtual_memory().available
    spare = pf.spare_memory(3 << 30)
    after = psutil.virtual_memory().available
    assert min(before, after) - (3 << 30) - HOST_RESERVE - (64 << 20) <= spare
    assert spare <= max(before, after) - (3 << 30) - HOST_RESERVE + (64 << 20)


def test_the_window_is_the_devices_readahead_cap(tmp_path: Path) -> None:
    dev = tmp_path.stat().st_dev
    assert pf._window(os.makedev(0, 4095)) == pf.DEFAULT_WINDOW, "no block device: the kernel's default"
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    queue = next((q for q in (node / "queue", node.resolve().parent / "queue") if q.is_dir()), None)
    if queue is None:
        pytest.skip(f"{tmp_path} is on no block device with a sysfs queue")
    kb = max(int((queue / n).read_text()) for n in ("read_ahead_kb", "max_sectors_kb"))
    assert pf._window(dev) == min(max(kb << 10, pf.PAGE), pf.MAX_WINDOW)


def test_the_window_is_read_for_a_disk_and_for_a_partition_of_it(tmp_path: Path) -> None:
    """sysfs as Linux lays it out: /sys/dev/block/MAJ:MIN links to the device; a partition's queue/
    is its disk's."""
    disk = tmp_path / "devices" / "pci0" / "block" / "sda"
    (disk / "queue").mkdir(parents=True)
    (disk / "sda1").mkdir()
    (tmp_path / "dev" / "block").mkdir(parents=True)
    (tmp_path / "dev" / "block" / "8:0").symlink_to(disk)
    (tmp_path / "dev" / "block" / "8:1").symlink_to(disk / "sda1")
    for ahead_kb, sectors_kb, window in ((128, 1280, 1280 << 10), (8192, 4096, 8 << 20),
                                         (1 << 20, 128, pf.MAX_WINDOW), (0, 0, pf.PAGE)):
        (disk / "queue" / "read_ahead_kb").write_text(f"{ahead_kb}\n")
        (disk / "queue" / "max_sectors_kb").write_text(f"{sectors_kb}\n")
        assert pf._window(os.makedev(8, 0), tmp_path) == window
        assert pf._window(os.makedev(8, 1), tmp_path) == window
    assert pf._window(os.makedev(8, 2), tmp_path) == pf.DEFAULT_WINDOW, "no such device"
    (disk / "queue" / "max_sectors_kb").write_text("garbage")
    assert pf._window(os.makedev(8, 0), tmp_path) == pf.DEFAULT_WINDOW
