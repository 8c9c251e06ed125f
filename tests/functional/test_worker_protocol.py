"""The worker as a real process on a real Unix socket, without rendering anything heavy.

Jobs here use a preset that does not exist, so each one fails in the runner within a
moment: enough to exercise the queue, the journal and the events without a render.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.cli.attach import main_status
from pipeline.wire import protocol
from pipeline.wire.framing import lock_holder, socket_path
from pipeline.worker.client import WorkerClient, WorkerError, stop_worker
from pipeline.worker.journal import Journal
from tests.functional.conftest import checkout_env, stop_worker_or_kill, tiny_storyboard, wait_until
from tests.raw_socket import Raw

ROOT = Path(__file__).resolve().parents[2]

STORYBOARD = tiny_storyboard(
    [dict(id="one", prompt="a red lighthouse", frames=9), dict(id="two", prompt="the beam sweeps", frames=9)],
    title="protocol test", fps=8, preset="no-such-preset", output_size=[192, 128], draft_size=[96, 64],
    enhance=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("proto")
    (folder / "story.toml").write_text(STORYBOARD)
    client = WorkerClient.connect(folder, idle_timeout=300)
    client.close()
    yield folder
    stop_worker_or_kill(folder)


def _bad_messages(story: Path) -> list[bytes]:
    """200 lines a worker must refuse, one Reject each (deterministic)."""
    rng = random.Random(200)
    out: list[bytes] = []
    garbage = [b"{", b"}", b"[]", b"null", b"42", b'"submit"', b"{'type': 'submit'}", b"\xff\xfe\x00junk",
               b'{"type":', b'{"type": null}', b"{}", b'{"id": "x"}', b"true", b"submit please"]
    for i in range(60):
        g = garbage[i % len(garbage)]
        out.append(g + bytes(rng.randrange(33, 127) for _ in range(i % 7)) if i >= len(garbage) else g)
    valid = [protocol.encode(protocol.Submit(id=f"t{i}", storyboard=str(story), mode="segments",
                                             segments=["one"])).rstrip(b"\n") for i in range(50)]
    for v in valid:  # truncated: every strict prefix of a JSON object is invalid JSON
        out.append(v[:rng.randrange(1, len(v) - 1)])
    unknown = [b'{"type": "explode", "id": "u%d"}', b'{"type": "job_queued", "storyboard": "x", "segments": [], "id": "u%d"}',
               b'{"type": "ack", "id": "u%d"}', b'{"type": "status", "pid": 1, "project": "", "jobs": [], "id": "u%d"}',
               b'{"type": "SUBMIT", "storyboard": "x", "id": "u%d"}']
    for i in range(50):
        out.append(unknown[i % len(unknown)].replace(b"%d", str(i).encode()))
    wrong = [b'{"type": "submit", "storyboard": 5, "id": "w%d"}', b'{"type": "cancel", "job_id": [1], "id": "w%d"}',
             b'{"type": "submit", "storyboard": "x", "mode": "sideways", "id": "w%d"}',
             b'{"type": "submit", "storyboard": "x", "segments": "one", "id": "w%d"}']
    for i in range(20):
        out.append(wrong[i % len(wrong)].replace(b"%d", str(i).encode()))
    for i in range(20):  # oversized: some JSON-looking, some not
        size = protocol.MAX_LINE_BYTES + 1 + rng.randrange(0, 200_000)
        body = b'{"type": "get_status", "id": "' + b"o" * size + b'"}' if i % 2 else b"x" * size
        out.append(body)
    assert len(out) == 200
    return out


def test_two_hundred_bad_messages_each_get_a_reject_and_change_nothing(project: Path) -> None:
    story = project / "story.toml"
    with WorkerClient.connect(project, start=False) as client:
        job = client.submit(story, "segments", ["one"])
        wait_until(lambda: next(j for j in client.status().jobs if j.job_id == job).state == "failed",
              what="the job with an unknown preset to fail")
        before = client.status()
    journal_before = Journal(project / ".sulphur" / "journal.db")
    rows_before = [r.__dict__ for r in journal_before.jobs()]
    events_before = len(journal_before.events())
    journal_before.close()

    raw = Raw(project)
    rejects = 0
    for line in _bad_messages(story):
        raw.send(line + b"\n")
        reply = raw.reply()
        assert isinstance(reply, protocol.Reject), (line[:80], reply)
        assert reply.error
        rejects += 1
        if line.startswith(b'{"type": "explode", "id": "u'):
            assert reply.id.startswith("u")  # the id is echoed when the line is JSON at all
    assert rejects == 200
    # The same connection is still in step after all that: a good request works.
    raw.send(protocol.encode(protocol.GetStatus(id="after")))
    snap = raw.reply()
    assert isinstance(snap, protocol.StatusSnapshot) and snap.pid == before.pid
    assert "tiny" in snap.presets and snap.presets == sorted(snap.presets), "what the editor checks a storyboard by"
    # A client that dies mid-line costs nothing either.
    raw.send(b'{"type": "submit", "storyb')
    raw.close()

    with WorkerClient.connect(project, start=False) as client:
        after = client.status()
    assert after.pid == before.pid == lock_holder(project)
    assert [j.job_id for j in after.jobs] == [j.job_id for j in before.jobs]
    journal = Journal(project / ".sulphur" / "journal.db")
    assert journal.integrity() == "ok"
    assert [r.__dict__ for r in journal.jobs()] == rows_before
    assert len(journal.events()) == events_before
    journal.close()


def test_rejected_submits_say_why_and_queue_nothing(project: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.toml").write_text(STORYBOARD)
    (project / "broken.toml").write_text("[project\nfps = 8\n")
    with WorkerClient.connect(project, start=False) as client:
        n = len(client.status().jobs)
        cases = [
            (dict(storyboard=tmp_path / "elsewhere.toml"), "not in this worker's project folder"),
            (dict(storyboard=project / "broken.toml"), "TOML syntax error"),
            (dict(storyboard=project / "missing.toml"), "file not found"),
            (dict(storyboard=project / "story.toml", mode="segments", segments=["nine"]), "no segment with id 'nine'"),
            (dict(storyboard=project / "story.toml", mode="from", segments=[]), "exactly one segment"),
        ]
        for kwargs, message in cases:
            with pytest.raises(WorkerError, match=message):
                client.submit(**kwargs)
        assert len(client.status().jobs) == n
        with pytest.raises(WorkerError, match="unknown job"):
            client.cancel("nope")


def test_subscribers_get_snapshot_then_identical_events(project: Path) -> None:
    with WorkerClient.connect(project, start=False) as client:
        streams = [client.events(), client.events()]
        firsts = [next(s) for s in streams]
        assert all(isinstance(f, protocol.StatusSnapshot) and f.pid == lock_holder(project) for f in firsts)
        job = client.submit(project / "story.toml", "from", ["two"])
        seen: list[list[bytes]] = []
        for s in streams:
            lines = []
            for event in s:
                if event.job_id == job:
                    lines.append(protocol.encode(event))
                if isinstance(event, protocol.ErrorEvent) and event.job_id == job:
                    break
            seen.append(lines)
    kinds = [json.loads(line)["type"] for line in seen[0]]
    assert kinds[0] == "job_queued" and kinds[-1] == "error"
    assert json.loads(seen[0][-1])["kind"] == "unknown_preset"
    assert seen[0] == seen[1]  # byte for byte, timestamps included


def test_a_quiet_subscription_outlives_the_request_timeout(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events can be minutes apart (one long diffusion step): a subscription must not time out."""
    import pipeline.worker.client as C

    monkeypatch.setattr(C, "REQUEST_TIMEOUT", 0.3)
    with WorkerClient.connect(project, start=False) as client:
        stream = client.events()
        next(stream)
        got: list[protocol.Event] = []
        reader = threading.Thread(target=lambda: got.append(next(stream, None)), daemon=True)  # type: ignore[arg-type]
        reader.start()
        time.sleep(1.0)  # the reader waits longer than the request timeout, with nothing to hear
        job = client.submit(project / "story.toml", "segments", ["two"])
        reader.join(10)
        assert got and got[0] is not None and got[0].job_id == job


