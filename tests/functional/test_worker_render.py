"""The worker rendering for real (tiny preset, CPU): crashes, dead clients, OOM, many subscribers.

Full renders are the expensive part, so there are two: ``reference`` (an uninterrupted
render watched by two subscribers while the client that submitted it is killed) and
the kill -9 test, whose film must decode to the reference's frames. The OOM tests
start from a copy of the reference's draft cache entries, because what they check
(the refine stage and everything after it) does not depend on how the drafts were made.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.wire import protocol
from pipeline.wire.framing import lock_holder
from pipeline.worker.client import EventStream, WorkerClient
from pipeline.worker.journal import Journal
from tests.functional.conftest import (
    checkout_env,
    decode_frames,
    stop_worker_or_kill,
    tiny_storyboard,
    wait_until,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

STORYBOARD = tiny_storyboard(
    [dict(id="one", prompt="a red lighthouse at dawn", frames=9),
     dict(id="two", prompt="the beam sweeps over the sea", frames=9)],
    title="worker render test", fps=8, seed=5, preset="tiny", output_size=[192, 128], draft_size=[96, 64],
    enhance=False)
TERMINAL = (protocol.JobFinished, protocol.ErrorEvent, protocol.JobCancelled)
RENDER_TIMEOUT = 600


def _project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    story = folder / "story.toml"
    story.write_text(STORYBOARD)
    return story


class Collector(threading.Thread):
    """Reads a subscription in the background until the first job ends; keeps the raw lines."""

    def __init__(self, stream: EventStream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.events: list[protocol.Event] = []
        self.lines: list[bytes] = []

    def run(self) -> None:
        for event in self.stream:
            self.events.append(event)
            self.lines.append(protocol.encode(event))
            if isinstance(event, TERMINAL) and event.job_id:
                break

    def finish(self) -> list[protocol.Event]:
        self.join(RENDER_TIMEOUT)
        assert not self.is_alive(), "the job did not end in time"
        self.stream.close()
        return self.events


def _final(project: Path) -> Path:
    return project / "renders" / "story" / "final.mp4"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("reference")
    story = _project(folder)
    try:
        client = WorkerClient.connect(folder, idle_timeout=600)
        watchers = [Collector(client.events()), Collector(client.events())]
        for w in watchers:
            w.start()

        # The submitting client is its own process (`sulphur render --attach --json`)...
        with open(folder / "attach.stderr", "wb") as err:
            attach = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "render", str(story), "--attach", "--json"],
                                      stdout=subprocess.PIPE, stderr=err, env=checkout_env())
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in attach.stdout], daemon=True).start()  # type: ignore[union-attr]
        printed: list[protocol.Event] = []
        while not any(isinstance(e, protocol.StageStarted) and (e.segment, e.stage) == ("one", "refine")
                      for e in printed):
            printed.append(protocol.decode_event(lines.get(timeout=300)))
        # ... and it dies mid-render.
        attach.kill()
        attach.wait()
        late = client.events()  # a new client attaching after that
        late_snapshot = next(late)
        late_watcher = Collector(late)
        late_watcher.start()
        events = [w.finish() for w in watchers]
        late_watcher.finish()
        status_after = client.status()
        client.close()
        yield {"folder": folder, "story": story, "printed": printed, "late_snapshot": late_snapshot,
               "late": late_watcher, "watchers": watchers, "events": events, "status_after": status_after}
    finally:
        stop_worker_or_kill(folder)


def test_killing_the_submitting_client_does_not_stop_the_render(reference: dict) -> None:
    printed = reference["printed"]
    job = printed[0].job_id
    assert isinstance(printed[0], protocol.JobQueued) and all(e.job_id == job for e in printed)
    # The new client saw the job running, at the point the dead one had last seen or later.
    snap = reference["late_snapshot"]
    assert isinstance(snap, protocol.StatusSnapshot)
    (info,) = [j for j in snap.jobs if j.job_id == job]
    assert info.state == "running" and info.segments == ["one", "two"]
    order = [(s, st) for s in ("one", "two") for st in ("draft", "refine", "upscale", "encode")]
    assert order.index((info.segment, info.stage)) >= order.index(("one", "refine"))
    assert info.total > 0 and 0 <= info.step <= info.total
    # It went on to finish, and the late client's events are the tail of everyone's.
    finished = [e for e in reference["events"][0] if isinstance(e, protocol.JobFinished)]
    assert finished and finished[0].job_id == job and Path(finished[0].path) == _final(reference["folder"])
    late_lines = reference["late"].lines
    assert late_lines and reference["watchers"][0].lines[-len(late_lines):] == late_lines
    (done,) = [j for j in reference["status_after"].jobs if j.job_id == job]
    assert done.state == "done"
    assert len(decode_frames(_final(reference["folder"]))) == 9 + 9 - 1  # the chained seam frame is shared


def test_two_subscribers_receive_the_same_event_sequence(reference: dict) -> None:
    a, b = (w.lines for w in reference["watchers"])
    assert json.loads(a[0])["type"] == json.loads(b[0])["type"] == "status"  # each one's own snapshot
    a, b = a[1:], b[1:]
    assert a == b  # then byte for byte, high-rate progress included
    kinds = Counter(json.loads(line)["type"] for line in a)
    assert kinds["job_queued"] == kinds["job_started"] == kinds["job_finished"] == 1
    assert kinds["stage_finished"] >= 8 and kinds["step_progress"] > 0


@pytest.fixture
def stopped_after(tmp_path: Path):  # noqa: ANN201
    """Whatever worker a test leaves running in its tmp_path is stopped afterwards."""
    yield tmp_path
    stop_worker_or_kill(tmp_path)


def test_kill_9_mid_stage_resumes_with_only_that_stage_run_twice(reference: dict, stopped_after: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = stopped_after
    story = _project(tmp_path)
    # The first worker's drafts dawdle 6 s at their start, so the kill lands inside segment two's draft
    # (and after segment one's encode, which runs behind that draft: issue 20).
    monkeypatch.setenv("SULPHUR_FAULT_SLOW", "draft:6")
    client = WorkerClient.connect(tmp_path, idle_timeout=600)
    stream = client.events()
    next(stream)
    # The client command that submits and follows: `sulphur render --attach --json`, its own process.
    env = {k: v for k, v in os.environ.items() if k != "SULPHUR_FAULT_SLOW"}
    attach = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "render", str(story), "--attach", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=checkout_env(env))
    job, seen = "", set()
    for event in stream:
        assert not isinstance(event, TERMINAL), event
        job = job or event.job_id
        if isinstance(event, protocol.StageStarted | protocol.StageFinished):
            seen.add((type(event).__name__, event.segment, event.stage))
        if {("StageStarted", "two", "draft"), ("StageFinished", "one", "encode")} <= seen:
            break
    cache = tmp_path / ".sulphur" / "cache"
    # Inside the stage: its output folder is being built (and the 3 s fault sleep has begun).
    wait_until(lambda: list((cache / "draft").glob("*/.*.partial")), timeout=10, what="the draft's partial entry")
    pid = lock_holder(tmp_path)
    assert pid and pid > 0
    os.kill(pid, signal.SIGKILL)
    client.close()

    # The attached client notices, starts a new worker, which resumes the job, and follows it to the end.
    out, err = attach.communicate(timeout=RENDER_TIMEOUT)
    assert attach.returncode == 0, err.decode()[-2000:]
    printed = [protocol.decode_event(line) for line in out.splitlines()]
    assert all(e.job_id == job for e in printed)
    assert any(isinstance(e, protocol.Log) and "worker died" in e.message for e in printed)
    assert isinstance(printed[-1], protocol.JobFinished) and Path(printed[-1].path) == _final(tmp_path)
    new_pid = lock_holder(tmp_path)
    assert new_pid not in (None, pid)
    with WorkerClient.connect(tmp_path, start=False) as c2:
        assert [j.state for j in c2.status().jobs if j.job_id == job] == ["done"]

    # The journal holds both worker lives' events: only the interrupted stage started twice.
    journal = Journal(tmp_path / ".sulphur" / "journal.db")
    history = journal.events(job)
    journal.close()
    started = Counter((e.segment, e.stage) for e in history if isinstance(e, protocol.StageStarted) and e.segment)
    finished = Counter((e.segment, e.stage) for e in history if isinstance(e, protocol.StageFinished) and e.segment)
    cached = Counter((e.segment, e.stage) for e in history if isinstance(e, protocol.StageCached))
    stages = [(s, st) for s in ("one", "two") for st in ("draft", "refine", "upscale", "encode")]
    assert started == Counter({k: (2 if k == ("two", "draft") else 1) for k in stages})
    assert finished == Counter(dict.fromkeys(stages, 1))
    assert set(cached) == {("one", "draft"), ("one", "refine"), ("one", "upscale"), ("one", "encode")}
    assert sum(isinstance(e, protocol.JobStarted) for e in history) == 2
    assert any(isinstance(e, protocol.Log) and "resuming job" in e.message for e in history)
    assert not list(cache.rglob("*.partial"))
    # Same seed, same film: the resumed render decodes to the uninterrupted one's frames.
    np.testing.assert_array_equal(decode_frames(_final(tmp_path)), decode_frames(_final(reference["folder"])))


def _seeded(reference: dict, folder: Path) -> Path:
    """A fresh project holding only the reference's draft entries."""
    story = _project(folder)
    shutil.copytree(reference["folder"] / ".sulphur" / "cache" / "draft", folder / ".sulphur" / "cache" / "draft")
    return story


