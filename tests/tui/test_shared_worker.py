"""One render worker serves the folder, and each storyboard in it may be open in an editor.
Against a real worker (tiny preset, CPU): an editor on other.toml, opened while the worker
renders story.toml (the same shot ids), shows none of that job as its own, says the worker is
busy with story.toml, and F8 there does not cancel story.toml's render."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.wire.protocol import JobCancelled, StageStarted
from sulphur_tui.app import create_app
from sulphur_tui.widgets.segments import status_of

from .conftest import screen_text
from .test_reattach import _follow_until
from .test_worker_live import _stop_worker, _wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_an_editor_on_another_storyboard_neither_shows_nor_cancels_the_job(
        story: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.worker.client import WorkerClient

    project = story.parent
    other = project / "other.toml"
    other.write_text(story.read_text())
    try:
        monkeypatch.setenv("SULPHUR_FAULT_SLOW", "refine:120")  # the worker inherits it: the job stays running
        with WorkerClient.connect(project, start=True, timeout=120) as client:
            job_id = client.submit(story, mode="segments", segments=["dawn"])
        _follow_until(project, lambda ev: isinstance(ev, StageStarted) and ev.stage == "refine", 600)

        app = create_app(other, image="none")
        notes: list[str] = []
        async with app.run_test(size=(120, 40)) as pilot:
            app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
            assert await _wait_for(pilot, lambda: job_id in app.live.elsewhere, 30), app.live.jobs
            await pilot.pause(0.5)
            state = status_of(app.live.segments.get("dawn"), app.renders.get("dawn"))[1]
            assert state == "new", state
            assert app.live.timer_segment == "" and not app.live.running
            assert "the worker is rendering story.toml" in screen_text(app).splitlines()[-2]
            await pilot.press("f8")
            await pilot.pause(1.0)
            assert any("No render of this storyboard is running" in n and "story.toml" in n for n in notes), notes
        with WorkerClient.connect(project, start=False, timeout=10) as client:
            jobs = {j.job_id: j.state for j in client.status().jobs}
        assert jobs[job_id] == "running", jobs  # F8 in other.toml's editor left story.toml's job alone
        with WorkerClient.connect(project, start=False, timeout=10) as client:
            client.cancel(job_id)
        _follow_until(project, lambda ev: isinstance(ev, JobCancelled), 60)
    finally:
        os.environ.pop("SULPHUR_FAULT_SLOW", None)
        _stop_worker(project)


async def test_a_job_that_fails_before_the_editor_attaches_does_not_stay_queued(story: Path) -> None:
    """F5 with no worker running starts one; a job that fails at once (an unknown preset) ended
    before the editor attached to that new worker. Its shots stayed "◷ queued" for good, and
    nothing said why: the snapshot the editor got said "failed", and the editor did not read it."""
    story.write_text(story.read_text().replace('preset = "tiny"', 'preset = "tny"'))
    assert 'preset = "tny"' in story.read_text()
    app = create_app(story, image="none")
    notes: list[str] = []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
            await pilot.press("f5")
            assert await _wait_for(pilot, lambda: any("unknown model preset 'tny'" in n for n in notes), 60), notes
            await pilot.pause(0.5)
            rows = {sid: status_of(app.live.segments.get(sid), app.renders.get(sid))[1]
                    for sid in ("dawn", "beam", "storm")}
            assert rows == {"dawn": "new", "beam": "new", "storm": "new"}, rows
            assert "unknown model preset 'tny'" in screen_text(app).splitlines()[-2]
        app = create_app(story, image="none", connect_worker=False)  # reopened later: it still says so
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert "unknown model preset 'tny'" in screen_text(app).splitlines()[-2]
    finally:
        _stop_worker(story.parent)
