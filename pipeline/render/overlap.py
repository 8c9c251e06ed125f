"""Work the local engine runs behind the GPU stages: segment k's encode while segment k+1 drafts.

A chained storyboard is a chain only through the draft (draft k → its last frame → draft
k+1). The encode (libx264 in a child process, see :mod:`pipeline.stages.encode`) and the
publishing of a segment need no GPU, so the local runner hands them to :class:`Behind`, one
at a time and in storyboard order, and goes on with the next segment's draft, refine and
upscale; each segment's measurements run on a second thread beside the encodes. The cache
contract is unchanged (an entry is complete when its files are); the film is assembled only
after :meth:`Behind.drain` has seen every encode through.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path


class LinkedCancel(threading.Event):
    """Set when the caller's cancel is, or when set itself: the runner abandons what it started
    behind the GPU stages (a ctrl+c, a failed draft) without touching the caller's event, which
    decides whether a job reads as cancelled."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                break
            super().wait(left)
        return self.is_set()


#: the threads behind the GPU stages: segment k's encode and publishing, in storyboard order
#: (one x264 child at a time), and the measurements nothing downstream waits for (the flicker of
#: the refined frames and of the encoded segment, the preview picture). On one lane the
#: measurements made it the render's bottleneck on a slower host: 9 s of encode plus 2-3 s of
#: them per segment against 10.5 s of GPU stages (bench/results/chain_h200_2026-12-05_run7.json).
LANES = ("encode", "analysis")

#: The CPU priority (nice value) of the work behind the GPU stages, and of the x264 child an
#: encode starts there: it must never take a core from the thread that feeds the GPU, nor from
#: the user's editor while a render runs. (It did not explain the slower steps of segments 2..N:
#: bench/results/README.md, run10, measured them 1.6-1.7x segment 1's with x264 at nice 10 too.)
BEHIND_NICE = 10


def yield_cpu(nice: int = BEHIND_NICE) -> None:
    """Lower the calling thread's CPU priority to at least ``nice`` (never raise it); the threads
    and processes it starts (a decoder's threads, the x264 child) inherit it. Linux keeps a nice
    value per thread; elsewhere the call would lower the whole process, the GPU stages with it,
    so it does nothing there."""
    if sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # a sandbox that forbids it: the work runs, only at the default priority
        pass


def _siblings(cpu: int) -> set[int]:
    """The CPUs sharing ``cpu``'s physical core (its SMT threads), from sysfs; ``{cpu}`` if unknown."""
    path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
    try:
        return cpu_list(path.read_text()) or {cpu}
    except OSError:
        return {cpu}


def cpu_list(text: str) -> set[int]:
    """The CPUs of a Linux CPU list (``"3,11"``, ``"2-3"``, ``"0-1,8-9"``); nothing it cannot read."""
    out: set[int] = set()
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def feeder_cpus() -> set[int]:
    """One physical core (all its SMT threads) kept free of the work behind the GPU stages, for
    the thread that launches the GPU's kernels; empty where the process may use fewer than 4 CPUs
    (keeping a core apart would starve the encode) or affinity is not Linux's.

    A lower nice value does not stop an x264 thread from running on the other SMT thread of the
    launching thread's core, which takes half of what the core gives it (the draft's steps are
    sensitive to what runs beside them: bench/results/README.md, runs 11-14)."""
    if sys.platform != "linux":
        return set()
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 4:
        return set()
    core = _siblings(max(allowed)) & allowed
    return core if len(allowed - core) >= 2 else set()


def lane_cpus() -> set[int]:
    """The CPUs the work behind the GPU stages runs on: the calling thread's less
    :func:`feeder_cpus` (empty: no restriction). Taken once, on the thread that makes the lanes,
    so a lane started from anywhere gets the same set."""
    feeder = feeder_cpus()
    return os.sched_getaffinity(0) - feeder if feeder else set()


def run_on(cpus: set[int]) -> None:
    """Keep the calling thread, and the threads and processes it starts, on ``cpus`` (nothing
    when empty)."""
    if not cpus or sys.platform != "linux":
        return
    try:
        os.sched_setaffinity(0, cpus)  # pid 0: the calling thread only
    except OSError:  # a sandbox that forbids it: the work runs anywhere
        pass


def enter_lane(cpus: set[int]) -> None:
    """Make the calling thread a lane behind the GPU stages: below the feeder in priority, and on
    ``cpus`` (what it starts, the x264 child, inherits both)."""
    yield_cpu()
    run_on(cpus)


class Behind:
    """A worker thread per lane (:data:`LANES`), each running its work in the order submitted;
    failures come back to the caller's thread at :meth:`check` (before each new segment) and
    :meth:`drain` (before the film). Work running behind may submit more (a published segment
    hands its analysis to the other lane)."""

    def __init__(self, cancel: LinkedCancel, *, inline: bool = False) -> None:
        self.cancel = cancel
        self.inline = inline  # run each work at submit, on the caller's thread (bench/chain.py --behind inline)
        cpus = lane_cpus()
        self._pools = {lane: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sulphur-{lane}",
                                                initializer=enter_lane, initargs=(cpus,)) for lane in LANES}
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None], lane: str = "encode") -> None:
        self.check()
        if self.inline:
            work()
            return
        with self._lock:
            self._futures.append(self._pools[lane].submit(work))

    def _submitted(self) -> list[Future[None]]:
        with self._lock:
            return list(self._futures)

    def check(self) -> None:
        """Raise the error of the first finished work that failed."""
        for f in self._submitted():
            exc = f.exception() if f.done() and not f.cancelled() else None
            if exc is not None:
                raise exc

    def drain(self) -> None:
        """Wait for every submitted work, in order of submission (work submitted while waiting
        included); raise the first failure at once, leaving the rest to :meth:`abandon`."""
        done = 0
        while done < len(futures := self._submitted()):
            futures[done].result()
            done += 1
        self._shutdown()

    def abandon(self) -> None:
        """The caller's thread is failing: cancel what runs behind, wait for it to stop (a stage
        leaves no partial entry), and drop its errors (the caller's own error is the one to report)."""
        self.cancel.set()
        for f in self._submitted():
            f.cancel()
        self._shutdown()

    def _shutdown(self) -> None:
        # In LANES order: the encode lane's last work may still hand a measurement to the
        # analysis lane, which must be open to take it.
        for pool in self._pools.values():
            pool.shutdown(wait=True)