def test_socket_is_private_and_a_second_worker_refuses(project: Path) -> None:
    mode = stat.S_IMODE(os.stat(socket_path(project)).st_mode)
    assert mode == 0o600
    holder = lock_holder(project)
    assert holder and holder > 0
    env = checkout_env()
    second = subprocess.run([sys.executable, "-m", "pipeline.cli", "worker", "--foreground", "--project", str(project)],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert second.returncode == 1
    assert f"PID {holder}" in second.stderr
    assert lock_holder(project) == holder  # the first one is untouched


def test_render_attach_exits_2_for_a_storyboard_the_worker_refuses(project: Path) -> None:
    """An unknown preset is a storyboard refusal: ``render`` exits 2 for it, and so does
    ``render --attach``, whose worker refuses it once the job runs (it exited 1)."""
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "render", str(project / "story.toml"), "--attach"],
                            capture_output=True, text=True, timeout=120, env=checkout_env(), check=False)
    assert result.returncode == 2 and "no-such-preset" in result.stderr, (result.returncode, result.stderr)


def test_status_prints_the_snapshot(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_status(argparse.Namespace(project=project, json=True)) == 0
    snap = protocol.decode_event(capsys.readouterr().out)
    assert isinstance(snap, protocol.StatusSnapshot) and snap.pid == lock_holder(project)
    assert any(j.state == "failed" and "no-such-preset" in j.error for j in snap.jobs)
    assert main_status(argparse.Namespace(project=project, json=False)) == 0
    text = capsys.readouterr().out
    assert f"worker PID {snap.pid}" in text and "failed" in text


def test_stop_idle_timeout_and_offline_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A project deep enough that its socket path exceeds what sockaddr_un can hold (107 bytes).
    tmp_path = tmp_path / ("a-project-folder-with-a-long-name-" * 3) / "shots"
    tmp_path.mkdir(parents=True)
    assert len(str(socket_path(tmp_path))) > 108
    (tmp_path / "story.toml").write_text(STORYBOARD)
    # --stop: a clean exit that removes the socket and frees the lock.
    client = WorkerClient.connect(tmp_path, idle_timeout=300)
    pid = client.status().pid
    client.close()
    assert stop_worker(tmp_path, timeout=60) == 0
    assert lock_holder(tmp_path) is None and not socket_path(tmp_path).exists()
    with pytest.raises(ProcessLookupError):
        wait_until(lambda: os.kill(pid, 0) and False, timeout=10)  # the process is gone
    # The idle timeout stops a worker nobody uses.
    client = WorkerClient.connect(tmp_path, idle_timeout=1.0)
    client.close()
    wait_until(lambda: lock_holder(tmp_path) is None, timeout=60, what="the idle worker to exit")
    assert "idle for 1 s" in (tmp_path / ".sulphur" / "worker.log").read_text()
    # With no worker and nothing pending, status reads the journal and starts nothing.
    assert main_status(argparse.Namespace(project=tmp_path, json=False)) == 0
    assert "no worker running" in capsys.readouterr().out
    assert lock_holder(tmp_path) is None


def test_interrupted_jobs_resume_and_a_crash_loop_stops(tmp_path: Path) -> None:
    """Journal rows exactly as a worker killed mid-job leaves them; a new worker picks them up."""
    from pipeline.worker.journal import JobRecord
    from pipeline.worker.server import MAX_CRASHES

    story = tmp_path / "story.toml"
    story.write_text(STORYBOARD)
    journal = Journal(tmp_path / ".sulphur" / "journal.db")
    journal.add_job(JobRecord(id="crashy", storyboard=str(story), selected=["one", "two"], state="running",
                              attempts=MAX_CRASHES, crashes=MAX_CRASHES - 1, created=1.0))
    journal.add_job(JobRecord(id="victim", storyboard=str(story), selected=["one", "two"], state="running",
                              attempts=1, created=2.0))
    journal.add_job(JobRecord(id="waiting", storyboard=str(story), selected=["one", "two"], created=3.0))
    journal.close()
    # No worker runs, unfinished jobs are journaled: `sulphur status` starts a worker to resume them.
    assert main_status(argparse.Namespace(project=tmp_path, json=True)) == 0
    assert lock_holder(tmp_path) is not None
    with WorkerClient.connect(tmp_path, start=False) as client:
        wait_until(lambda: all(j.state not in ("queued", "running") for j in client.status().jobs),
              what="the recovered jobs to be dealt with")
        jobs = {j.job_id: j for j in client.status().jobs}
    stop_worker_or_kill(tmp_path)
    assert jobs["crashy"].state == "failed" and "died 3 times" in jobs["crashy"].error
    # The others were run again (and fail in the runner: their preset does not exist).
    assert jobs["victim"].state == jobs["waiting"].state == "failed"
    assert "unknown_preset" in jobs["victim"].error
    journal = Journal(tmp_path / ".sulphur" / "journal.db")
    assert journal.get("crashy").attempts == MAX_CRASHES  # type: ignore[union-attr]  # not started again
    assert journal.get("victim").attempts == 2  # type: ignore[union-attr]
    kinds = [(type(e).__name__, e.job_id) for e in journal.events()]
    journal.close()
    assert ("ErrorEvent", "crashy") in kinds and ("Log", "victim") in kinds
    assert ("JobStarted", "crashy") not in kinds


def test_cancel_queued_and_running_jobs_and_stop_checkpoints(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Real tiny-preset jobs held inside their draft stage by the runner's cancellable slow fault."""
    story = tmp_path / "story.toml"
    story.write_text(STORYBOARD.replace('"no-such-preset"', '"tiny"'))
    monkeypatch.setenv("SULPHUR_FAULT_SLOW", "draft:120")
    draft = tmp_path / ".sulphur" / "cache" / "draft"
    with WorkerClient.connect(tmp_path, idle_timeout=300) as client:
        stream = client.events()
        next(stream)
        running = client.submit(story, "segments", ["one"])
        queued = client.submit(story, "segments", ["two"])
        assert client.submit(story, "segments", ["one"]) == running  # already pending: not queued twice

        def until(pred):  # noqa: ANN001, ANN202
            for event in stream:
                if pred(event):
                    return event
            raise AssertionError("stream ended")

        until(lambda e: isinstance(e, protocol.StageStarted) and e.job_id == running and e.stage == "draft")
        client.cancel(queued)
        assert until(lambda e: isinstance(e, protocol.JobCancelled)).job_id == queued
        t0 = time.monotonic()
        client.cancel()  # no id: the running job
        cancelled = until(lambda e: isinstance(e, protocol.JobCancelled))
        assert time.monotonic() - t0 < 30  # the 120 s sleep was interrupted
        assert (cancelled.job_id, cancelled.segment, cancelled.stage) == (running, "one", "draft")
        states = {j.job_id: j.state for j in client.status().jobs}
        assert states[running] == states[queued] == "cancelled"
        with pytest.raises(WorkerError, match="already cancelled"):
            client.cancel(running)
        assert not list(draft.glob("*/*/meta.json")) and not list(draft.rglob("*.partial"))

        # --stop while a job sits in its draft: the stage is abandoned, the job stays queued, and
        # the client following it (`sulphur render --attach`) says so instead of restarting the worker.
        attach = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "render", str(story), "--attach", "--segment", "one"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=checkout_env())
        again = until(lambda e: isinstance(e, protocol.StageStarted) and e.stage == "draft").job_id
        assert stop_worker(tmp_path, timeout=60) == 0
        assert any(isinstance(e, protocol.Log) and "checkpointed" in e.message for e in stream)
        _, err = attach.communicate(timeout=60)
        assert attach.returncode == 75 and b"stays queued" in err, err
        assert lock_holder(tmp_path) is None  # nobody started a new worker
    journal = Journal(tmp_path / ".sulphur" / "journal.db")
    assert journal.get(again).state == "queued"  # type: ignore[union-attr]
    journal.close()
    assert not list(draft.glob("*/*/meta.json")) and not list(draft.rglob("*.partial"))


def test_a_slow_subscriber_keeps_lifecycle_events_and_sheds_progress() -> None:
    """The per-client queue, driven through a real socket pair whose far end stops reading."""
    from pipeline.worker import server as W

    n_steps, every = 20000, 16
    n_life = len(range(0, n_steps, every))

    async def scenario() -> tuple[list[str], int, int]:
        a, b = socket.socketpair()
        _, writer = await asyncio.open_unix_connection(sock=a)
        client = W._Client(writer)
        longest = 0
        for i in range(n_steps):
            client.push(protocol.encode(protocol.StepProgress(segment="s", stage="x", step=i, total=n_steps)), True)
            if i % every == 0:
                client.push(protocol.encode(protocol.StageStarted(segment="s", stage=f"st{i // every}")))
                await asyncio.sleep(0)  # let the drain task write until the socket is full
            longest = max(longest, sum(1 for _, drop in client.queue if drop))
        # The reader wakes up and drains everything that was kept.
        b.setblocking(False)
        got = b""
        deadline = time.monotonic() + 30
        while got.count(b'"stage_started"') < n_life and time.monotonic() < deadline:
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.01)
        client.abort()
        b.close()
        stages = [json.loads(line)["stage"] for line in got.split(b"\n") if b'"stage_started"' in line]
        return stages, client.dropped, longest

    stages, dropped, longest = asyncio.run(scenario())
    assert stages == [f"st{i}" for i in range(n_life)]  # every lifecycle event, in order
    assert dropped > 0 and longest <= W.QUEUE_SOFT  # progress was shed instead of piling up


def test_status_of_a_folder_that_does_not_exist_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --project is not "no worker running" (which reads as a healthy, idle project)."""
    missing = tmp_path / "no-such-project"
    assert main_status(argparse.Namespace(project=missing, json=False)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sulphur status: {missing}: no such project folder"]
    assert not missing.exists(), "nothing is created for it"
