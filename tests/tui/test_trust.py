"""Issue 21: what the editor shows must be true at a glance — on a GPU's long memory
plans, at every terminal size, inside every field, after every kind of job end.

Each test drives the real app with Pilot (replayed events or posted worker events) and
reads the screen as a user would."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from textual.widgets import TextArea

from pipeline.project.storyboard import load
from pipeline.wire.protocol import (
    ErrorEvent,
    FlickerReport,
    JobCancelled,
    JobFinished,
    JobQueued,
    JobStarted,
    SegmentDone,
    StageStarted,
    StatusSnapshot,
    StepProgress,
)
from sulphur_tui.app import create_app
from sulphur_tui.messages import DocumentChanged, WorkerConnection, WorkerEvent
from sulphur_tui.sources import read_events
from sulphur_tui.status import remembered_flicker
from sulphur_tui.widgets.flicker import FlickerRow
from sulphur_tui.widgets.segments import status_of

from .conftest import (
    FIXED_NOW,
    GPU_RECORDING,
    RECORDING,
    fake_render,
    footer_text,
    screen_once,
    screen_text,
    show_h200,
    type_text,
    with_budget,
)

pytestmark = pytest.mark.asyncio
STAGES = ("enhance", "draft", "refine", "upscale", "encode")


def replay_to(story: Path, recording: Path, segment: str, stage: str, step: int, **kw: object):  # noqa: ANN201
    events = read_events(recording)
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepProgress) and e.segment == segment
               and e.stage == stage and e.step == step)
    return create_app(story, connect_worker=False, replay=recording, replay_until=cut + 1, **kw)


def panel(text: str, title: str) -> list[str]:
    """The inside of the bordered panel titled ``title`` (right column), one string per row."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if f"─ {title} " in line)
    left = lines[top].index(f"╭─ {title}")
    right = lines[top].index("╮", left)
    out = []
    for line in lines[top + 1:]:
        inner = line[left:right + 1]
        if inner.startswith("╰"):
            break
        out.append(inner[1:-1])
    return out


# ---------------------------------------------------------------------- 1. stale after F4
async def test_project_settings_edit_keeps_shots_rendered(story: Path) -> None:
    """F4, a new title (it decides no pixel), ctrl+s: every rendered shot stays rendered —
    the form must not turn ``drift_strength`` 1.0 into 1 and so change every shot's digest."""
    for seg in ("dawn", "beam", "storm"):
        fake_render(story, seg)
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        app.screen.query_one("#title").value = "Lighthouse at noon"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.doc.storyboard.project.title == "Lighthouse at noon" and not app.doc.dirty
        states = {s: status_of(app.live.segments.get(s), app.renders.get(s))[0] for s in ("dawn", "beam", "storm")}
        assert all(v == "● rendered" for v in states.values()), states


# ---------------------------------------------------------------------- 2. GPU plans
async def test_stage_timers_readable_with_gpu_plans(story: Path) -> None:
    """With real memory-plan strings every stage row still shows the stage's whole name and
    its time; the running stage's plan is there too, cut with an ellipsis, not the names."""
    app = replay_to(with_budget(story), GPU_RECORDING, "beam", "refine", 1)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = panel(screen_text(app), "Render")
        for stage in STAGES:
            row = next((r for r in rows if re.search(rf"[·▶✔≡✖■–] {stage}\b", r)), None)
            assert row is not None, (stage, rows)
        done = next(r for r in rows if "✔ draft" in r)
        assert "45.5s" in done, done  # the recorded draft took 45.54 s
        running = next(r for r in rows if "▶ refine" in r)
        assert "1/3" in running and re.search(r"ETA \d", running), running
        assert any("refine plan stream, on cuda, group_block+stream" in r for r in rows), rows


