"""The TUI's non-visual logic: stale detection, the live reducer on a real recording,
the replay machinery, NVML without a GPU, and the no-torch rule."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.project.storyboard import load, with_segment
from pipeline.telemetry.gpu import GpuMonitor
from pipeline.wire.protocol import (
    ErrorEvent,
    FlickerReport,
    JobInfo,
    JobQueued,
    JobStarted,
    SegmentDone,
    StageFinished,
    StageStarted,
    StatusSnapshot,
    StepProgress,
    VramSample,
)
from sulphur_tui.live import LiveState
from sulphur_tui.messages import WorkerEvent
from sulphur_tui.sources import paced, read_events, write_events
from sulphur_tui.status import disk_states, segment_digest
from tests.functional.conftest import checkout_env

from .conftest import RAY_RECORDING, RECORDING, fake_render


def test_stale_follows_the_chain(story: Path) -> None:
    sb = load(story)
    for sid in ("dawn", "beam", "storm"):
        fake_render(story, sid)
    baseline = {s.id: segment_digest(sb, s.id) for s in sb.segments}
    assert {k: (v.rendered, v.stale) for k, v in disk_states(sb, baseline).items()} == {
        "dawn": (True, False), "beam": (True, False), "storm": (True, False)}
    # beam changes: beam and storm (which continues from beam) are stale, dawn is not.
    edited = with_segment(sb, "beam", prompt="Night falls")
    states = disk_states(edited, baseline)
    assert [states[s].stale for s in ("dawn", "beam", "storm")] == [False, True, True]
    # A shot anchored on an image does not depend on the shots before it.
    cut = with_segment(edited, "storm", anchor=replace(sb.segment("storm").anchor, kind="image", path="x.png"))
    storm_baseline = {**baseline, "storm": segment_digest(cut, "storm")}
    assert disk_states(cut, storm_baseline)["storm"].stale is False
    # The enhancer rewriting an unlocked enhanced prompt is not a change of the shot.
    assert segment_digest(with_segment(sb, "dawn", enhanced_prompt="x"), "dawn") == segment_digest(sb, "dawn")
    assert segment_digest(with_segment(sb, "dawn", enhanced_prompt="x", enhance_lock=True), "dawn") != \
        segment_digest(sb, "dawn")
    # The title and memory budgets do not change pixels.
    assert segment_digest(replace(sb, project=replace(sb.project, title="Other", vram_budget_gb=6)), "dawn") == \
        segment_digest(sb, "dawn")


def test_manifest_digest_wins(story: Path) -> None:
    sb = load(story)
    fake_render(story, "dawn")
    manifest = story.parent / "renders" / "story" / "manifest.json"
    manifest.write_text(json.dumps({"segments": {"dawn": {"digest": "not-this-version"}}}))
    assert disk_states(sb, {"dawn": segment_digest(sb, "dawn")})["dawn"].stale is True


def test_live_state_on_recorded_render() -> None:
    events = read_events(RECORDING)
    assert len(events) > 50
    live = LiveState()
    seen_progress: dict[str, list[float]] = {}
    for ev in events:
        live.apply(ev)
        for sid, s in live.segments.items():
            if s.state == "rendering":
                seen_progress.setdefault(sid, []).append(s.progress)
    ids = [e.segment for e in events if isinstance(e, SegmentDone)]
    assert ids == ["dawn", "beam", "storm"]
    assert all(live.segments[s].state == "" or live.segments[s].state == "done" for s in ids)
    for sid, progress in seen_progress.items():
        assert progress == sorted(progress), f"{sid} progress went backwards"
        assert 0 < progress[-1] <= 1
    assert set(live.flicker) == set(ids)
    # The seam (measured on the draft) survives the refine stage's report, except for the first
    # shot, and stays with the stage it was measured on and that stage's own minimum.
    assert "dawn" not in live.seams
    assert all(live.seams[s].stage == "draft" and live.seams[s].psnr > 0 for s in ids[1:])
    assert all(live.flicker[s].stage == "refine" for s in ids)
    assert all(isinstance(r, FlickerReport) and r.psnr for r in live.flicker.values())
    assert live.mean_seconds("draft") and live.mean_seconds("draft") > 0
    assert not live.running


def test_live_state_follows_each_ray_actor() -> None:
    """With the Ray engine several segments are in flight: each actor's row says which."""
    events = read_events(RAY_RECORDING)
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepProgress) and e.segment == "beam"
               and e.stage == "draft" and e.step >= 2)
    live = LiveState()
    for ev in events[:cut + 1]:
        live.apply(ev)
    doing = {a.label: (a.state, a.segment, a.stage, a.where) for a in live.actors.values()}
    assert doing == {"draft-0": ("running", "beam", "draft", "vm CPU"),
                     "finish-0": ("running", "dawn", "refine", "vm CPU")}
    draft = next(a for a in live.actors.values() if a.label == "draft-0")
    assert (draft.step, draft.total) == (events[cut].step, events[cut].total)  # StepProgress names no worker
    for ev in events[cut + 1:]:
        live.apply(ev)
    assert all(a.state == "idle" for a in live.actors.values())
    busy: dict[str, float] = {}
    for ev in events:
        if isinstance(ev, StageFinished) and ev.actor:
            busy[ev.actor] = busy.get(ev.actor, 0.0) + ev.seconds
    assert {w: round(a.busy, 6) for w, a in live.actors.items()} == {w: round(s, 6) for w, s in busy.items()}
    # A local render's events name no worker: no actor rows.
    local = LiveState()
    for ev in read_events(RECORDING):
        local.apply(ev)
    assert local.actors == {}


