"""Talking to the background worker: :class:`WorkerClient`, starting and stopping it, its journal.

A library: it prints nothing (``sulphur status`` and ``render --attach`` are in :mod:`pipeline.cli.attach`).

Torch-free on purpose: the TUI imports this module. The worker's side of the protocol
and its design note are in :mod:`pipeline.worker.server`.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.project import layout
from pipeline.project.files import describe_os_error
from pipeline.wire import protocol
from pipeline.wire.framing import LineBuffer, connect_unix, lock_holder, private_dir, socket_path
from pipeline.wire.protocol import (
    Ack,
    Cancel,
    Event,
    GetStatus,
    JobInfo,
    Message,
    ProtocolError,
    Reject,
    Request,
    Shutdown,
    StatusSnapshot,
    Submit,
    Subscribe,
)
from pipeline.worker.journal import Journal

#: Seconds a request waits for its reply.
REQUEST_TIMEOUT = 30.0


class WorkerError(RuntimeError):
    """The worker refused a request or could not be reached."""


class WorkerNotRunning(WorkerError):
    pass


# ------------------------------------------------------------------ framing


class _Reader:
    """Messages from a blocking socket, one JSON line each."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lines = LineBuffer()
        self._ready: list[bytes | None] = []

    def next(self) -> Message | None:
        """The next message, or None when the worker closed the connection.

        Raises ``TimeoutError`` when the socket has a timeout and nothing came in time.
        """
        while True:
            while self._ready:
                line = self._ready.pop(0)
                if line is None or not line.strip():
                    continue  # an oversized line from the worker: nothing sane to do but skip it
                try:
                    return protocol.decode(line)
                except ProtocolError:
                    continue  # a message type from a newer worker: skip
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                raise
            except OSError:
                return None
            if not data:
                return None
            self._ready.extend(self._lines.feed(data))


