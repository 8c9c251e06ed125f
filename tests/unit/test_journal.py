"""The job journal: committed rows survive a reopen, interrupted jobs come back queued."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeline.wire import protocol
from pipeline.wire.framing import LineBuffer
from pipeline.worker.journal import JobRecord, Journal


def test_jobs_survive_reopen_in_submission_order(tmp_path: Path) -> None:
    db = tmp_path / ".sulphur" / "journal.db"
    j = Journal(db)
    for i in range(3):
        j.add_job(JobRecord(id=f"job{i}", storyboard="/p/s.toml", mode="segments", segments=[f"s{i}"],
                            selected=[f"s{i}"], created=100.0 + i))
    j.set_state("job0", "running", started=True)
    j.set_state("job0", "done", result="/p/renders/s/final.mp4")
    j.set_state("job1", "running", started=True)
    j.close()

    j = Journal(db)
    assert [r.id for r in j.jobs()] == ["job0", "job1", "job2"]
    done = j.get("job0")
    assert done is not None and done.state == "done" and done.attempts == 1
    assert done.result.endswith("final.mp4") and done.segments == ["s0"]
    # job1 was running when its worker died: it is queued again, before job2.
    assert [r.id for r in j.requeue_interrupted()] == ["job1", "job2"]
    assert j.get("job1").attempts == 1 and j.get("job1").crashes == 1  # type: ignore[union-attr]
    assert j.get("job2").crashes == 0  # type: ignore[union-attr]  # it never ran: no crash to count
    assert [r.id for r in j.jobs(limit=2)] == ["job1", "job2"]
    assert j.integrity() == "ok"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_events_round_trip_in_order(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    sent = [protocol.JobQueued(job_id="a", storyboard="s.toml", segments=["x"]),
            protocol.StageStarted(job_id="a", segment="x", stage="draft", plan="cpu"),
            protocol.StageStarted(job_id="b", segment="y", stage="draft"),
            protocol.ErrorEvent(job_id="a", kind="oom", message="out of memory", stage="draft", segment="x")]
    for e in sent:
        j.append_event(e)
    assert j.events("a") == [sent[0], sent[1], sent[3]]
    assert len(j.events()) == 4


def test_unknown_state_is_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    j.add_job(JobRecord(id="a", storyboard="s.toml"))
    with pytest.raises(ValueError):
        j.set_state("a", "exploded")


def test_line_buffer_rejects_oversized_lines_once_and_resynchronises() -> None:
    buf = LineBuffer(limit=10)
    assert buf.feed(b"short\nalso") == [b"short"]
    assert buf.feed(b" ok\n") == [b"also ok"]
    # 25 bytes without a newline: reported once as soon as it passes the limit.
    assert buf.feed(b"x" * 12) == [None]
    assert buf.feed(b"y" * 13) == []
    assert buf.feed(b"tail\nnext\n") == [b"next"]
    # An oversized line that arrives whole is reported too, and the next line survives.
    assert buf.feed(b"z" * 11 + b"\nfine\n") == [None, b"fine"]
    assert buf.pending == 0


def test_client_side_modules_never_import_torch() -> None:
    """The TUI imports pipeline.worker.client (and through it the journal): no torch may come along."""
    import subprocess
    import sys

    code = ("import sys, pipeline.worker.client, pipeline.worker.journal, pipeline.wire.framing, pipeline.cli.headless; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
