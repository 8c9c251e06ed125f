"""The takes picker: the takes `sulphur takes` rendered for a shot, and picking one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from textual.widgets import OptionList, Static

from pipeline.project.storyboard import load
from pipeline.render.takes import pick_take
from sulphur_tui.app import SulphurApp, create_app
from sulphur_tui.screens import TakesScreen
from sulphur_tui.widgets.segments import status_of

from .conftest import DATA, changed_lines
from .test_snapshots import settle

SIZE = (120, 40)
TAKE_PROMPT = "A slow push-in on the lighthouse at dusk as its beam sweeps over a grey, restless sea"


def write_takes(story: Path, segment: str, seeds: list[int], text: str = TAKE_PROMPT) -> dict[int, Path]:
    """Clips + takes.json exactly as :func:`pipeline.render.engines.ray_engine.render_takes` leaves
    them (its manifest writer is inline there, so its lines are repeated here)."""
    sb = load(story)
    out_dir = sb.render_dir() / "takes" / segment
    out_dir.mkdir(parents=True, exist_ok=True)
    takes = {seed: out_dir / f"seed-{seed}.mp4" for seed in seeds}
    for clip in takes.values():
        clip.write_bytes(b"\x00")  # content irrelevant to the editor
    manifest = out_dir / "takes.json"
    known = json.loads(manifest.read_text()).get("takes", {}) if manifest.exists() else {}
    known.update({str(seed): {"path": str(p), "prompt": text} for seed, p in takes.items()})
    manifest.write_text(json.dumps({"segment": segment, "takes": known}, indent=1))
    return takes


def make(story: Path, **kw: object) -> SulphurApp:
    return create_app(story, connect_worker=False, image="none", **kw)


@pytest.mark.asyncio
async def test_pick_the_second_take(story: Path, tmp_path: Path) -> None:
    """t on a shot lists its takes (the current one marked and highlighted); down, enter
    writes the second take's seed and locked prompt into the file, and nothing else."""
    write_takes(story, "beam", [7, 8, 9])
    original = story.read_text()
    app = make(story)
    notes: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        await pilot.press("down", "t")  # beam, whose own seed is 7
        assert isinstance(app.screen, TakesScreen)
        options = app.screen.query_one("#takes", OptionList)
        assert options.option_count == 3 and options.highlighted == 0
        assert "current" in str(options.get_option_at_index(0).prompt)
        assert "current" not in str(options.get_option_at_index(1).prompt)
        assert "seed-7.mp4" in str(app.screen.query_one("#take-clip", Static).render())
        await pilot.press("down")
        assert "seed-8.mp4" in str(app.screen.query_one("#take-clip", Static).render())
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, TakesScreen)
        assert app.doc is not None and not app.doc.dirty  # nothing else was unsaved: saved at once
        seg = app.doc.storyboard.segment("beam")
        assert (seg.seed, seg.enhanced_prompt, seg.enhance_lock) == (8, TAKE_PROMPT, True)
        assert any("take 8" in n and "next render continues from it" in n for n in notes), notes
        await pilot.press("ctrl+z")  # one undo step, like any edit
        assert app.doc.storyboard.segment("beam").seed == 7
    saved = story.read_text()
    assert changed_lines(original, saved) == [
        "-seed = 7                  # a segment's own seed (re-roll a shot without touching the others)",
        "+seed = 8                  # a segment's own seed (re-roll a shot without touching the others)",
        f'+enhanced_prompt = "{TAKE_PROMPT}"',
        "+enhance_lock = true",
    ]
    # Byte for byte what `sulphur takes story.toml beam --pick 8` writes.
    cli = tmp_path / "cli"
    cli.mkdir()
    shutil.copy(DATA / "story.toml", cli / "story.toml")
    write_takes(cli / "story.toml", "beam", [7, 8, 9])
    pick_take(cli / "story.toml", "beam", 8)
    assert (cli / "story.toml").read_text() == saved


@pytest.mark.asyncio
async def test_no_takes_offers_to_render_them(story: Path) -> None:
    """Through the command palette: no rows, the render button focused, the shell command
    named as the other way; nothing is written."""
    original = story.read_text()
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p", *"take")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, TakesScreen)
        text = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert "No takes of “dawn” yet." in text
        assert "sulphur takes story.toml dawn --seeds 4" in text
        assert not app.screen.query_one("#takes").display
        assert app.screen.focused is app.screen.query_one("#render-takes")
        await pilot.press("escape")
        assert not isinstance(app.screen, TakesScreen)
    assert story.read_text() == original


@pytest.mark.asyncio
async def test_opens_for_the_shot_under_the_cursor(story: Path) -> None:
    """Keys in one burst (tmux, SSH): the cursor moved, the list's Selected message not yet handled."""
    from sulphur_tui.widgets.segments import SegmentList

    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(SegmentList).move_cursor(row=2)
        app.action_pick_take()
        await pilot.pause()
        assert isinstance(app.screen, TakesScreen) and app.screen.segment_id == "storm"


