"""Takes inside the editor, through a real render worker on the tiny preset: t, r renders
two seeds of a shot, each row shows its stage and progress while the job runs, then its
clip; picking one writes its seed into the storyboard like ``sulphur takes --pick``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList

from pipeline.project.storyboard import load
from sulphur_tui.app import create_app
from sulphur_tui.screens import TakesScreen

from .conftest import changed_lines
from .test_worker_live import _stop_worker

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


def _rows(screen: TakesScreen) -> list[str]:
    options = screen.query_one("#takes", OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def test_render_two_takes_watch_them_and_pick_one(story: Path) -> None:
    original = story.read_text()
    app = create_app(story, image="none")
    seen: list[tuple[str, ...]] = []  # distinct row texts while the job ran
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("down", "t")  # beam, whose own seed is 7
            screen = app.screen
            assert isinstance(screen, TakesScreen) and not screen.query_one("#takes").display
            screen.query_one("#take-count", Input).value = "2"
            await pilot.press("r")
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                await pilot.pause(0.1)
                rows = tuple(_rows(screen))
                if rows and (not seen or seen[-1] != rows):
                    seen.append(rows)
                job = app.live.takes.get("beam")
                if job is not None and job.state in ("done", "failed", "cancelled"):
                    break
            assert job is not None and job.state == "done", (job, seen[-3:])
            # Two rows from the start (seeds 7 and 8, queued), then each take's own stages.
            assert [len(r) for r in seen[:1]] == [2] and "◷ queued" in seen[0][1], seen[:2]
            running = [r for r in seen if "▶ draft" in r[0] and "◷ queued" in r[1]]
            assert running, "seed 7 drafting while seed 8 waits was never shown"
            later = [r for r in seen if "▶ refine" in r[1] or "▶ upscale" in r[1]]
            assert later and all("▶" not in r[0] for r in later), "seed 8 ran while 7 was not done"
            assert any("%" in r[0] and " 0%" not in r[0] for r in running + seen), "no progress shown"
            assert [t.state for t in job.takes.values()] == ["done", "done"]
            clips = {seed: Path(t.path) for seed, t in job.takes.items()}
            assert all(p.stat().st_size > 0 and p.with_suffix(".png").exists() for p in clips.values())
            manifest = json.loads((story.parent / "renders/story/takes/beam/takes.json").read_text())
            assert sorted(manifest["takes"]) == ["7", "8"]
            await pilot.pause(0.2)
            assert "seed-8.mp4" not in str(screen.query_one("#take-clip").render())  # seed 7 highlighted
            assert "current" in _rows(screen)[0]
            # The shot's own outputs are untouched: no segment MP4, its preview is the recorded one.
            assert not (story.parent / "renders/story/segments/beam.mp4").exists()
            await pilot.press("down", "enter")  # pick seed 8
            await pilot.pause(0.3)
            assert not isinstance(app.screen, TakesScreen)
            assert app.doc is not None and not app.doc.dirty
            await pilot.press("ctrl+z", "ctrl+y")  # undoable, as any edit
    finally:
        _stop_worker(story.parent)
    saved = story.read_text()
    sb = load(story)
    beam = sb.segment("beam")
    assert (beam.seed, beam.enhance_lock, beam.enhanced_prompt) == (8, True, manifest["takes"]["8"]["prompt"])
    changed = changed_lines(original, saved)
    # The seed's line keeps its comment; beside the pick's two lines, only dawn's enhanced
    # prompt, which the worker caches in the file as any render does.
    assert "-seed = 7                  # a segment's own seed (re-roll a shot without touching the others)" in changed
    assert "+seed = 8                  # a segment's own seed (re-roll a shot without touching the others)" in changed
    assert sorted(line.split(" =")[0] for line in changed) == [
        "+enhance_lock", "+enhanced_prompt", "+enhanced_prompt", "+seed", "-seed"], changed
    assert sb.segment("dawn").enhanced_prompt and not sb.segment("dawn").enhance_lock
