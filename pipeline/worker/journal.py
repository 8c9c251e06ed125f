"""The worker's job journal: SQLite in WAL mode at ``<project>/.sulphur/journal.db``.

A job row is committed before the submitting client gets its ``Ack``, so an
acknowledged job survives any crash. States move queued → running → done / failed /
cancelled; a worker that starts and finds ``running`` rows knows it was killed mid-job
and puts them back to ``queued``. Lifecycle events are appended too, so a restarted
worker (or ``sulphur status`` with no worker at all) can tell what happened.

Torch-free: ``sulphur status`` reads it when no worker runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.wire.protocol import Event, ProtocolError, decode_event, encode

STATES = ("queued", "running", "done", "failed", "cancelled")
PENDING = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id         TEXT PRIMARY KEY,
    storyboard TEXT NOT NULL,
    mode       TEXT NOT NULL,
    segments   TEXT NOT NULL,            -- JSON list: what the client asked for
    selected   TEXT NOT NULL,            -- JSON list: the segment ids this job renders
    preset     TEXT NOT NULL DEFAULT '',
    state      TEXT NOT NULL,
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,  -- times a worker started running it
    crashes    INTEGER NOT NULL DEFAULT 0,  -- times its worker died while running it
    error      TEXT NOT NULL DEFAULT '',
    result     TEXT NOT NULL DEFAULT '',    -- path of the film when done
    seeds      TEXT NOT NULL DEFAULT '[]'   -- JSON list: a takes job's seeds
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created);
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts     REAL NOT NULL,
    type   TEXT NOT NULL,
    body   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
"""


@dataclass
class JobRecord:
    id: str
    storyboard: str
    mode: str = "all"
    segments: list[str] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    preset: str = ""
    state: str = "queued"
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    attempts: int = 0
    crashes: int = 0
    error: str = ""
    result: str = ""
    seeds: list[int] = field(default_factory=list)  # a takes job: the seeds of segments[0]


class Journal:
    """One connection shared by the worker's threads behind a lock (writes are tiny and rare)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every write below is one statement, committed when it returns.
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an Ack promises the job is on disk even if the machine loses power.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "seeds" not in columns:  # a journal from before takes jobs
            self._db.execute("ALTER TABLE jobs ADD COLUMN seeds TEXT NOT NULL DEFAULT '[]'")

    @classmethod
    def open_or_reset(cls, path: Path) -> tuple[Journal, str]:
        """Open the journal; a corrupt one is moved aside and a fresh one started.

        Returns the journal and a warning ("" when the file was sound). A journal that
        cannot be read must not keep the worker from starting: the jobs it held are lost
        from the history, but the cache still holds every finished stage.
        """
        path = Path(path)
        try:
            journal = cls(path)
            verdict = journal.quick_check()
            if verdict == "ok":
                return journal, ""
            journal.close()
        except sqlite3.OperationalError:
            raise  # a full disk, a locked or unreadable file: not corruption, nothing to move aside
        except sqlite3.DatabaseError as exc:
            verdict = str(exc)
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{path}{suffix}")
            if part.exists():
                part.rename(Path(f"{aside}{suffix}"))
        return cls(path), (f"{path} was corrupt ({verdict}); moved it to {aside.name} and started a new "
                           "journal (the job history before it is lost; cached stages are kept)")

    def quick_check(self) -> str:
        """SQLite's quick check: ``"ok"`` for a sound file (reads every page, not every index)."""
        with self._lock:
            return str(self._db.execute("PRAGMA quick_check").fetchone()[0])

    def prune(self, older_than: float) -> int:
        """Forget finished jobs (and their events) last updated before ``older_than``; returns how many."""
        with self._lock:
            cur = self._db.execute("SELECT id FROM jobs WHERE state IN ('done','failed','cancelled') AND updated<?",
                                   (older_than,))
            ids = [r[0] for r in cur.fetchall()]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"DELETE FROM events WHERE job_id IN ({marks})", chunk)
                self._db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
        return len(ids)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------- jobs

    def add_job(self, job: JobRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, storyboard, mode, segments, selected, preset, state, created, updated,"
                " attempts, crashes, error, result, seeds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.id, job.storyboard, job.mode, json.dumps(job.segments), json.dumps(job.selected),
                 job.preset, job.state, job.created, job.updated, job.attempts, job.crashes, job.error,
                 job.result, json.dumps(job.seeds)))

    def set_state(self, job_id: str, state: str, *, error: str | None = None, result: str | None = None,
                  started: bool = False) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        sets, args = ["state=?", "updated=?"], [state, time.time()]
        if error is not None:
            sets.append("error=?")
            args.append(error)
        if result is not None:
            sets.append("result=?")
            args.append(result)
        if started:
            sets.append("attempts=attempts+1")
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._select("WHERE id=?", (job_id,))
        return rows[0] if rows else None

    def jobs(self, states: Iterable[str] | None = None, limit: int | None = None) -> list[JobRecord]:
        """Jobs in submission order; with ``limit``, the newest ``limit`` of them."""
        where, args = "", ()
        if states is not None:
            states = tuple(states)
            where = f"WHERE state IN ({','.join('?' * len(states))})"
            args = states
        if limit is None:
            return self._select(f"{where} ORDER BY created, rowid", args)
        rows = self._select(f"{where} ORDER BY created DESC, rowid DESC LIMIT {int(limit)}", args)
        return rows[::-1]

    def requeue_interrupted(self) -> list[JobRecord]:
        """Put ``running`` jobs (their worker died) back to ``queued``, counting the crash; return every pending job."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state='queued', crashes=crashes+1, updated=? WHERE state='running'",
                             (time.time(),))
        return self.jobs(("queued",))

    def _select(self, tail: str, args: tuple) -> list[JobRecord]:
        with self._lock:
            cur = self._db.execute(
                "SELECT id, storyboard, mode, segments, selected, preset, state, created, updated, attempts,"
                f" crashes, error, result, seeds FROM jobs {tail}", args)
            rows = cur.fetchall()
        return [JobRecord(id=r[0], storyboard=r[1], mode=r[2], segments=json.loads(r[3]),
                          selected=json.loads(r[4]), preset=r[5], state=r[6], created=r[7], updated=r[8],
                          attempts=r[9], crashes=r[10], error=r[11], result=r[12], seeds=json.loads(r[13]))
                for r in rows]

    # ----------------------------------------------------------------- events

    def append_event(self, event: Event) -> None:
        body = encode(event).decode().rstrip("\n")
        kind = json.loads(body)["type"]
        with self._lock:
            self._db.execute("INSERT INTO events (job_id, ts, type, body) VALUES (?,?,?,?)",
                             (event.job_id, event.ts, kind, body))

    def events(self, job_id: str | None = None) -> list[Event]:
        """Journaled events in the order they happened (across worker restarts)."""
        with self._lock:
            if job_id is None:
                rows = self._db.execute("SELECT body FROM events ORDER BY seq").fetchall()
            else:
                rows = self._db.execute("SELECT body FROM events WHERE job_id=? ORDER BY seq", (job_id,)).fetchall()
        out: list[Event] = []
        for (body,) in rows:
            try:
                out.append(decode_event(body))
            except ProtocolError:
                continue  # an event type from a newer version: skip, don't fail the history
        return out

    def integrity(self) -> str:
        """``"ok"`` when SQLite finds the file sound."""
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