@pytest.mark.asyncio
async def test_unreadable_manifest_is_reported(story: Path) -> None:
    manifest = load(story).render_dir() / "takes" / "dawn" / "takes.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"segment": "dawn", "takes": {"seven": {}}}')
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        assert isinstance(app.screen, TakesScreen)
        text = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert "cannot be read" in text and "'seven'" in text


@pytest.mark.asyncio
async def test_pick_beside_unsaved_edits_waits_for_save(story: Path) -> None:
    """Other unsaved edits are not written behind the user's back; the pick survives the
    worker writing another shot's enhanced prompt meanwhile, and ctrl+s saves both."""
    write_takes(story, "beam", [7, 8])
    original = story.read_text()
    app = make(story, poll_disk=3600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+end", "ctrl+r")  # storm gets a random seed: unsaved
        await pilot.press("up", "t", "down", "enter")
        await pilot.pause()
        assert app.doc is not None and app.doc.dirty
        assert story.read_text() == original
        # The worker caches dawn's enhanced prompt in the file.
        from pipeline.project.storyboard import save, with_segment

        save(with_segment(load(story), "dawn", enhanced_prompt="Dawn, enhanced by the worker"))
        app._poll_disk()
        await pilot.pause()
        sb = app.doc.storyboard
        assert sb.segment("dawn").enhanced_prompt == "Dawn, enhanced by the worker"
        assert (sb.segment("beam").seed, sb.segment("beam").enhanced_prompt) == (8, TAKE_PROMPT)
        await pilot.press("ctrl+s")
        await pilot.pause()
    sb = load(story)
    assert sb.segment("storm").seed is not None and sb.segment("beam").seed == 8
    assert sb.segment("beam").enhance_lock and sb.segment("beam").enhanced_prompt == TAKE_PROMPT
    assert sb.segment("dawn").enhanced_prompt == "Dawn, enhanced by the worker"


def test_takes_snapshot(snap_compare, story: Path) -> None:  # noqa: ANN001
    """Three takes of beam: the current one with a still of its last frame, one whose clip is gone."""
    takes = write_takes(story, "beam", [7, 8])
    write_takes(story, "beam", [9], text="The beam sweeps the sea as the camera pushes in, spray on the rocks")
    shutil.copy(DATA / "previews" / "beam.png", takes[7].with_suffix(".png"))
    takes[8].unlink()
    app = create_app(story, connect_worker=False)

    async def run_before(pilot) -> None:  # noqa: ANN001
        await pilot.press("down", "t")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.asyncio
async def test_rows_follow_a_takes_job(story: Path) -> None:
    """A takes job's events as the worker sends them: a row per seed, queued; the running
    take's stage, steps and progress; then its clip, pickable while the next one renders."""
    from pipeline.wire import protocol as p
    from sulphur_tui.messages import WorkerEvent

    app = make(story)
    job = "takes0001"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "t")
        screen = app.screen
        assert isinstance(screen, TakesScreen)

        def post(ev: p.Event) -> None:
            ev.job_id = job
            app.post_message(WorkerEvent(ev))

        def rows() -> list[str]:
            options = screen.query_one("#takes", OptionList)
            return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

        post(p.JobQueued(storyboard=str(story), segments=["beam"], seeds=[7, 8]))
        post(p.JobStarted(storyboard=str(story), segments=["beam"], seeds=[7, 8]))
        post(p.StageStarted(segment="dawn", stage="draft", total_steps=8))  # the shot before, drafted once
        post(p.StageFinished(segment="dawn", stage="draft", seconds=1.0))
        await pilot.pause(0.1)
        assert all(t.state == "queued" for t in app.live.takes["beam"].takes.values())
        post(p.TakeStarted(segment="beam", seed=7))
        post(p.StageFinished(segment="beam", stage="enhance", seconds=0.1))
        post(p.StageStarted(segment="beam", stage="draft", total_steps=8))
        post(p.StepProgress(segment="beam", stage="draft", step=4, total=8))
        await pilot.pause(0.2)
        assert "▶ draft 4/8" in rows()[0] and "◷ queued" in rows()[1], rows()
        assert "28%" in rows()[0], rows()  # enhance (5%) + half the draft (45%): 27.5%
        assert "rendering 0/2" in str(screen.query_one("#takes-title").render())
        assert screen.focused is screen.query_one("#takes")  # the rows took the keys from the button
        await pilot.press("enter")  # not rendered yet: not picked
        assert app.screen is screen and app.live.jobs.keys() == {job}
        clips = write_takes(story, "beam", [7])  # what the worker records before TakeFinished
        post(p.TakeFinished(segment="beam", seed=7, path=str(clips[7])))
        post(p.TakeStarted(segment="beam", seed=8))
        post(p.StageStarted(segment="beam", stage="draft", total_steps=8))
        await pilot.pause(0.2)
        assert "▶" not in rows()[0] and "current" in rows()[0] and "▶ draft 0/8" in rows()[1], rows()
        assert "rendering 1/2" in str(screen.query_one("#takes-title").render())
        # The shot's own row says its takes render; a take's stages were drawn as "▶ 100%" of the shot.
        assert status_of(app.live.segments["beam"], None) == ("▶ takes", "rendering")
        await pilot.press("enter")  # seed 7, done: picked while 8 renders
        await pilot.pause(0.2)
        assert app.screen is not screen
        assert app.doc is not None and app.doc.storyboard.segment("beam").enhance_lock
        post(p.JobCancelled())
        await pilot.pause(0.1)
        assert [t.state for t in app.live.takes["beam"].takes.values()] == ["done", "cancelled"]
        assert "render cancelled" in app.live.news
        # No shot is left showing "rendering": dawn was drafted by this job too.
        assert {sid: s.state for sid, s in app.live.segments.items() if s.state} == {}


