"""The journal gives back exactly what was written: every field of a job, every state change,
from any thread, in a project folder that does not exist yet."""

from __future__ import annotations

import re
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


# ------------------------------------------------------------------ a worker's start and its housekeeping


def test_a_sound_journal_opens_as_it_is(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    j.add_job(_record(1))
    j.close()
    again, warning = Journal.open_or_reset(tmp_path / "journal.db")
    assert warning == "" and again.quick_check() == "ok" and [r.id for r in again.jobs()] == ["job1"]
    again.close()


def test_a_corrupt_journal_is_moved_aside_with_its_wal_and_a_new_one_started(tmp_path: Path) -> None:
    """A worker must start even when its journal is damaged (a disk error, a copied half file)."""
    path = tmp_path / "journal.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4080)  # a header, then garbage
    Path(f"{path}-wal").write_bytes(b"wal")
    Path(f"{path}-shm").write_bytes(b"shm")
    journal, warning = Journal.open_or_reset(path)
    aside = {p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name}
    base = min(aside, key=len)
    assert re.fullmatch(r"journal\.db\.corrupt-\d{8}-\d{6}", base)  # when it was found, sortable
    assert aside == {base, f"{base}-wal", f"{base}-shm"}
    assert Path(tmp_path / base).read_bytes().startswith(b"SQLite format 3\x00\xff")
    assert warning == (f"{path} was corrupt (file is not a database); moved it to {base} and started a new "
                       "journal (the job history before it is lost; cached stages are kept)")
    assert journal.jobs() == [] and journal.quick_check() == "ok"
    journal.add_job(_record(2))
    assert [r.id for r in journal.jobs()] == ["job2"]
    journal.close()


def test_a_journal_that_cannot_be_opened_is_an_error_not_corruption(tmp_path: Path) -> None:
    """A folder where the file should be (or a full disk) is not a damaged journal: nothing is moved."""
    import sqlite3

    (tmp_path / "journal.db").mkdir()
    with pytest.raises(sqlite3.OperationalError):
        Journal.open_or_reset(tmp_path / "journal.db")
    assert [p.name for p in tmp_path.iterdir()] == ["journal.db"]


def test_a_journal_from_before_takes_gains_the_seeds_column(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "journal.db")
    db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, storyboard TEXT NOT NULL, mode TEXT NOT NULL, segments "
               "TEXT NOT NULL, selected TEXT NOT NULL, preset TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, created "
               "REAL NOT NULL, updated REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, crashes INTEGER NOT NULL "
               "DEFAULT 0, error TEXT NOT NULL DEFAULT '', result TEXT NOT NULL DEFAULT '')")
    db.execute("INSERT INTO jobs VALUES ('old', '/p.toml', 'all', '[]', '[]', '', 'done', 1, 2, 1, 0, '', '')")
    db.commit()
    db.close()
    for _ in range(2):  # migrated once; the second open finds the column
        j = Journal(tmp_path / "journal.db")
        assert j.get("old") is not None and j.get("old").seeds == []
        j.add_job(JobRecord(id=f"takes{_}", storyboard="/p.toml", seeds=[3, 4]))
        assert j.get(f"takes{_}").seeds == [3, 4]
        j.close()


def test_prune_forgets_only_finished_jobs_older_than_the_cut_and_their_events(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    states = ["done", "failed", "cancelled", "queued", "running"]
    n = 2003
    for i in range(n):
        state = states[i % 5]
        j.add_job(JobRecord(id=f"j{i}", storyboard="/p.toml", state=state, created=1.0, updated=float(i)))
        j.append_event(protocol.Log(message=str(i), job_id=f"j{i}", ts=1.0))
    cut = 1900.0
    gone = {f"j{i}" for i in range(n) if states[i % 5] in ("done", "failed", "cancelled") and i < cut}
    assert len(gone) > 1000  # deleted in chunks of 500 (SQLite's limit on bound variables)
    assert j.prune(cut) == len(gone)
    left = {r.id for r in j.jobs()}
    assert left == {f"j{i}" for i in range(n)} - gone
    assert {e.job_id for e in j.events()} == left
    assert j.prune(cut) == 0
    j.close()