def test_live_state_mid_render_eta() -> None:
    events = read_events(RECORDING)
    # Stop in the middle of the second shot's draft: the first shot is done.
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepProgress) and e.segment == "beam"
               and e.stage == "draft" and e.step == 4)
    live = LiveState()
    for ev in events[: cut + 1]:
        live.apply(ev)
    assert live.segments["dawn"].state == "done"
    assert live.segments["beam"].state == "rendering" and 0 < live.segments["beam"].progress < 1
    assert live.segments["storm"].state == "queued"
    draft = live.timers["draft"]
    assert (draft.state, draft.step, draft.total) == ("running", 4, 8)
    eta = live.eta(draft, events[cut].ts)
    assert eta is not None and eta >= 0
    assert live.queue_eta(events[cut].ts) is not None  # every stage ran once already (dawn)


def test_queue_eta_counts_the_takes_still_to_render() -> None:
    """A takes job's shot reads "▶ takes", neither queued nor rendering: the queue's ETA left its
    takes out and said the queue was as good as done while two takes were still to render."""
    from pipeline.wire import protocol as p

    live = LiveState()
    for ev in read_events(RECORDING):  # one render done: every stage has a time
        live.apply(ev)
    now = live.jobs[next(iter(live.jobs))].started + 1000
    one = live.queue_eta(now)
    assert one == 0.0
    seg_total = sum(live.mean_seconds(s) for s in p.STAGES)  # a shot's stages, the enhancer too
    for ev in (p.JobQueued(job_id="t", storyboard="s.toml", segments=["beam"], seeds=[7, 8]),
               p.JobStarted(job_id="t", storyboard="s.toml", segments=["beam"], seeds=[7, 8])):
        live.apply(ev)
    both = live.queue_eta(now)
    assert both is not None and abs(both - one - 2 * seg_total) < 1e-6, (both, seg_total)
    live.apply(p.TakeStarted(job_id="t", segment="beam", seed=7))
    live.apply(p.TakeFinished(job_id="t", segment="beam", seed=7, path="beam-7.mp4"))
    left = live.queue_eta(now)
    assert left is not None and abs(left - seg_total) < 1e-6, (left, seg_total)


def test_high_rate_messages_replace_their_backlog() -> None:
    a = WorkerEvent(StepProgress(segment="s", stage="draft", step=1, total=8))
    b = WorkerEvent(StepProgress(segment="s", stage="draft", step=2, total=8))
    other = WorkerEvent(StepProgress(segment="s", stage="refine", step=1, total=3))
    assert b.can_replace(a) and not other.can_replace(a)
    assert WorkerEvent(VramSample(gpu=0, name="g", used=1, total=2)).can_replace(
        WorkerEvent(VramSample(gpu=0, name="g", used=0, total=2)))
    assert not WorkerEvent(StageStarted(segment="s", stage="draft")).can_replace(a)


