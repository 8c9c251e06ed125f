"""The journal gives back exactly what was written: every field of a job, every state change,
from any thread, in a project folder that does not exist yet."""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.wire import protocol
from pipeline.worker.journal import JobRecord, Journal


def _record(i: int) -> JobRecord:
    return JobRecord(id=f"job{i}", storyboard=f"/p/{i}.toml", mode="from", segments=[f"a{i}", "b"],
                     selected=[f"b{i}"], preset=f"preset{i}", state="queued", created=10.0 + i, updated=20.0 + i,
                     attempts=i, crashes=2 * i, error=f"e{i}", result=f"/r/{i}.mp4")


def test_every_field_of_a_job_round_trips(tmp_path: Path) -> None:
    j = Journal(tmp_path / "deep" / "er" / "journal.db")  # folders created as needed
    records = [_record(i) for i in (1, 2)]
    for r in records:
        j.add_job(r)
    assert [asdict(r) for r in j.jobs()] == [asdict(r) for r in records]
    assert j.get("job2") == records[1]
    assert j.get("nope") is None
    j.close()


def test_state_changes_write_error_result_and_attempts(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    j.add_job(_record(0))
    j.set_state("job0", "running", started=True)
    j.set_state("job0", "failed", error="out of memory")
    r = j.get("job0")
    assert r is not None and (r.state, r.error, r.result, r.attempts) == ("failed", "out of memory", "/r/0.mp4", 1)
    assert r.updated > 20.0
    j.set_state("job0", "done", result="/film.mp4")
    r = j.get("job0")
    assert r is not None and (r.state, r.error, r.result, r.attempts) == ("done", "out of memory", "/film.mp4", 1)
    with pytest.raises(ValueError, match="unknown job state 'lost'"):
        j.set_state("job0", "lost")


def test_jobs_filter_by_several_states_and_limit(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    for i, state in enumerate(("queued", "running", "done", "queued")):
        j.add_job(JobRecord(id=f"j{i}", storyboard="s", state=state, created=float(i)))
    assert [r.id for r in j.jobs(("queued", "running"))] == ["j0", "j1", "j3"]
    assert [r.id for r in j.jobs(("done",))] == ["j2"]
    assert [r.id for r in j.jobs(limit=3)] == ["j1", "j2", "j3"]
    assert [r.id for r in j.jobs(("queued",), limit=1)] == ["j3"]


def test_the_journal_is_shared_by_threads(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            j.add_job(JobRecord(id=f"t{i}", storyboard="s", created=float(i)))
            j.append_event(protocol.Log(message=str(i), job_id=f"t{i}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.id for r in j.jobs()) == ["t0", "t1", "t2", "t3"]
    assert [e.message for e in j.events("t2")] == ["2"]


def test_events_keep_their_order_and_skip_unknown_types_in_the_middle(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    j.append_event(protocol.Log(message="first", job_id="a", ts=1.0))
    with j._lock:
        j._db.execute("INSERT INTO events (job_id, ts, type, body) VALUES ('a', 2, 'future', '{\"type\":\"future\"}')")
    j.append_event(protocol.StepProgress(segment="s", stage="draft", step=1, total=2, job_id="b", ts=3.0))
    j.append_event(protocol.Log(message="last", job_id="a", ts=4.0))
    assert [type(e).__name__ for e in j.events()] == ["Log", "StepProgress", "Log"]
    assert [e.message for e in j.events("a")] == ["first", "last"]
    with j._lock:
        kinds = [r[0] for r in j._db.execute("SELECT type FROM events ORDER BY seq")]
    assert kinds == ["log", "future", "step_progress", "log"]
