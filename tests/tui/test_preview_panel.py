"""The Preview panel and the preview PNGs a render writes beside its storyboard: a replay
far from its render has none, and that is not an error; a PNG that is there but broken is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sulphur_tui.app import create_app
from sulphur_tui.widgets.preview import PreviewPane

from .conftest import GPU_RECORDING, screen_text

PLACEHOLDER = "No frame yet: the preview follows the render."


async def replayed_preview(story: Path) -> tuple[str, bool, str]:
    """Replay the GPU render to its end at 120×40, show the render tab (F9): the panel's
    caption, whether its placeholder shows, and the screen's text."""
    app = create_app(story, connect_worker=False, replay=GPU_RECORDING, replay_speed=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f9")
        await app.workers.wait_for_complete()
        await pilot.pause()
        pane = app.query_one(PreviewPane)
        return (str(pane.query_one("#preview-caption").render()), pane.query_one("#preview-empty").display,
                screen_text(app))


@pytest.mark.asyncio
async def test_a_replay_without_its_previews_shows_only_the_placeholder(story: Path) -> None:
    """The recording names renders/story/previews/*.png; none is beside this storyboard."""
    shutil.rmtree(story.parent / "renders" / "story" / "previews")
    caption, empty, screen = await replayed_preview(story)
    assert caption == "" and empty
    assert PLACEHOLDER in screen and "unreadable" not in screen.lower()


@pytest.mark.asyncio
async def test_a_broken_preview_png_is_said_to_be_unreadable(story: Path) -> None:
    """storm.png (the recording's last preview) is there but is not a PNG."""
    (story.parent / "renders" / "story" / "previews" / "storm.png").write_bytes(b"not a png")
    caption, empty, screen = await replayed_preview(story)
    assert caption.startswith("Preview unreadable: cannot identify image file") and "storm.png" in caption
    assert "Preview unreadable" in screen