def test_replay_round_trip_and_pacing(tmp_path: Path) -> None:
    events = read_events(RECORDING)[:20]
    path = tmp_path / "copy.jsonl"
    write_events(events, path)
    assert read_events(path) == events
    stop = threading.Event()
    assert list(paced(events, 0, stop)) == events
    stop.set()
    assert list(paced(events, 1.0, stop)) == []


def test_gpu_monitor_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SULPHUR_NO_NVML")
    mon = GpuMonitor()
    if mon.available:  # a machine with a GPU: real readings
        samples = mon.sample()
        assert samples and all(s.total > s.used >= 0 and s.name for s in samples)
        assert mon.reason == ""
    else:
        assert mon.sample() == []
        assert mon.reason.startswith(("No NVIDIA GPU", "NVML", "No GPU monitoring"))
    monkeypatch.setenv("SULPHUR_NO_NVML", "1")
    off = GpuMonitor()
    assert not off.available and "SULPHUR_NO_NVML" in off.reason and off.sample() == []


def test_tui_never_imports_torch(story: Path, tmp_path: Path) -> None:
    """Run the real app (with a replayed render) in a fresh interpreter and look at sys.modules."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        from sulphur_tui.app import create_app

        async def main():
            app = create_app({str(story)!r}, connect_worker=False, replay={str(RECORDING)!r})
            async with app.run_test(size=(120, 40)) as pilot:
                await pilot.press("down", "a", "ctrl+z", "f1", "escape")
                await pilot.pause()
            heavy = sorted(m for m in ("torch", "diffusers", "transformers", "av", "llama_cpp", "spandrel")
                           if m in sys.modules)
            allowed = {{"pipeline", "pipeline.wire", "pipeline.wire.protocol", "pipeline.wire.framing", "pipeline.project",
                       "pipeline.project.storyboard", "pipeline.project.layout", "pipeline.project.files", "pipeline.project.renaming", "pipeline.project.keyframes", "pipeline.worker", "pipeline.worker.client", "pipeline.worker.journal",
                       "pipeline.telemetry", "pipeline.telemetry.gpu", "pipeline.telemetry.host"}}
            # pipeline.project is the editor's to import (torch-free: HEAVY above checks that)
            pipeline = sorted(m for m in sys.modules if m.startswith("pipeline") and m not in allowed
                              and not m.startswith("pipeline.project."))
            print("HEAVY", heavy, "PIPELINE", pipeline)

        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY [] PIPELINE []" in out.stdout, out.stdout


def test_stale_is_remembered_across_editor_sessions(story: Path) -> None:
    from pipeline.project.storyboard import save
    from sulphur_tui.status import remember_render, remembered_baseline

    sb = load(story)
    fake_render(story, "dawn")
    remember_render(sb, "dawn", segment_digest(sb, "dawn"))
    # The user edits dawn in another session (or another editor) after the render.
    save(with_segment(sb, "dawn", prompt="A lighthouse at dusk"))
    edited = load(story)
    assert disk_states(edited, remembered_baseline(edited))["dawn"].stale
    # A render the editor never saw counts as made from the file as it is.
    fake_render(story, "beam")
    assert not disk_states(edited, remembered_baseline(edited))["beam"].stale
    # A newer mp4 than the note (re-rendered from the shell) is fresh again.
    fake_render(story, "dawn", mtime=2_000_000_000)
    assert not disk_states(edited, remembered_baseline(edited))["dawn"].stale


def test_stage_times_are_remembered(story: Path) -> None:
    from sulphur_tui.status import STAGE_HISTORY, remember_stage_time, remembered_stage_times

    sb = load(story)
    assert remembered_stage_times(sb) == {}
    for i in range(STAGE_HISTORY + 2):
        remember_stage_time(sb, "draft", 10.0 + i)
    times = remembered_stage_times(sb)["draft"]
    assert len(times) == STAGE_HISTORY and times[-1] == 10.0 + STAGE_HISTORY + 1


def test_a_shot_only_chained_from_keeps_its_encoded_flicker_figure() -> None:
    """Rendering shot 2 alone re-reads shot 1's cached draft to chain from it; shot 1's row
    keeps the figure of its encoded video (~27 dB), not the draft's (~17 dB) — seen in tmux."""
    from pipeline.wire.protocol import FlickerReport, JobStarted, StageCached

    def report(job: str, seg: str, stage: str, low: float) -> FlickerReport:
        return FlickerReport(job_id=job, segment=seg, stage=stage, psnr=[low], mean=low, median=low,
                             minimum=low, worst=[0])

    live = LiveState()
    for ev in (JobStarted(job_id="j1", storyboard="s.toml", segments=["dawn"]),
               report("j1", "dawn", "draft", 16.8), report("j1", "dawn", "encode", 26.9),
               JobStarted(job_id="j2", storyboard="s.toml", segments=["beam"]),
               StageCached(job_id="j2", segment="dawn", stage="draft", cache_key="k"),
               report("j2", "dawn", "draft", 16.8), report("j2", "beam", "draft", 17.0)):
        live.apply(ev)
    assert (live.flicker["dawn"].stage, live.flicker["dawn"].minimum) == ("encode", 26.9)
    assert live.flicker["beam"].stage == "draft"
    # an edited shot 1 is drafted anew: its row follows the new draft until the new encode
    live.apply(JobStarted(job_id="j3", storyboard="s.toml", segments=["dawn"]))
    live.apply(report("j3", "dawn", "draft", 15.0))
    assert (live.flicker["dawn"].stage, live.flicker["dawn"].minimum) == ("draft", 15.0)


