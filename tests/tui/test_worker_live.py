"""The editor against a real render worker: render one shot with the tiny preset and
watch its status go queued → rendering → rendered and its flicker sparkline fill."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import Sparkline

from sulphur_tui.app import create_app
from sulphur_tui.widgets.flicker import FlickerRow
from sulphur_tui.widgets.segments import status_of

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


def _stop_worker(project: Path) -> None:
    from pipeline.worker.client import WorkerClient, WorkerNotRunning

    try:
        with WorkerClient.connect(project, start=False, timeout=5) as client:
            client.shutdown()
    except WorkerNotRunning:
        pass


async def _wait_for(pilot, predicate, seconds: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        if predicate():
            return True
    return False


async def test_render_one_shot_through_the_worker(story: Path) -> None:
    app = create_app(story, image="none")
    seen: list[str] = []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            assert app.selected == "dawn"
            seen.append(status_of(app.live.segments.get("dawn"), app.renders.get("dawn"))[1])
            await pilot.press("f6")  # render this shot
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                await pilot.pause(0.1)
                state = status_of(app.live.segments.get("dawn"), app.renders.get("dawn"))[1]
                if not seen or seen[-1] != state:
                    seen.append(state)
                if state == "failed":
                    pytest.fail(f"render failed: {app.live.segments['dawn'].error}")
                if state == "rendered" and app.query(FlickerRow):
                    break
            assert seen[:1] == ["new"] and seen[-1] == "rendered", seen
            order = [s for s in seen if s in ("queued", "rendering", "rendered")]
            assert order[0] == "queued" and "rendering" in order, seen
            assert order.index("queued") < order.index("rendering") < order.index("rendered")
            row = app.query_one(FlickerRow)
            assert row.report.segment == "dawn"
            assert len(row.query_one(Sparkline).data or []) == row.report.psnr.__len__() > 0
            assert (story.parent / "renders" / "story" / "segments" / "dawn.mp4").exists()
            # Only dawn was asked for.
            assert status_of(app.live.segments.get("beam"), app.renders.get("beam"))[1] == "new"
    finally:
        _stop_worker(story.parent)


async def test_failed_render_shows_failed(story: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory on every plan of the draft stage: the shot is marked failed and the
    user is told why. (The worker inherits the fault switch from this process.)"""
    monkeypatch.setenv("SULPHUR_FAULT_OOM", "draft:all")
    app = create_app(story, image="none")
    notes: list[str] = []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            original = app.notify

            def notify(message: str, **kw: object) -> None:
                notes.append(f"{kw.get('title', '')}: {message}")
                original(message, **kw)  # type: ignore[arg-type]

            app.notify = notify  # type: ignore[method-assign]
            await pilot.press("f6")
            state = lambda: status_of(app.live.segments.get("dawn"), app.renders.get("dawn"))[1]  # noqa: E731
            assert await _wait_for(pilot, lambda: state() == "failed", 600), state()
            assert "out of memory" in app.live.segments["dawn"].error.lower() or \
                "oom" in app.live.segments["dawn"].error.lower(), app.live.segments["dawn"].error
            assert any("dawn/draft failed" in n and "memory" in n for n in notes), notes
    finally:
        _stop_worker(story.parent)


async def test_cancel_a_render(story: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SULPHUR_FAULT_SLOW", "draft:60")
    app = create_app(story, image="none")
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f6")
            assert await _wait_for(pilot, lambda: app.live.timers["draft"].state == "running", 600)
            await pilot.press("f8")
            assert await _wait_for(pilot, lambda: not app.live.running, 60)
            assert status_of(app.live.segments.get("dawn"), app.renders.get("dawn"))[1] == "new"
            assert not (story.parent / "renders" / "story" / "segments" / "dawn.mp4").exists()
    finally:
        _stop_worker(story.parent)