class EventStream:
    """Iterator over a subscription: a ``StatusSnapshot`` first, then live events.

    Ends when the worker closes the connection (it stopped or died) or :meth:`close` is
    called, from any thread.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = _Reader(sock)
        self.closed = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        while not self.closed:
            msg = self._reader.next()
            if msg is None:
                self.close()
                break
            if isinstance(msg, Event):
                return msg
        raise StopIteration

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            except OSError:
                pass
            self._sock.close()


# ------------------------------------------------------------------- client


class WorkerClient:
    """A connection to the worker of one project folder (the storyboard's folder)."""

    def __init__(self, project_dir: Path, sock: socket.socket) -> None:
        self.project_dir = project_dir
        self._sock = sock
        self._reader = _Reader(sock)
        self._lock = threading.Lock()
        self._streams: list[EventStream] = []

    @classmethod
    def connect(cls, project_dir: Path, *, start: bool = True, timeout: float = 60.0,
                idle_timeout: float | None = None) -> WorkerClient:
        """Connect to the project's worker, starting a detached one if none runs and ``start``."""
        project_dir = Path(project_dir).expanduser().resolve()
        path = socket_path(project_dir)
        sock = _try_connect(path)
        if sock is not None:
            return cls(project_dir, sock)
        if not start:
            raise WorkerNotRunning(f"no worker is running for {project_dir}")
        deadline = time.monotonic() + timeout
        proc = _spawn(project_dir, idle_timeout)
        spawns = 1
        while time.monotonic() < deadline:
            sock = _try_connect(path)
            if sock is not None:
                return cls(project_dir, sock)
            if proc.poll() is not None and lock_holder(project_dir) is None:
                # Ours exited and nobody holds the lock (e.g. it lost a race with a worker
                # that was stopping then): try again, but not forever.
                full = _disk_full(project_dir)
                if full:  # its log may well be empty: say why instead
                    raise WorkerError(f"the worker for {project_dir} could not start: {full}")
                if spawns >= 3:
                    raise WorkerError(f"the worker for {project_dir} exited with status {proc.returncode}; "
                                      f"last lines of its log:\n{_log_tail(project_dir)}")
                proc = _spawn(project_dir, idle_timeout)
                spawns += 1
            time.sleep(0.05)
        raise WorkerError(f"no worker answered on {path} within {timeout:g} s; "
                          f"see {project_dir / '.sulphur' / 'worker.log'}")

    # -------------------------------------------------------------- requests

    def _request(self, request: Request) -> Message:
        request.id = request.id or uuid.uuid4().hex[:8]
        with self._lock:
            try:
                self._sock.settimeout(REQUEST_TIMEOUT)
                self._sock.sendall(protocol.encode(request))
                while True:
                    reply = self._reader.next()
                    # Skip a late reply to an earlier request that timed out.
                    if reply is None or isinstance(reply, StatusSnapshot) and isinstance(request, GetStatus):
                        break
                    if isinstance(reply, Ack | Reject) and reply.id == request.id:
                        break
            except TimeoutError:
                raise WorkerError(f"the worker did not answer within {REQUEST_TIMEOUT:g} s") from None
            except OSError as exc:
                raise WorkerError(f"lost the worker: {exc}") from None
        if reply is None:
            raise WorkerError("the worker closed the connection")
        if isinstance(reply, Reject):
            raise WorkerError(reply.error)
        return reply

    def submit(self, storyboard: Path, mode: str = "all", segments: Sequence[str] = (), *,
               preset: str = "", seeds: Sequence[int] = ()) -> str:
        """Queue a render; returns the job id (an identical pending job's id if there is one).

        ``mode="takes"`` renders ``seeds`` of the one segment in ``segments`` as takes."""
        reply = self._request(Submit(storyboard=str(Path(storyboard).expanduser().resolve()), mode=mode,
                                     segments=list(segments), seeds=list(seeds), preset=preset))
        if not isinstance(reply, Ack):
            raise WorkerError(f"unexpected reply {type(reply).__name__}")
        return reply.job_id

    def cancel(self, job_id: str = "") -> None:
        """Cancel a job (the running one when ``job_id`` is empty)."""
        self._request(Cancel(job_id=job_id))

    def status(self) -> StatusSnapshot:
        reply = self._request(GetStatus())
        if not isinstance(reply, StatusSnapshot):
            raise WorkerError(f"unexpected reply {type(reply).__name__}")
        return reply

    def shutdown(self) -> None:
        """Ask the worker to checkpoint the running stage and exit."""
        self._request(Shutdown())

    def events(self) -> EventStream:
        """Subscribe now (on a connection of its own); iterate for the snapshot, then live events."""
        sock = _try_connect(socket_path(self.project_dir))
        if sock is None:
            raise WorkerNotRunning(f"no worker is running for {self.project_dir}")
        try:
            sock.sendall(protocol.encode(Subscribe(id="subscribe")))
            reader = _Reader(sock)
            reply = reader.next()
        except OSError as exc:
            sock.close()
            raise WorkerError(f"subscription failed: {exc}") from None
        if not isinstance(reply, Ack):
            sock.close()
            raise WorkerError(f"subscription refused: {getattr(reply, 'error', 'connection closed')}")
        sock.settimeout(None)  # events may be minutes apart (one long step): wait as long as it takes
        stream = EventStream(sock)
        stream._reader = reader  # keep what was read past the Ack
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _try_connect(path: Path) -> socket.socket | None:
    try:
        return connect_unix(path, timeout=REQUEST_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except OSError as exc:
        raise WorkerError(f"cannot connect to {describe_os_error(path, exc)}") from None


def _spawn(project_dir: Path, idle_timeout: float | None) -> subprocess.Popen:
    """:func:`spawn_worker`, with what stops it (a read-only project folder: no ``.sulphur/``
    can be made) as a :class:`WorkerError` in words, which every client already shows."""
    try:
        return spawn_worker(project_dir, idle_timeout)
    except OSError as exc:
        where = describe_os_error(exc.filename or project_dir, exc)
        raise WorkerError(f"cannot start a worker for {project_dir}: {where}") from None


def spawn_worker(project_dir: Path, idle_timeout: float | None = None) -> subprocess.Popen:
    """Start ``python -m pipeline.cli worker --foreground`` detached: its own session, output to ``.sulphur/worker.log``.

    Spawned (fork+exec), never forked from this process, so no CUDA state is shared, and
    in a new session so a closing terminal or SSH login does not take it down.
    """
    log_path = layout.worker_log(project_dir)
    private_dir(log_path.parent)  # 0700: the log names every prompt
    cmd = [sys.executable, "-m", "pipeline.cli", "worker", "--foreground", "--project", str(project_dir)]
    if idle_timeout is not None:
        cmd += ["--idle-timeout", str(idle_timeout)]
    env = os.environ.copy()
    root = str(Path(__file__).resolve().parents[2])  # so `-m pipeline.cli` finds this checkout
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=project_dir, env=env)
    # Reap it when it exits, so a long-lived client (the TUI) collects no zombies.
    threading.Thread(target=proc.wait, name=f"reap-worker-{proc.pid}", daemon=True).start()
    return proc


#: Free bytes below which a worker that died at start is blamed on a full disk.
LOW_DISK = 1 << 20


def _disk_full(project_dir: Path) -> str:
    """"the disk holding X is full (N bytes free)" when it is, else ""."""
    try:
        free = shutil.disk_usage(Path(project_dir) / ".sulphur").free
    except OSError:
        return ""
    if free >= LOW_DISK:
        return ""
    return f"the disk holding {project_dir} is full ({free} bytes free); free some space and try again"


def _log_tail(project_dir: Path, lines: int = 15) -> str:
    try:
        text = layout.worker_log(project_dir).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_worker(project_dir: Path, timeout: float = 300.0, say: Callable[[str, bool], None] | None = None) -> int:
    """Ask the project's worker for a clean stop and wait until the lock is released; 0 when
    none runs or it stopped. ``say(line, is_error)`` hears what happens (the CLI prints it)."""
    tell = say or (lambda line, is_error: None)
    pid = lock_holder(project_dir)
    if pid is None:
        tell(f"no worker is running for {project_dir}", False)
        return 0
    try:
        with WorkerClient.connect(project_dir, start=False) as client:
            client.shutdown()
    except WorkerError as exc:
        tell(f"sulphur worker --stop: {exc} (PID {pid})", True)
        return 1
    tell(f"stopping worker PID {pid} (checkpointing the running stage)…", True)
    deadline = time.monotonic() + timeout
    while lock_holder(project_dir) is not None:
        if time.monotonic() > deadline:
            tell(f"worker PID {pid} is still finishing after {timeout:g} s", True)
            return 1
        time.sleep(0.1)
    tell(f"worker PID {pid} stopped", False)
    return 0


# ------------------------------------------------------------------- status


def journal_snapshot(project_dir: Path, limit: int = 50) -> StatusSnapshot:
    """What the journal says when no worker runs (``pid`` 0)."""
    jobs: list[JobInfo] = []
    db = layout.journal_db(project_dir)
    if db.exists():
        try:
            journal = Journal(db)
            try:
                for rec in journal.jobs(limit=limit):
                    jobs.append(JobInfo(job_id=rec.id, storyboard=rec.storyboard, segments=rec.selected,
                                        state=rec.state, error=rec.error))  # type: ignore[arg-type]
            finally:
                journal.close()
        except sqlite3.DatabaseError as exc:
            # Reading only: the next worker moves the file aside (Journal.open_or_reset).
            print(f"warning: {db} is unreadable ({exc}); the next worker moves it aside and starts a new one",
                  file=sys.stderr)
            return StatusSnapshot(pid=0, project=str(project_dir), jobs=[])
    return StatusSnapshot(pid=0, project=str(project_dir), jobs=jobs)


def journal_events(project_dir: Path, job_id: str) -> list[Event]:
    """The journaled events of one job (all but step progress, VRAM samples and latent
    previews), oldest first: what a client attaching mid-job needs to draw what happened
    before it came."""
    db = layout.journal_db(project_dir)
    if not db.exists():
        return []
    journal = Journal(db)
    try:
        return journal.events(job_id)
    finally:
        journal.close()


def journal_state(project: Path, job_id: str, wait: float = 10.0) -> str:
    """The job's state once no worker holds the project (a stopping worker finishes first)."""
    deadline = time.monotonic() + wait
    while lock_holder(project) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if lock_holder(project) is not None:
        return "running"  # a new worker already took over: follow it
    for job in journal_snapshot(project, limit=1000).jobs:
        if job.job_id == job_id:
            return job.state
    return "failed"