async def test_vram_bar_on_a_big_card_with_a_small_budget(story: Path) -> None:
    """H200 (140 GiB) under an 8 GiB budget: the name and the budget are apart, the card bar
    is drawn, and a second bar measures torch's memory against the budget, not the card."""
    app = replay_to(with_budget(story), GPU_RECORDING, "beam", "draft", 4)
    async with app.run_test(size=(120, 40)) as pilot:
        show_h200(app)
        await pilot.pause()
        rows = panel(screen_text(app), "GPU")
        text = "\n".join(rows)
        assert "NVIDIA H200budget" not in text.replace("\n", "")
        assert "NVIDIA H200" in rows[0], rows
        assert any("/140.4 GiB" in r and "░" in r for r in rows), rows
        budget_row = next(r for r in rows if "budget 8 GiB" in r)
        cells = [c for c in budget_row if c in "█░"]
        # torch reserves 7.7 of the 8 GiB: most of that bar is full
        assert cells.count("█") > 3 * cells.count("░"), budget_row


# ---------------------------------------------------------------------- 3. keys inside the prompt
async def test_render_keys_work_inside_the_prompt(story: Path) -> None:
    """F5–F8 reach the render actions while typing a prompt, and the footer lists them."""
    app = create_app(story, connect_worker=False)
    notes: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        await pilot.press("f3")
        await pilot.pause()
        assert isinstance(app.focused, TextArea) and app.focused.id == "prompt"
        actions = {key: app.screen.active_bindings[key].binding.action for key in ("f5", "f6", "f7", "f8")}
        assert actions == {"f5": "render_all", "f6": "render_segment", "f7": "render_from",
                           "f8": "cancel_render"}, actions
        footer = await footer_text(pilot)
        for words in ("Render", "Render shot", "Render from", "Cancel"):
            assert words in footer, footer
        await pilot.press("f8")  # no worker runs: cancelling says so
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "No render of this storyboard is running." in notes, notes


# ---------------------------------------------------------------------- 4. seams
async def test_seam_is_compared_with_its_own_stage(story: Path) -> None:
    """The draft's seam (17 dB) is not held against the encoded video's minimum (27 dB),
    and the row says which stage its figures come from."""
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        draft = FlickerReport(job_id="j", segment="beam", stage="draft", psnr=[16.7, 17.0, 17.2], mean=17.0,
                              median=17.0, minimum=16.7, worst=[0], seam_psnr=17.1)
        encoded = FlickerReport(job_id="j", segment="beam", stage="encode", psnr=[27.0, 29.0, 31.0], mean=29.0,
                                median=29.0, minimum=27.0, worst=[0])
        app.post_message(WorkerEvent(draft))
        app.post_message(WorkerEvent(encoded))
        for _ in range(400):  # the row mounts with the first report, then takes the second
            await pilot.pause(0.05)
            rows = app.query(FlickerRow)
            if rows and rows.first().report.stage == "encode" and "min 27.0" in screen_text(app):
                break
        row = app.query_one(FlickerRow)
        assert not row.has_class("-seam-bad")
        text = " ".join(panel(screen_text(app), "Flicker · PSNR-Y dB"))
        assert "encode" in text and "min 27.0" in text, text
        assert "draft seam 17.1" in text, text


async def _flicker_rows(app, pilot) -> str:  # noqa: ANN001 - test helper
    """The flicker panel's text once a row is drawn ("" if none comes within 5 s)."""
    for _ in range(100):
        await pilot.pause(0.05)
        if app.query(FlickerRow):
            break
    return " ".join(panel(screen_text(app), "Flicker · PSNR-Y dB"))


