"""The local engine's work behind the GPU stages runs on two lanes (pipeline/render/overlap.py):
a measurement that takes its time never holds back the next segment's encode, each lane keeps
its order, work may hand more work to the other lane, and a failure on either lane reaches the
caller; it runs below the thread that feeds the GPU. Real threads and events; nothing is timed."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.render.overlap import BEHIND_NICE, Behind, LinkedCancel

WAIT = 10  # seconds: only a broken lane ever waits this long


def test_a_slow_measurement_does_not_hold_the_next_encode() -> None:
    behind = Behind(LinkedCancel(threading.Event()))
    release, encoded = threading.Event(), threading.Event()
    behind.submit(lambda: release.wait(WAIT), lane="analysis")  # a measurement still running...
    behind.submit(encoded.set)                                 # ...while the next encode starts
    assert encoded.wait(WAIT), "the encode waited for the measurement"
    release.set()
    behind.drain()


def test_each_lane_keeps_its_order_and_work_may_hand_work_to_the_other() -> None:
    behind = Behind(LinkedCancel(threading.Event()))
    order: list[str] = []

    def encode(name: str) -> None:
        order.append(f"encode {name}")
        behind.submit(lambda: order.append(f"flicker {name}"), lane="analysis")  # as a published shot does

    for name in ("one", "two", "three"):
        behind.submit(lambda name=name: encode(name))
    behind.drain()  # waits for the work the encodes submitted too
    assert [o for o in order if o.startswith("encode")] == ["encode one", "encode two", "encode three"]
    assert [o for o in order if o.startswith("flicker")] == ["flicker one", "flicker two", "flicker three"]
    assert all(order.index(f"encode {n}") < order.index(f"flicker {n}") for n in ("one", "two", "three"))


@pytest.mark.parametrize("lane", ["encode", "analysis"])
def test_a_failure_on_either_lane_reaches_the_caller(lane: str) -> None:
    behind = Behind(LinkedCancel(threading.Event()))

    def fail() -> None:
        raise OSError(f"{lane} failed")

    behind.submit(fail, lane=lane)
    with pytest.raises(OSError, match=f"{lane} failed"):
        behind.drain()
    behind.abandon()  # as the runner does when draining fails


def test_a_failure_does_not_wait_for_the_work_queued_behind_it() -> None:
    """The film is not coming: the first failure is raised at once, and what is still queued
    is cancelled by :meth:`Behind.abandon`, not run to its end first."""
    behind = Behind(LinkedCancel(threading.Event()))
    ran: list[str] = []
    go = threading.Event()

    def fail() -> None:
        go.wait(WAIT)
        raise OSError("encode failed")

    behind.submit(fail)
    behind.submit(lambda: behind.cancel.wait(WAIT) or ran.append("next encode"))
    go.set()
    with pytest.raises(OSError, match="encode failed"):
        behind.drain()
    behind.abandon()
    assert ran == []


def test_abandoning_cancels_both_lanes_and_waits_for_them() -> None:
    cancel = LinkedCancel(threading.Event())
    behind = Behind(cancel)
    started = threading.Event()
    stopped: list[str] = []

    def running(lane: str) -> None:
        started.set()
        cancel.wait(WAIT)  # what a cancelled stage does: it sees the cancel and stops
        stopped.append(lane)

    behind.submit(lambda: running("encode"))
    assert started.wait(WAIT)
    behind.submit(lambda: running("analysis"), lane="analysis")
    behind.abandon()
    assert cancel.is_set() and set(stopped) <= {"encode", "analysis"} and "encode" in stopped


@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
def test_work_behind_runs_below_the_thread_feeding_the_gpu(tmp_path: Path) -> None:
    """The work behind the GPU stages (x264 on 12 of 16 cores, the measurements) ran at the
    priority of the thread that feeds the GPU. The lanes, and the x264 child an encode starts
    there, now run below it; the caller's thread keeps its own priority."""
    from pipeline.stages.encode import encode_in_fresh_process

    np.save(tmp_path / "frames.npy", np.full((9, 64, 64, 3), 90, np.uint8))
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if caller >= BEHIND_NICE:
        pytest.skip(f"the tests already run at nice {caller}: lowering to {BEHIND_NICE} would show nothing")
    seen: dict[str, int] = {}

    def encode() -> None:
        seen["lane"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def on_frame(_: int) -> None:
            for child in psutil.Process().children():
                if "pipeline.stages.encode" in " ".join(child.cmdline()):
                    seen["x264"] = child.nice()

        encode_in_fresh_process(tmp_path / "s.mp4", tmp_path / "frames.npy", None, 48000, fps=8, size=(64, 64),
                                on_frame=on_frame)

    behind = Behind(LinkedCancel(threading.Event()))
    behind.submit(encode)
    behind.submit(lambda: seen.setdefault("analysis", os.getpriority(os.PRIO_PROCESS, threading.get_native_id())),
                  lane="analysis")
    behind.drain()
    assert seen == {"lane": BEHIND_NICE, "x264": BEHIND_NICE, "analysis": BEHIND_NICE}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
