"""Where events come from: the project's render worker, or a recorded JSONL replay.

Both run off the UI thread and hand events to a callback (the app posts them as
messages), so the UI code cannot tell a replay from a live render — which is what
makes the "rendering" snapshot test and the latency benchmark honest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.wire.framing import LineBuffer, lock_holder
from pipeline.wire.protocol import Event, ProtocolError, StatusSnapshot, decode_event, encode
from pipeline.worker.client import WorkerClient, journal_events

RETRY_S = 2.0


def read_events(path: Path) -> list[Event]:
    """Every event of a JSONL file written by ``sulphur render --json`` (other lines,
    such as human progress output mixed into a capture, are skipped).

    Read through the socket's :class:`LineBuffer`, so a line over the protocol's limit is
    skipped without ever being held whole, as the worker's clients skip one."""
    out = []
    for line in _lines(Path(path)):
        if line is None or not line.strip().startswith(b"{"):
            continue
        try:
            out.append(decode_event(line))
        except ProtocolError:
            continue
    return out


def _lines(path: Path) -> Iterator[bytes | None]:
    buffer = LineBuffer()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            yield from buffer.feed(chunk)
    if buffer.pending:
        yield from buffer.feed(b"\n")  # a last line without its newline


def write_events(events: Iterable[Event], path: Path) -> None:
    with open(path, "wb") as fh:
        for ev in events:
            fh.write(encode(ev))


def paced(events: list[Event], speed: float, stop: threading.Event) -> Iterator[Event]:
    """Yield events with their recorded spacing divided by ``speed`` (0: no waiting)."""
    if not events:
        return
    t0, start = events[0].ts, time.monotonic()
    for ev in events:
        if speed > 0:
            delay = (ev.ts - t0) / speed - (time.monotonic() - start)
            if delay > 0 and stop.wait(delay):
                return
        if stop.is_set():
            return
        yield ev


def follow_worker(project_dir: Path, emit: Callable[..., None], status: Callable[[bool, str], None],
                  stop: threading.Event) -> None:
    """Attach to the project's worker and forward its events until ``stop``; when no
    worker runs, try again every few seconds (a render started later attaches itself).
    ``emit(event)`` for live events, ``emit(event, True)`` for a running job's history.

    Runs in a thread. Never starts a worker: only a render request does that.
    ``status(alive, detail)``: ``alive`` is False only when no worker process holds the project.
    """
    announced = ""  # the last status sent: only changes are reported
    replayed: set[bytes] = set()  # journal events already sent, across reconnections
    while not stop.is_set():
        client = None
        ended_at = connected_at = 0.0
        try:
            client = WorkerClient.connect(project_dir, start=False, timeout=5.0)
            connected_at = time.monotonic()
            if announced != "attached":
                status(True, "worker attached")
                announced = "attached"
            _clients.setdefault(id(stop), []).append(client)
            for ev in client.events():
                if stop.is_set():
                    break
                if isinstance(ev, StatusSnapshot):
                    _history(project_dir, ev, emit, replayed)
                elif replayed and encode(ev) in replayed:
                    continue  # journaled after the snapshot was taken: already replayed
                emit(ev)
            # The stream ended: the worker stopped, or the connection idled out. The
            # next connect attempt tells which, so nothing is announced yet.
            ended_at = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - any failure means "not attached"; say why, retry
            quiet = isinstance(exc, (FileNotFoundError, ConnectionError, TimeoutError)) or \
                type(exc).__name__ == "WorkerNotRunning"
            detail = "no render worker running (F5 starts one)" if quiet else f"worker: {exc}"
            try:
                pid = lock_holder(project_dir)
            except OSError:  # the lock cannot be read (another user's folder, NFS): as before, retry
                pid = None
            if pid is not None:  # it lives (busy, or still starting): its jobs go on, unseen for now
                detail = f"the render worker{f' (PID {pid})' if pid > 0 else ''} is not answering; retrying"
            if detail != announced:
                status(pid is not None, detail)
                announced = detail
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
            _clients.pop(id(stop), None)
        # Reconnect at once after a stream ended (no events are missed for long: the
        # worker's StatusSnapshot on subscribing redraws the state); otherwise poll.
        # A stream that ends as soon as it starts is a worker going away: poll slowly.
        stop.wait(0.05 if ended_at - connected_at > 1.0 else RETRY_S)


def _history(project_dir: Path, snapshot: StatusSnapshot, emit: Callable[..., None], seen: set[bytes]) -> None:
    """Attaching while jobs are queued or running: first what their journals say happened
    (shots done, stages finished, flicker reports, previews), then the snapshot, so the
    editor shows the job as it is rather than from the next event on. ``seen`` collects the
    replayed events' bytes: a reconnection replays only what is new, and the live stream's
    copies of them are dropped."""
    for info in snapshot.jobs:
        if info.state not in ("queued", "running"):
            continue
        for ev in journal_events(project_dir, info.job_id):
            data = encode(ev)
            if data not in seen:
                seen.add(data)
                emit(ev, True)


# Clients currently blocked in events(), by the stop event of their thread, so the app
# can close them from the UI thread at exit (closing the socket unblocks the read).
_clients: dict[int, list] = {}


def close_followers(stop: threading.Event) -> None:
    stop.set()
    for client in _clients.pop(id(stop), []):
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["read_events", "write_events", "paced", "follow_worker", "close_followers"]