async def test_an_editor_opened_later_draws_the_flicker_of_the_renders_on_disk(story: Path) -> None:
    """Reopened after a render, the flicker panel was empty although the shot's mp4 was there;
    it draws the measured video again, and forgets it once the mp4 is another."""
    mp4 = story.parent / "renders" / "story" / "segments" / "beam.mp4"
    mp4.parent.mkdir(parents=True)
    mp4.write_bytes(b"the measured render")
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.post_message(WorkerEvent(FlickerReport(job_id="j", segment="beam", stage="draft", psnr=[17.0],
                                                   mean=17.0, median=17.0, minimum=16.7, worst=[0], seam_psnr=17.1)))
        app.post_message(WorkerEvent(FlickerReport(job_id="j", segment="beam", stage="encode", psnr=[27.0, 31.0],
                                                   mean=29.0, median=29.0, minimum=27.0, worst=[0])))
        for _ in range(100):
            await pilot.pause(0.05)
            if app.live.flicker.get("beam") and app.live.flicker["beam"].stage == "encode":
                break
    again = create_app(story, connect_worker=False)
    async with again.run_test(size=(120, 40)) as pilot:
        text = await _flicker_rows(again, pilot)
        assert "beam" in text and "encode min 27.0" in text and "draft seam 17.1" in text, text
    os.utime(mp4, (mp4.stat().st_atime, mp4.stat().st_mtime + 60))  # rendered again since
    later = create_app(story, connect_worker=False)
    async with later.run_test(size=(120, 40)) as pilot:
        assert "min 27.0" not in await _flicker_rows(later, pilot)


async def test_a_failed_shot_edited_since_no_longer_reads_as_failed(story: Path) -> None:
    """A shot failed, the user fixed its prompt: the row kept "✖ failed" until the next render,
    as if the fix had failed too. Edited, it reads as what is on disk; undone, as failed again."""
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        for ev in (JobStarted(job_id="a", storyboard=str(story), segments=["dawn"]),
                   ErrorEvent(job_id="a", segment="dawn", stage="draft", kind="ValueError", message="bad prompt")):
            app.post_message(WorkerEvent(ev))
        await pilot.pause()
        assert status_of_row(app, "dawn") == "✖ failed"
        await pilot.press("enter")  # dawn's prompt
        prompt = app.query_one("#prompt", TextArea)
        prompt.move_cursor(prompt.document.end)
        await type_text(pilot, " fixed")
        await pilot.pause()
        assert status_of_row(app, "dawn") == "○ new"
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert status_of_row(app, "dawn") == "✖ failed"


async def test_a_fix_saved_while_the_job_ran_is_not_what_failed(story: Path) -> None:
    """The job read the file when it was submitted; the user saved a fix while it ran and then
    it failed: the row said "✖ failed" of the fix, which never rendered."""
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.post_message(WorkerEvent(JobStarted(job_id="a", storyboard=str(story), segments=["dawn"])))
        await pilot.pause()
        await pilot.press("enter")  # dawn's prompt
        prompt = app.query_one("#prompt", TextArea)
        prompt.move_cursor(prompt.document.end)
        await type_text(pilot, " fixed")
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.post_message(WorkerEvent(ErrorEvent(job_id="a", segment="dawn", stage="draft", kind="ValueError",
                                                message="bad prompt")))
        await pilot.pause()
        assert status_of_row(app, "dawn") == "○ new"


def _flicker(stage: str, minimum: float, job: str, seam: float | None = None) -> FlickerReport:
    return FlickerReport(job_id=job, segment="beam", stage=stage, psnr=[minimum], mean=minimum, median=minimum,
                         minimum=minimum, worst=[0], seam_psnr=seam)