def _run_job(folder: Path, story: Path) -> list[protocol.Event]:
    client = WorkerClient.connect(folder, idle_timeout=600)
    watcher = Collector(client.events())
    watcher.start()
    client.submit(story)
    events = watcher.finish()
    client.close()
    return events


def test_planted_oom_falls_back_to_the_next_plan_and_finishes(reference: dict, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.memory.planner import plan_ladder
    from pipeline.models.registry import get_preset
    from pipeline.project.storyboard import load

    story = _seeded(reference, tmp_path)
    # On a CPU the planner offers one plan unless asked for a lean rung (the worker inherits this).
    monkeypatch.setenv("SULPHUR_DEVICE_LADDER", "cpu,cpu-lean")
    ladder = plan_ladder("refine", get_preset("tiny"), load(story).project)
    if len(ladder) < 2:
        pytest.skip(f"memory.plan_ladder offers one refine plan here ({ladder[0].describe()}) and does not "
                    "honour SULPHUR_DEVICE_LADDER: nothing to fall back to")
    monkeypatch.setenv("SULPHUR_FAULT_OOM", "refine:1")  # the first refine attempt runs out of memory
    try:
        events = _run_job(tmp_path, story)
    finally:
        stop_worker_or_kill(tmp_path)
    (fallback,) = [e for e in events if isinstance(e, protocol.PlanFallback)]
    assert (fallback.segment, fallback.stage) == ("one", "refine")
    assert (fallback.failed_plan, fallback.next_plan) == (ladder[0].describe(), ladder[1].describe())
    assert "out of memory" in fallback.reason.lower()
    (refined,) = [e for e in events if isinstance(e, protocol.StageFinished) and (e.segment, e.stage) == ("one", "refine")]
    assert refined.plan == ladder[1].describe()
    assert isinstance(events[-1], protocol.JobFinished) and _final(tmp_path).is_file()


def test_oom_on_every_plan_fails_clearly_and_leaves_no_cache_entry(reference: dict, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    story = _seeded(reference, tmp_path)
    monkeypatch.setenv("SULPHUR_FAULT_OOM", "refine:all")
    try:
        events = _run_job(tmp_path, story)
        with WorkerClient.connect(tmp_path, start=False) as client:
            jobs = client.status().jobs  # the worker is still up and says what happened
    finally:
        stop_worker_or_kill(tmp_path)
    error = events[-1]
    assert isinstance(error, protocol.ErrorEvent), error
    assert (error.kind, error.stage, error.segment) == ("oom", "refine", "one")
    assert "out of memory with every plan" in error.message
    starts = [e for e in events if isinstance(e, protocol.StageStarted) and e.stage == "refine"]
    fallbacks = [e for e in events if isinstance(e, protocol.PlanFallback)]
    assert len(starts) == len(fallbacks) + 1  # every plan was tried once
    assert [j.state for j in jobs] == ["failed"] and "out of memory" in jobs[0].error
    refine = tmp_path / ".sulphur" / "cache" / "refine"
    assert not list(refine.glob("*/*/meta.json")) and not list(refine.rglob("*.partial"))
    assert not _final(tmp_path).exists()
