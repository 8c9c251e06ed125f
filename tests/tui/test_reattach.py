"""Issue 21, items 6 and 7, against a real render worker (tiny preset, CPU): opening the
editor in the middle of a job shows the job as it is, and a shot that was a cache hit
keeps its file.

1. dawn is rendered alone; its mp4's mtime is noted; the worker stops.
2. A new worker (refine slowed by fault injection) renders all three shots: dawn is all
   cache hits, beam drafts, then waits in its refine.
3. Only then the editor opens. It must show dawn rendered (not queued), beam's draft
   done and its refine running, dawn's flicker row and a preview, the status line off
   "starting…"; dawn's mp4 must be the same file as after step 1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.wire.protocol import JobFinished, SegmentDone, StageStarted
from sulphur_tui.app import create_app
from sulphur_tui.widgets.flicker import FlickerRow
from sulphur_tui.widgets.segments import status_of

from .test_worker_live import _stop_worker, _wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


def _follow_until(project: Path, stop, seconds: float) -> list:  # noqa: ANN001
    """Events of the project's worker until ``stop(event)`` is true."""
    from pipeline.worker.client import WorkerClient

    seen = []
    deadline = time.monotonic() + seconds
    with WorkerClient.connect(project, start=False, timeout=10) as client:
        for ev in client.events():
            seen.append(ev)
            if stop(ev) or time.monotonic() > deadline:
                return seen
    return seen


async def test_reopening_mid_job_shows_the_job_as_it_is(story: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.worker.client import WorkerClient, stop_worker

    project = story.parent
    mp4 = project / "renders" / "story" / "segments" / "dawn.mp4"
    try:
        with WorkerClient.connect(project, start=True, timeout=120) as client:
            client.submit(story, mode="segments", segments=["dawn"])
        _follow_until(project, lambda ev: isinstance(ev, JobFinished), 600)
        assert mp4.exists()
        first = mp4.stat().st_mtime_ns
        assert stop_worker(project, timeout=120) == 0  # waits until the lock is free

        monkeypatch.setenv("SULPHUR_FAULT_SLOW", "refine:120")  # the new worker inherits it
        with WorkerClient.connect(project, start=True, timeout=120) as client:
            client.submit(story, mode="all")
        events = _follow_until(project, lambda ev: isinstance(ev, StageStarted) and ev.segment == "beam"
                               and ev.stage == "refine", 600)
        assert any(isinstance(e, SegmentDone) and e.segment == "dawn" for e in events)
        assert mp4.stat().st_mtime_ns == first, "a cache hit rewrote dawn.mp4"  # item 7

        app = create_app(story, image="none")
        async with app.run_test(size=(120, 40)) as pilot:
            state = lambda sid: status_of(app.live.segments.get(sid), app.renders.get(sid))[1]  # noqa: E731
            assert await _wait_for(pilot, lambda: app.live.timers["refine"].state == "running", 30)
            assert state("dawn") == "rendered", state("dawn")
            assert state("beam") == "rendering" and state("storm") == "queued"
            assert app.live.timer_segment == "beam" and app.live.timers["draft"].state == "done"
            assert [r.report.segment for r in app.query(FlickerRow)][:2] == ["dawn", "beam"]
            assert app.live.preview is not None and app.live.preview.segment == "dawn"
            assert "starting" not in app.worker_detail
            await pilot.press("f8")  # done looking: cancel, so the worker can stop
            assert await _wait_for(pilot, lambda: not app.live.running, 60)
    finally:
        os.environ.pop("SULPHUR_FAULT_SLOW", None)
        _stop_worker(project)