async def test_flicker_is_kept_for_this_storyboards_renders_only(story: Path) -> None:
    """One worker serves the folder: other.toml's editor kept story.toml's measurement of its own
    "beam" as other.toml's; and a seam measured before the shot lost its anchor stayed with the
    new video's figures."""
    other = story.parent / "other.toml"
    other.write_text(story.read_text())
    for stem in ("story", "other"):
        fake_render(story.parent / f"{stem}.toml", "beam")
    app = create_app(other, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.post_message(WorkerEvent(JobStarted(job_id="s", storyboard=str(story), segments=["beam"])))
        app.post_message(WorkerEvent(_flicker("encode", 11.0, "s")))
        for _ in range(100):
            await pilot.pause(0.05)
            if "beam" in app.live.flicker:
                break
    assert "beam" not in remembered_flicker(load(other))
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        for ev in (_flicker("draft", 20.0, "j1", seam=12.0), _flicker("encode", 27.0, "j1"),
                   _flicker("draft", 20.0, "j2"), _flicker("encode", 30.0, "j2")):  # anchor = "none" since
            app.post_message(WorkerEvent(ev))
        for _ in range(100):
            await pilot.pause(0.05)
            if "beam" in app.live.flicker and app.live.flicker["beam"].minimum == 30.0:
                break
    report, seam = remembered_flicker(load(story))["beam"]
    assert report.minimum == 30.0 and seam is None, (report, seam)


async def test_another_storyboards_job_is_not_drawn_as_this_ones(story: Path) -> None:
    """One worker serves the folder. While it rendered story.toml, an editor on other.toml (the
    same shot ids) drew story.toml's shots as its own: rendering, then failed, with their timers,
    its error as a notification, and its own job's ETA as if nothing ran before it."""
    other = story.parent / "other.toml"
    other.write_text(story.read_text())
    app = create_app(other, connect_worker=False)
    theirs = [JobStarted(job_id="s", storyboard=str(story), segments=["dawn", "beam"], ts=100.0),
              StageStarted(job_id="s", segment="dawn", stage="draft", plan="resident", ts=101.0),
              StepProgress(job_id="s", segment="dawn", stage="draft", step=3, total=8, ts=102.0),
              JobQueued(job_id="o", storyboard=str(other), segments=["storm"], ts=103.0)]
    async with app.run_test(size=(120, 40)) as pilot:
        for ev in theirs:
            app.post_message(WorkerEvent(ev))
        await pilot.pause(0.2)
        text = screen_text(app)
        assert status_of_row(app, "dawn") == status_of(None, None)[0], status_of_row(app, "dawn")
        assert "shot dawn" not in text
        assert "│ job o queued behind story.toml" in text, text
        assert "queued behind story.toml's render" in text.splitlines()[-2]
        app.post_message(WorkerEvent(ErrorEvent(job_id="s", segment="dawn", stage="draft", kind="ValueError",
                                                message="broken anchor", ts=104.0)))
        await pilot.pause(0.2)
        assert "failed" not in status_of_row(app, "dawn")
        assert not app._notifications, [n.message for n in app._notifications]
        assert "story.toml: job s started" in "\n".join(line for _, line in app.live.journal)
        assert "story.toml" not in screen_text(app).splitlines()[-2]  # it no longer runs


async def test_a_preset_the_worker_lacks_is_named_on_attaching(story: Path) -> None:
    """The editor opened a storyboard with a mistyped preset without a word; the render refused it only
    at F5. The worker's snapshot lists its presets: the editor names the file:line:col at once, once."""
    text = story.read_text()
    assert '\npreset = "tiny"' in text
    story.write_text(text.replace('\npreset = "tiny"', '\npreset = "ltx23-distiled"'))
    line = next(i for i, row in enumerate(story.read_text().splitlines(), 1) if row.startswith("preset ="))
    app = create_app(story, connect_worker=False)
    known = ["ltx23-distilled", "tiny"]
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        assert not app._notifications
        app.post_message(WorkerEvent(StatusSnapshot(pid=7, project=str(story.parent), jobs=[], presets=known)))
        await pilot.pause(0.2)
        told = [(n.title, n.message) for n in app._notifications]
        assert len(told) == 1, told
        title, message = told[0]
        assert title == "Unknown model preset"
        assert message.startswith(f"story.toml:{line}:1: project.preset: ") and "'ltx23-distiled'" in message, message
        assert "ltx23-distilled, tiny" in message, "what the worker has instead"
        app.post_message(WorkerEvent(StatusSnapshot(pid=7, project=str(story.parent), jobs=[], presets=known)))
        app.post_message(WorkerEvent(StatusSnapshot(pid=7, project=str(story.parent), jobs=[])))  # not told
        await pilot.pause(0.2)
        assert len(app._notifications) == 1, "named once, not at every snapshot"


async def test_known_presets_raise_nothing(story: Path) -> None:
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        app.post_message(WorkerEvent(StatusSnapshot(pid=7, project=str(story.parent), jobs=[],
                                                    presets=["tiny", "ltx23-distilled"])))
        await pilot.pause(0.2)
        assert not app._notifications, [n.message for n in app._notifications]


def status_of_row(app, sid: str) -> str:  # noqa: ANN001 - test helper
    """The status cell of a shot's row as drawn."""
    table = app.query_one("SegmentList")
    return str(table.get_cell(sid, "status"))


# ---------------------------------------------------------------------- 5. status line
async def test_status_line_keeps_where_the_output_is(story: Path) -> None:
    """After a whole render the status line says where the output went, and keeps it
    (the recorded job ended without a film: it names the shots' folder)."""
    app = create_app(story, connect_worker=False, replay=RECORDING)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        status = screen_text(app).splitlines()[-2]
        assert "✔ done in 110 s" in status and "renders/story" in status, status


async def test_status_line_says_how_the_last_job_ended(story: Path) -> None:
    """A cancelled job, then one that finishes: the status line tells the second's outcome."""
    app = create_app(story, connect_worker=False)
    film = story.parent / "renders" / "story" / "final.mp4"
    async with app.run_test(size=(120, 40)) as pilot:
        for ev in (JobStarted(job_id="a", storyboard=str(story), segments=["dawn"]), JobCancelled(job_id="a"),
                   JobStarted(job_id="b", storyboard=str(story), segments=["dawn"]),
                   JobFinished(job_id="b", path=str(film), seconds=42.0)):
            app.post_message(WorkerEvent(ev))
        await pilot.pause()
        status = screen_text(app).splitlines()[-2]
        assert "cancelled" not in status and "renders/story/final.mp4" in status, status


async def test_an_editor_opened_later_still_says_how_the_last_job_ended(story: Path) -> None:
    """Reopened after a render (the worker since idled out), the status line said only "worker
    attached" or "no render worker running"; the README says it keeps how the last job ended."""
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.post_message(WorkerEvent(JobStarted(job_id="a", storyboard=str(story), segments=["dawn"])))
        app.post_message(WorkerEvent(JobFinished(job_id="a", path=str(story.parent / "renders/story/final.mp4"),
                                                 seconds=42.0)))
        await pilot.pause()
    again = create_app(story, connect_worker=False)
    async with again.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        status = screen_text(again).splitlines()[-2]
        assert "✔ film ready: renders/story/final.mp4 (42 s)" in status, status


async def test_status_line_leaves_starting_once_the_worker_speaks(story: Path) -> None:
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.jobs.set_worker_detail("starting the render worker…")
        app.post_message(WorkerEvent(JobStarted(job_id="a", storyboard=str(story), segments=["dawn"])))
        await pilot.pause()
        status = screen_text(app).splitlines()[-2]
        assert "starting the render worker" not in status, status


async def test_a_worker_killed_mid_job_stops_the_job_showing_as_running(story: Path) -> None:
    """kill -9 of the worker mid-draft: the shot list said "▶ 39%", the draft's timer kept
    counting and the status line said "rendering 3 shots…" beside "no render worker running"."""
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        t0 = app.clock()
        for ev in (JobStarted(job_id="a", storyboard=str(story), segments=["dawn", "beam"], ts=t0),
                   StageStarted(job_id="a", segment="dawn", stage="draft", total_steps=8, ts=t0),
                   StepProgress(job_id="a", segment="dawn", stage="draft", step=3, total=8, ts=t0 + 3)):
            app.post_message(WorkerEvent(ev))
        await pilot.pause()
        assert "▶ draft" in screen_text(app)
        app.post_message(WorkerConnection(False, "no render worker running (F5 starts one)"))
        await pilot.pause()
        text = screen_text(app)
        assert "▶" not in text and "■ draft" in text, text
        status = text.splitlines()[-2]
        assert "worker stopped mid-job" in status and "rendering" not in status, status
        assert not app.live.running


async def test_an_enhancer_the_runner_skipped_reads_as_skipped(story: Path) -> None:
    """A locked prompt (or enhance = false) skips the enhancer with no event: its row said
    "· enhance ~1.0s", pending with an estimate, through the whole job."""
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        t0 = app.clock()
        for ev in (JobStarted(job_id="a", storyboard=str(story), segments=["dawn"], ts=t0),
                   StageStarted(job_id="a", segment="dawn", stage="draft", total_steps=8, ts=t0)):
            app.post_message(WorkerEvent(ev))
        await pilot.pause()
        rows = [r for r in screen_text(app).splitlines() if " enhance " in r]
        assert rows and all("– enhance" in r and "skipped" in r and "~" not in r for r in rows), rows


async def test_a_worker_event_during_shutdown_is_not_a_crash(story: Path) -> None:
    """The worker keeps speaking while the app closes (its last Log came as the screen's
    widgets went): the editor closed with a NoMatches traceback."""
    from pipeline.wire.protocol import TakeStarted

    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.board.remove_children()  # what closing the app does first
        app.post_message(WorkerEvent(JobFinished(job_id="b", path=str(story.parent / "final.mp4"), seconds=1.0)))
        app.post_message(WorkerConnection(False, "no render worker running"))  # the worker idled out
        app.post_message(DocumentChanged(reason="the worker wrote an enhanced prompt"))
        await pilot.pause()
    assert app.return_code in (0, None)
    app = create_app(story, connect_worker=False)  # the same with the takes screen open
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        app.post_message(WorkerEvent(JobStarted(job_id="t", storyboard=str(story), segments=["dawn"], seeds=[7])))
        await pilot.pause()
        await app.screen.remove_children()
        app.post_message(WorkerEvent(TakeStarted(job_id="t", segment="dawn", seed=7)))
        await pilot.pause()
    assert app.return_code in (0, None)


# ---------------------------------------------------------------------- 8. layout
async def test_layout_at_80x24(story: Path) -> None:
    """80 columns: stage names whole, a preview with rows, every render key in the footer."""
    app = replay_to(with_budget(story), GPU_RECORDING, "beam", "draft", 4)
    async with app.run_test(size=(80, 24)) as pilot:
        show_h200(app)
        await pilot.pause()
        footer = await footer_text(pilot)
        for key in ("f5", "f6", "f7", "f8", "f1"):
            assert key in footer, footer
        await pilot.press("f9")  # the render view
        text = await screen_once(pilot, "encode")
        rows = panel(text, "Render")
        for stage in STAGES:
            assert any(re.search(rf"[·▶✔≡✖■–] {stage}\b", r) for r in rows), (stage, text)
        assert len(panel(text, "Preview")) >= 4, text


async def test_layout_at_120x40(story: Path) -> None:
    """120 columns: the job header is one line and the encode and film rows show; the shot
    form shows "or secs" with its field; the last-render column is not cut."""
    for seg in ("dawn", "beam", "storm"):
        fake_render(story, seg, mtime=FIXED_NOW - 90)
    app = create_app(with_budget(story), connect_worker=False, replay=GPU_RECORDING, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        rows = panel(text, "Render")
        assert re.match(r" [·▶✔≡✖■–] enhance", rows[1]), rows  # the header took one line
        assert any("✔ encode" in r for r in rows), rows  # (the film row: test_stage_started_for_the_film…)
        assert "or secs" in text
        seconds = app.query_one("#seconds")
        assert seconds.size.width >= 6, seconds.size  # "0.7", "12.5" fit
        shots = panel_left(text, "Shots")
        assert any(re.search(r"\b1m ago\b", r) for r in shots), shots


def panel_left(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if f"╭─ {title} " in line)
    right = lines[top].index("╮")
    out = []
    for line in lines[top + 1:]:
        if line.startswith("╰"):
            break
        out.append(line[1:right])
    return out


async def test_layout_at_200x50(story: Path) -> None:
    """200 columns: the live column grows with the terminal."""
    app = replay_to(with_budget(story), GPU_RECORDING, "beam", "draft", 4)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        assert app.query_one("#right").size.width >= 70
        rows = panel(screen_text(app), "Render")
        assert any("stream/text-group-evict, on cuda, group_block+stream," in r for r in rows), rows


async def test_stage_started_for_the_film_is_a_row(story: Path) -> None:
    """The job-level film stage gets its own row (kept visible with the others)."""
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.post_message(WorkerEvent(JobStarted(job_id="a", storyboard=str(story), segments=["dawn"])))
        app.post_message(WorkerEvent(StageStarted(job_id="a", segment="", stage="film", total_steps=40)))
        await pilot.pause()
        assert any("▶ film" in r for r in panel(screen_text(app), "Render"))


# ---------------------------------------------------------------------- keys users expect
async def test_vim_keys_help_and_q(story: Path) -> None:
    """j/k/g/G move through the shots, ? opens help, q asks when there are unsaved edits."""
    from sulphur_tui.screens import ConfirmQuit, HelpScreen

    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        seen = []
        for key in ("j", "j", "k", "G", "g"):
            await pilot.press(key)
            await pilot.pause()
            seen.append(app.selected)
        assert seen == ["beam", "storm", "beam", "storm", "dawn"], seen
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape", "a")  # a new shot: unsaved
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running and app.doc.dirty


async def test_shot_list_fits_after_the_terminal_narrows(story: Path) -> None:
    """200 → 120 columns: the prompt column gives the room back; length and rendered stay."""
    fake_render(story, "dawn", mtime=FIXED_NOW - 90)
    app = create_app(story, connect_worker=False, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        await pilot.pause()
        shots = panel_left(screen_text(app), "Shots")
        assert "rendered" in shots[0] and "17 f" in shots[1] and "1m ago" in shots[1], shots


# ---------------------------------------------------------------------- the job log panel
async def test_job_log_panel_tells_the_whole_job(story: Path) -> None:
    """ctrl+l shows the job log: the job's start, every stage, the warnings, each shot's file
    and the job's end; ctrl+l hides it again."""
    from sulphur_tui.widgets.joblog import JobLog

    app = create_app(story, connect_worker=False, replay=RECORDING)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        log = app.query_one(JobLog)
        assert not log.display
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert log.display
        text = "\n".join(log.lines)
        for words in ("job f777096d started: dawn, beam, storm", "dawn/draft started · cpu, on cpu",
                      "dawn/draft done in", "warning: dawn: prompt enhancer", "renders/story/segments/beam.mp4",
                      "job f777096d finished in 110 s"):
            assert words in text, (words, text)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert not log.display
        # the worker names files by absolute path; the log, like the status line, relative
        app.post_message(WorkerEvent(SegmentDone(job_id="b", segment="storm", frames=17, seconds=1.0,
                                                 path=str(story.parent / "renders/story/segments/storm.mp4"))))
        await pilot.pause()
        assert log.lines[-1].endswith("storm rendered: renders/story/segments/storm.mp4"), log.lines[-1]


# ---------------------------------------------------------------------- host gauges
async def test_host_ram_and_cpu_beside_vram(story: Path) -> None:
    """No GPU here: the panel still shows the host's RAM (with the storyboard's RAM budget
    marked) and CPU, the other budget of an offloaded render."""
    from pipeline.telemetry.host import HostSample

    story.write_text(story.read_text().replace("# ram_budget_gb = 32 ", "ram_budget_gb = 24   "))
    reading = HostSample(ram_used=20 * 1024**3, ram_total=int(31.3 * 1024**3), cpu_percent=37.0, cores=16)
    app = create_app(story, connect_worker=False, host=lambda: reading)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        await pilot.pause()
        rows = panel(screen_text(app), "GPU")
        ram = next(r for r in rows if r.startswith("RAM "))
        cpu = next(r for r in rows if r.startswith("CPU "))
        assert "20.0/31.3 GiB · budget 24" in ram and "│" in ram, ram
        assert ram.count("█") > ram.count("░"), ram  # 20 of 31 GiB
        assert "37% of 16 cores" in cpu, cpu
        assert any("No NVIDIA GPU" in r for r in rows), rows


async def test_e_edits_the_prompt_in_the_users_editor(story: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """e runs $EDITOR (a real program here) on the selected shot's prompt; what it saves
    becomes the prompt, one ctrl+z away; an editor that fails changes nothing."""
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\ngrep -q gulls "$1" || exit 3\nprintf "A storm over the lighthouse\\n" > "$1"\n')
    editor.chmod(0o755)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(editor))
    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e")
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").prompt == "A storm over the lighthouse"
        assert app.query_one("#prompt", TextArea).text == "A storm over the lighthouse"
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").prompt.startswith("A lighthouse on a rocky cliff")
        await pilot.press("j", "e")  # no gulls in beam's prompt: this editor fails
        await pilot.pause()
        assert app.doc.storyboard.segment("beam").prompt.startswith("The camera slowly pushes in")


async def test_slash_filters_the_shots(story: Path) -> None:
    """/ then words: only the shots whose id or prompt hold them; Enter returns to the list
    (the matching shot selected), Esc clears the filter."""
    from sulphur_tui.widgets.segments import SegmentList

    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("slash")
        for ch in "rain":
            await pilot.press(ch)
        await pilot.pause()
        shown = [str(k.value) for k in app.query_one(SegmentList).rows]
        assert shown == ["storm"], shown
        assert "/ rain" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.focused, SegmentList) and app.selected == "storm"
        await pilot.press("slash", "escape")
        await pilot.pause()
        assert [str(k.value) for k in app.query_one(SegmentList).rows] == ["dawn", "beam", "storm"]
        assert isinstance(app.focused, SegmentList) and app.is_running


async def test_the_palette_has_one_quit_and_it_asks(story: Path) -> None:
    """Textual's own "Quit" (exits at once) is gone from the palette; ours asks when unsaved."""
    from sulphur_tui.screens import ConfirmQuit

    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Quit" not in titles and titles, titles
        await pilot.press("a", "ctrl+p")
        for ch in "Quit":
            await pilot.press(ch)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ConfirmQuit)


async def test_project_form_checks_fields_as_they_are_typed_and_left(story: Path) -> None:
    """F4: letters never enter a number field; leaving a field with a bad value says why
    beside it; Esc with changes not applied asks once, the second Esc discards."""
    from textual.widgets import Input

    from sulphur_tui.screens import ProjectScreen

    app = create_app(story, connect_worker=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, ProjectScreen)
        fps = form.query_one("#fps", Input)
        fps.focus()
        await pilot.press("end", "x", "y", "2")
        assert fps.value == "242"  # the letters were refused, the digit taken
        draft = form.query_one("#draft_size", Input)
        draft.focus()
        await pilot.press(*"512 by 288")
        await pilot.press("tab")
        await pilot.pause()
        row_error = str(draft.parent.query_one(".field-error").render())
        assert row_error.startswith("expected WIDTHxHEIGHT"), row_error
        assert draft.has_class("-invalid")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is form and "Esc again discards" in str(form.query_one("#error").render())
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ProjectScreen) and not app.doc.dirty


# ------------------------------------------------- events before the editor is on screen
async def test_a_worker_event_before_the_screen_is_mounted_is_drawn_once_it_is(story: Path) -> None:
    """An attached worker can speak before the first frame: the editor neither crashes
    nor drops what it said."""
    app = create_app(story, connect_worker=False)
    app.live.apply(JobStarted(job_id="j1", storyboard=str(story), segments=["dawn"]))
    app.live.apply(StageStarted(job_id="j1", segment="dawn", stage="draft", total_steps=8))
    app.board.refresh_live({"segments", "timers"})  # what on_event does; the screen is not mounted yet
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        row = next(line for line in screen_text(app).splitlines() if " dawn " in line and "│" in line)
        assert "▶" in row, row
        assert "▶ draft" in "\n".join(panel(screen_text(app), "Render"))