def test_a_missing_replay_recording_is_one_line(tmp_path: Path) -> None:
    """The developer replay (`python -m sulphur_tui.app story.toml --replay rec.jsonl`) names a
    recording that is not there in one line, not a traceback."""
    missing = tmp_path / "rec.jsonl"
    done = subprocess.run([sys.executable, "-m", "sulphur_tui.app", "storyboards/creative.toml", "--replay",
                           str(missing)], capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[2], env=checkout_env())
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {missing}: no such recording"]


def test_a_snapshot_keeps_another_storyboards_jobs_apart() -> None:
    """An editor attaching while the worker runs another storyboard's job (same shot ids) sees
    only that it waits behind it, and its ETA counts that job's shots left."""
    live = LiveState("/p/mine.toml")
    for stage in ("enhance", "draft", "refine", "upscale", "encode"):
        live.history[stage] = [2.0]  # 10 s a shot
    # This editor's own job is heard of first (its JobQueued), the worker's snapshot later: the
    # snapshot's order (theirs was queued first) is the worker's.
    live.apply(JobQueued(job_id="m", storyboard="/p/mine.toml", segments=["a"], ts=0.5))
    live.apply(StatusSnapshot(pid=7, project="/p", ts=1.0, jobs=[
        JobInfo(job_id="t", storyboard="/p/theirs.toml", segments=["a", "b", "c"], state="running",
                segment="a", stage="draft", step=2, total=8),
        JobInfo(job_id="m", storyboard="/p/mine.toml", segments=["a"], state="queued")]))
    assert live.segments["a"].state == "queued"  # ours, queued; not theirs, rendering
    assert [j.job_id for j in live.ahead_elsewhere()] == ["t"]
    assert live.queue_eta(now=1.0) == 40.0  # their 3 shots, then our 1
    for _ in range(2):  # a resumed job's history repeats what it did before the restart
        live.apply(SegmentDone(job_id="t", segment="a", path="x.mp4", frames=17, seconds=9.0, ts=2.0))
    assert live.queue_eta(now=2.0) == 30.0 and live.segments["a"].state == "queued"
    assert live.elsewhere_line() == "queued behind theirs.toml's render"


