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


async def test_render_one_shot_through_the_worker(story: Path) -> None:
    from pipeline.client import WorkerClient, WorkerNotRunning

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
        try:
            with WorkerClient.connect(story.parent, start=False, timeout=5) as client:
                client.shutdown()
        except WorkerNotRunning:
            pass
