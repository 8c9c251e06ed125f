"""Snapshots of the main screen (pytest-textual-snapshot). Update with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the SVGs."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import TextArea

from pipeline.wire.protocol import StepProgress
from sulphur_tui.app import create_app
from sulphur_tui.sources import read_events

from .conftest import FIXED_NOW, GPU_RECORDING, RAY_RECORDING, RECORDING, fake_render, show_h200, with_budget

SIZE = (120, 40)


async def settle(pilot) -> None:  # noqa: ANN001
    for area in pilot.app.query(TextArea):
        area.cursor_blink = False
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_idle(snap_compare, story: Path) -> None:  # noqa: ANN001
    """Two shots rendered, one of them edited since (stale), one never rendered, unsaved."""
    fake_render(story, "dawn")
    fake_render(story, "beam")
    app = create_app(story, connect_worker=False, clock=lambda: FIXED_NOW)

    async def run_before(pilot) -> None:  # noqa: ANN001
        await pilot.press("down", "enter")
        pilot.app.query_one("#prompt", TextArea).move_cursor((0, 0))
        await pilot.press("N", "i", "g", "h", "t", ".", "space", "f2")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def replayed_to(story: Path, recording: Path, segment: str, stage: str, step: int):  # noqa: ANN201
    """The app with ``recording`` replayed up to that step of that stage."""
    events = read_events(recording)
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepProgress) and e.segment == segment
               and e.stage == stage and e.step == step)
    return create_app(story, connect_worker=False, replay=recording, replay_until=cut + 1)


def test_rendering(snap_compare, story: Path) -> None:  # noqa: ANN001
    """A recorded tiny render replayed up to the middle of the second shot's draft."""
    app = replayed_to(story, RECORDING, "beam", "draft", 4)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_rendering_on_ray(snap_compare, story: Path) -> None:  # noqa: ANN001
    """A recorded Ray render (CPU) replayed to where the draft actor drafts the second shot
    while the finish actor refines the first: one row per actor under the stage timers."""
    app = replayed_to(story, RAY_RECORDING, "beam", "draft", 3)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_no_gpu(snap_compare, story: Path) -> None:  # noqa: ANN001
    app = create_app(story, connect_worker=False)

    async def run_before(pilot) -> None:  # noqa: ANN001
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_broken_file(snap_compare, story: Path) -> None:  # noqa: ANN001
    text = story.read_text().replace('seed = 7 ', 'seed = "seven" ', 1)
    story.write_text(text)
    app = create_app(story, connect_worker=False)

    async def run_before(pilot) -> None:  # noqa: ANN001
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_project_settings_refusing_a_value(snap_compare, story: Path) -> None:  # noqa: ANN001
    """F4's form with a film size H.264 cannot encode: the message names the field."""
    app = create_app(story, connect_worker=False)

    async def run_before(pilot) -> None:  # noqa: ANN001
        await pilot.press("f4")
        await pilot.pause()
        pilot.app.screen.query_one("#output_size").value = "1921x1080"
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)], ids=["80x24", "120x40", "200x50"])
def test_rendering_on_a_gpu(snap_compare, story: Path, size: tuple[int, int]) -> None:  # noqa: ANN001
    """A GPU render (long memory plans, an H200 under an 8 GiB budget) in the middle of the
    second shot's draft, at the three sizes users run the editor at; at 80 columns the
    render tab is shown (f9), where the timers and the preview are."""
    app = replayed_to(with_budget(story), GPU_RECORDING, "beam", "draft", 4)

    async def run_before(pilot) -> None:  # noqa: ANN001
        show_h200(pilot.app)
        if size[0] < 100:
            await pilot.press("f9")
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_latent_preview(snap_compare, story: Path) -> None:  # noqa: ANN001
    """The tiny preset's first shot at its fourth draft step: the Preview panel shows the
    sampler's latent (false colour) while the draft runs."""
    from pipeline.wire.protocol import LatentPreview

    latents = Path(__file__).parent / "data" / "render-tiny-latents.jsonl"
    events = read_events(latents)
    cut = next(i for i, e in enumerate(events) if isinstance(e, LatentPreview) and e.stage == "draft" and e.step == 4)
    app = create_app(story, connect_worker=False, replay=latents, replay_until=cut + 1)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)