@pytest.mark.asyncio
async def test_one_line_per_take_at_80_columns(story: Path) -> None:
    from .conftest import screen_once

    write_takes(story, "beam", [7, 8, 9])
    app = make(story)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("down", "t")
        lines = (await screen_once(pilot, "● seed 7")).splitlines()
        row = next(i for i, line in enumerate(lines) if "● seed 7" in line)
        assert "A slow push-in on the…" in lines[row] and "seed 8" in lines[row + 1], lines[row:row + 2]


@pytest.mark.asyncio
async def test_reopened_mid_job_the_rows_come_back(story: Path) -> None:
    """Reattaching: the worker's snapshot names the takes job's seeds, the journal's events
    say take 7 is done and 8 drafting; t shows exactly that, and 7 can be picked."""
    from pipeline.wire import protocol as p
    from sulphur_tui.messages import WorkerEvent

    clips = write_takes(story, "beam", [7])
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        job = "takes0002"
        history = [
            p.StatusSnapshot(pid=1, project=str(story.parent), jobs=[p.JobInfo(
                job_id=job, storyboard=str(story), segments=["beam"], seeds=[7, 8], state="running",
                segment="beam", stage="draft", step=3, total=8)]),
            p.JobQueued(storyboard=str(story), segments=["beam"], seeds=[7, 8]),
            p.JobStarted(storyboard=str(story), segments=["beam"], seeds=[7, 8]),
            p.TakeStarted(segment="beam", seed=7),
            p.TakeFinished(segment="beam", seed=7, path=str(clips[7])),
            p.TakeStarted(segment="beam", seed=8),
            p.StageStarted(segment="beam", stage="draft", total_steps=8),
        ]
        for ev in history:
            ev.job_id = job if not isinstance(ev, p.StatusSnapshot) else ""
            app.post_message(WorkerEvent(ev, history=True))
        await pilot.pause(0.2)
        await pilot.press("down", "t")
        screen = app.screen
        assert isinstance(screen, TakesScreen)
        options = screen.query_one("#takes", OptionList)
        rows = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert "current" in rows[0] and "▶" not in rows[0] and "▶ draft 0/8" in rows[1], rows
        assert "rendering 1/2" in str(screen.query_one("#takes-title").render())
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is not screen and app.doc is not None and app.doc.storyboard.segment("beam").enhance_lock


def test_takes_job_snapshot(snap_compare, story: Path) -> None:  # noqa: ANN001
    """A takes job of beam mid-way: seed 7 rendered (its still beside it), 8 refining, 9 queued."""
    from pipeline.wire import protocol as p
    from sulphur_tui.messages import WorkerEvent

    clips = write_takes(story, "beam", [7])
    shutil.copy(DATA / "previews" / "beam.png", clips[7].with_suffix(".png"))
    from .conftest import FIXED_NOW

    app = create_app(story, connect_worker=False, clock=lambda: FIXED_NOW + 10)  # timers drawn at a fixed time
    events = [p.JobQueued(storyboard=str(story), segments=["beam"], seeds=[7, 8, 9]),
              p.JobStarted(storyboard=str(story), segments=["beam"], seeds=[7, 8, 9]),
              p.TakeStarted(segment="beam", seed=7),
              p.TakeFinished(segment="beam", seed=7, path=str(clips[7]), still=str(clips[7].with_suffix(".png"))),
              p.TakeStarted(segment="beam", seed=8),
              p.StageFinished(segment="beam", stage="draft", seconds=20.0),
              p.StageStarted(segment="beam", stage="refine", total_steps=3),
              p.StepProgress(segment="beam", stage="refine", step=2, total=3)]

    async def run_before(pilot) -> None:  # noqa: ANN001
        await settle(pilot)  # the editor is up before the worker speaks, as when attaching
        for i, ev in enumerate(events):
            ev.job_id, ev.ts = "takes0003", FIXED_NOW + i
            app.post_message(WorkerEvent(ev))
        await pilot.press("down", "t")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
