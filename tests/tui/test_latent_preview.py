"""Live latent previews: the draft and refine samplers send a small picture of their latent
after every step, and the editor's Preview panel shows it while the stage runs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.wire.protocol import LatentPreview, StageFinished, StageStarted, StepProgress
from sulphur_tui.app import create_app
from sulphur_tui.sources import read_events
from sulphur_tui.widgets.preview import PreviewPane
from tests.functional.conftest import checkout_env

from .conftest import DATA

# The first shot of story.toml rendered with the tiny preset (`sulphur render --segment dawn
# --json`, this branch), cut after its refine: StepProgress and LatentPreview interleaved.
LATENTS = DATA / "render-tiny-latents.jsonl"


@pytest.mark.slow
def test_tiny_render_sends_a_picture_every_sampling_step(story: Path) -> None:
    """A real render (tiny preset, CPU): each draft and refine step is followed by its picture
    before the next step starts — the pictures come during sampling, not after the stage. (On a
    GPU a step's picture comes one step later, tests/unit/test_latent_previewer.py.)"""
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "render", str(story), "--segment", "dawn", "--json"],
                         capture_output=True, text=True, timeout=900, cwd=story.parent, env=checkout_env())
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for stage, steps in (("draft", 8), ("refine", 3)):
        start = next(i for i, e in enumerate(events) if e["type"] == "stage_started" and e["stage"] == stage)
        end = next(i for i, e in enumerate(events) if e["type"] == "stage_finished" and e["stage"] == stage)
        inside = events[start:end]
        pictures = [e for e in inside if e["type"] == "latent_preview"]
        assert [p["step"] for p in pictures] == list(range(1, steps + 1)), stage
        for p in pictures:
            rgb = base64.b64decode(p["rgb"])
            assert len(rgb) == p["width"] * p["height"] * 3 and p["width"] >= 4 and p["height"] >= 2
            assert len(set(rgb)) > 8, "a flat picture"  # something of the latent shows
        progress = [(i, e["step"]) for i, e in enumerate(inside) if e["type"] == "step_progress"]
        for p_index, p in ((i, e) for i, e in enumerate(inside) if e["type"] == "latent_preview"):
            later_steps = [step for i, step in progress if i > p_index]
            if p["step"] < steps:  # the next step's progress comes after this picture
                assert p["step"] + 1 in later_steps, (stage, p["step"])
    assert not any(e["type"] == "latent_preview" and e["stage"] not in ("draft", "refine") for e in events)



@pytest.mark.asyncio
async def test_preview_panel_shows_the_latent_while_drafting(story: Path) -> None:
    """Replayed to the fourth draft step: the panel draws that step's picture and says so."""
    events = read_events(LATENTS)
    assert any(isinstance(e, LatentPreview) for e in events)
    cut = next(i for i, e in enumerate(events) if isinstance(e, LatentPreview) and e.stage == "draft" and e.step == 4)
    app = create_app(story, connect_worker=False, replay=LATENTS, replay_until=cut + 1)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        pane = app.query_one(PreviewPane)
        caption = str(pane.query_one("#preview-caption").render())
        assert caption.startswith("dawn · draft step 4/8 · latent"), caption
        image = pane.query_one("#preview-image")
        assert image.display and image.image is not None and image.image.size == (events[cut].width,
                                                                                 events[cut].height)
        assert not pane.query_one("#preview-empty").display
        assert app.live.timers["draft"].state == "running"  # during the stage, not after it
        # the recorded order: the picture of step 4 came before step 5's progress
        later = events[cut + 1:]
        assert any(isinstance(e, StepProgress) and e.stage == "draft" and e.step == 5 for e in later)
        assert any(isinstance(e, StageFinished) and e.stage == "draft" for e in later)
        assert any(isinstance(e, StageStarted) and e.stage == "refine" for e in later)