@pytest.mark.parametrize(("state", "error", "news"), [
    ("done", "", "✔ render done: the shots are on disk"),
    ("failed", "unknown model preset 'tny'", "✖ error: unknown model preset 'tny'"),
    ("cancelled", "", "render cancelled"),
])
def test_a_job_that_ended_before_the_editor_attached_ends_in_the_editor(state: str, error: str, news: str) -> None:
    """The editor marks its shots queued on submitting; the worker it started may end the job
    (all from the cache, or a failure at once) before the editor attaches: the snapshot says so."""
    live = LiveState("/p/mine.toml")
    live.apply(JobQueued(job_id="m", storyboard="/p/mine.toml", segments=["a", "b"], ts=0.5))
    assert live.segments["a"].state == "queued" and live.running
    live.apply(StatusSnapshot(pid=7, project="/p", ts=1.0, jobs=[
        JobInfo(job_id="m", storyboard="/p/mine.toml", segments=["a", "b"], state=state, error=error)]))
    assert {sid: s.state for sid, s in live.segments.items()} == {"a": "", "b": ""}
    assert not live.running and live.news == news
    live.apply(StatusSnapshot(pid=7, project="/p", ts=2.0, jobs=[
        JobInfo(job_id="m", storyboard="/p/mine.toml", segments=["a", "b"], state=state, error=error)]))
    assert list(live.log).count(news) == 1  # said once, not again at every snapshot


def test_an_ended_job_stays_ended_whatever_comes_late() -> None:
    """The editor's own JobQueued may come after the snapshot that says the job failed (the
    follower attached before the submit thread posted it); and a job the link lost mid-stage
    ends with its shot rendering and a timer running: neither may stay so."""
    live = LiveState("/p/mine.toml")
    failed = JobInfo(job_id="m", storyboard="/p/mine.toml", segments=["a"], state="failed", error="bad preset")
    live.apply(StatusSnapshot(pid=7, project="/p", ts=1.0, jobs=[failed]))
    live.apply(JobQueued(job_id="m", storyboard="/p/mine.toml", segments=["a"], ts=1.5))
    assert live.segments.get("a") is None or live.segments["a"].state == "", live.segments
    assert not live.running and live.jobs["m"].state == "failed"

    live = LiveState("/p/mine.toml")
    live.apply(JobStarted(job_id="r", storyboard="/p/mine.toml", segments=["a"], ts=1.0))
    live.apply(StageStarted(job_id="r", segment="a", stage="draft", plan="cpu", ts=1.1))
    assert live.segments["a"].state == "rendering" and live.timers["draft"].state == "running"
    live.apply(StatusSnapshot(pid=8, project="/p", ts=5.0, jobs=[
        JobInfo(job_id="r", storyboard="/p/mine.toml", segments=["a"], state="done")]))
    assert live.segments["a"].state == "" and live.timers["draft"].state == "stopped"
    assert live.news == "✔ render done: the shots are on disk"


def test_an_end_replayed_before_the_snapshot_is_not_undone_by_it() -> None:
    """Attaching, the follower replays a running job's journal, then hands over the snapshot.
    An end journaled between the two (the job failed meanwhile) came first, and the snapshot
    that still said "running" put the job and its shot back to running, for good: the live copy
    of that end is dropped as already replayed."""
    live = LiveState("/p/mine.toml")
    for ev in (JobStarted(job_id="r", storyboard="/p/mine.toml", segments=["a"], ts=1.0),
               StageStarted(job_id="r", segment="a", stage="draft", plan="cpu", ts=1.1),
               ErrorEvent(job_id="r", segment="a", stage="draft", kind="internal", message="boom", ts=2.0),
               StatusSnapshot(pid=7, project="/p", ts=1.5, jobs=[
                   JobInfo(job_id="r", storyboard="/p/mine.toml", segments=["a"], state="running",
                           segment="a", stage="draft", step=1, total=8)])):
        live.apply(ev)
    assert live.jobs["r"].state == "failed" and live.segments["a"].state == "failed"
    assert not live.running


def test_a_takes_job_that_ended_unseen_leaves_no_take_waiting() -> None:
    live = LiveState("/p/mine.toml")
    live.apply(JobQueued(job_id="t", storyboard="/p/mine.toml", segments=["a"], seeds=[1, 2], ts=0.5))
    assert [k.state for k in live.takes["a"].takes.values()] == ["queued", "queued"]
    live.apply(StatusSnapshot(pid=7, project="/p", ts=1.0, jobs=[
        JobInfo(job_id="t", storyboard="/p/mine.toml", segments=["a"], seeds=[1, 2], state="cancelled")]))
    assert [k.state for k in live.takes["a"].takes.values()] == ["cancelled", "cancelled"]
    assert live.segments["a"].state == "" and live.news == "render cancelled"
