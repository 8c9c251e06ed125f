"""Pilot: the shot form's keyframes and retake fields (one line each) reach the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import Input

from pipeline.project.keyframes import Keyframe
from pipeline.project.storyboard import load

from .test_editing import SIZE, make

pytestmark = pytest.mark.asyncio
STILL = Path(__file__).resolve().parents[2] / "storyboards" / "stills" / "beam.png"


async def test_keyframes_and_retake_are_edited_checked_and_saved(story: Path) -> None:
    for name in ("start.png", "end.png", "late.png"):  # the form refuses stills that are not there
        shutil.copy(STILL, story.parent / name)
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        keyframes, retake = app.query_one("#keyframes", Input), app.query_one("#retake", Input)
        keyframes.value = "0=start.png, -1=end.png@0.5"
        retake.value = "5-8"
        await pilot.pause()
        seg = app.doc.storyboard.segment("dawn")
        assert seg.keyframes == (Keyframe(0, "start.png"), Keyframe(-1, "end.png", 0.5)) and seg.retake == (5, 8)
        retake.value = "5-40"  # past the shot's 17 frames: refused, the last good value stays
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").retake == (5, 8)
        assert "retake: [5, 40] must satisfy 0 <= first <= last <= 16" in str(app.query_one("#field-error").render())
        keyframes.value = "20=late.png"
        await pilot.pause()
        assert "keyframes: keyframe 1: frame 20 is outside the shot's 17 frames" in str(
            app.query_one("#field-error").render())
        retake.value = "6, 9"
        keyframes.value = "-1=end.png@0.5"
        await pilot.press("ctrl+s")
        await pilot.pause()
    seg = load(story).segment("dawn")
    assert seg.keyframes == (Keyframe(-1, "end.png", 0.5),) and seg.retake == (6, 9)
    assert 'keyframes = [{frame = -1, image = "end.png", strength = 0.5}]' in story.read_text()
