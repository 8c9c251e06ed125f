"""Issue 19, items 2, 6 (journal) and 10: a real worker on a real socket under hostile requests."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from pipeline.wire import protocol
from pipeline.wire.framing import connect_unix
from pipeline.worker.client import WorkerClient, WorkerError
from tests.hostile.conftest import QUICK, Raw, kill_worker, sulphur
from tests.raw_socket import full_backlog

pytestmark = pytest.mark.timeout(120)


def _status_latency(project: Path) -> float:
    """Seconds a fresh connection waits for a status snapshot (capped at 5)."""
    raw = Raw(project)
    raw.sock.settimeout(5)
    t = time.monotonic()
    try:
        raw.send(protocol.encode(protocol.GetStatus(id="lat")))
        assert isinstance(raw.reply(), protocol.StatusSnapshot)
    except TimeoutError:
        return 5.0
    finally:
        raw.close()
    return time.monotonic() - t


def _unblock_fifo(path: Path) -> None:
    """A writer that opens and closes at once: a reader stuck in open() on the FIFO returns."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_a_fifo_storyboard_is_refused_and_the_worker_keeps_answering(worker_project: Path) -> None:
    """Item 2: a FIFO submit froze the whole worker (status and SIGTERM too) until someone wrote to it."""
    fifo = worker_project / "fifo.toml"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def submit() -> None:
        try:
            with WorkerClient.connect(worker_project, start=False) as client:
                outcome.append(f"accepted {client.submit(fifo)}")
        except WorkerError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        latency = _status_latency(worker_project)
        thread.join(10)
    finally:
        _unblock_fifo(fifo)
        thread.join(10)
    assert latency < 2.0, f"status took {latency:.1f} s while a FIFO was submitted"
    assert outcome and "FIFO" in outcome[0] and "fifo.toml" in outcome[0], outcome


def test_a_huge_storyboard_never_stalls_status(worker_project: Path) -> None:
    """Item 2: a 3000-segment storyboard froze the worker 13.5 s; status must answer meanwhile."""
    big = worker_project / "big.toml"
    big.write_text(QUICK.split("[[segment]]")[0] + "".join(
        f'[[segment]]\nid = "s{i}"\nprompt = "shot {i}"\nframes = 9\n\n' for i in range(3000)))
    replies: list[object] = []

    def submit() -> None:
        raw = Raw(worker_project)
        raw.send(protocol.encode(protocol.Submit(id="big", storyboard=str(big), mode="segments",
                                                 segments=["s0"])))
        replies.append(raw.reply())
        raw.close()

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    latency = _status_latency(worker_project)
    thread.join(30)
    assert latency < 1.0, f"status took {latency:.2f} s beside a 3000-segment submit"
    assert replies and isinstance(replies[0], protocol.Ack), replies


@pytest.mark.parametrize("line", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"type": "get_status", "id": "deep", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"a":' * 60_000 + b"1" + b"}" * 60_000,
], ids=["array", "inside-a-request", "objects"])
def test_deeply_nested_json_gets_a_reply_and_the_connection_lives(worker_project: Path, line: bytes) -> None:
    """Item 10: deep nesting raised RecursionError in the worker and dropped the connection unanswered."""
    raw = Raw(worker_project)
    try:
        raw.send(line + b"\n")
        reply = raw.reply()
        assert isinstance(reply, protocol.Reject) or isinstance(reply, protocol.StatusSnapshot), reply
        raw.send(protocol.encode(protocol.GetStatus(id="after")))
        assert isinstance(raw.reply(), protocol.StatusSnapshot)  # same connection, still usable
    finally:
        raw.close()


def test_the_state_folder_is_private(worker_project: Path) -> None:
    """Item 10: journal.db, worker.log and the cache were world-readable."""
    state = worker_project / ".sulphur"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "worker.log").stat().st_mode) & 0o077 == 0


def test_an_old_open_state_folder_is_tightened(tmp_path: Path) -> None:
    from pipeline.wire.framing import state_dir

    (tmp_path / ".sulphur").mkdir(mode=0o755)
    os.chmod(tmp_path / ".sulphur", 0o755)
    assert stat.S_IMODE(state_dir(tmp_path).stat().st_mode) == 0o700


def test_a_client_retries_a_full_connection_queue(tmp_path: Path) -> None:
    """Item 10: EAGAIN from a listener with a full backlog made the client give up at once."""
    path = tmp_path / "busy.sock"
    with full_backlog(path) as (listener, filled):

        def drain() -> None:
            time.sleep(0.5)
            for _ in range(filled + 1):
                listener.accept()[0].close()

        threading.Thread(target=drain, daemon=True).start()
        sock = connect_unix(path, timeout=10)
        sock.close()


def test_a_corrupt_journal_is_moved_aside_and_status_has_no_traceback(tmp_path: Path) -> None:
    """Item 6 (journal): a corrupt journal.db stopped the worker and `sulphur status` printed a traceback."""
    (tmp_path / "story.toml").write_text(QUICK)
    state = tmp_path / ".sulphur"
    state.mkdir(mode=0o700)
    junk = b"SQLite format 3\x00" + os.urandom(8192)
    (state / "journal.db").write_bytes(junk)
    result = sulphur("status", "--project", str(tmp_path), cwd=tmp_path, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0 and "journal.db" in result.stderr, result.stderr
    assert (state / "journal.db").read_bytes() == junk  # status only reads
    try:
        with WorkerClient.connect(tmp_path, idle_timeout=60, timeout=60) as client:
            job = client.submit(tmp_path / "story.toml")
            assert any(j.job_id == job for j in client.status().jobs)
        aside = list(state.glob("journal.db.corrupt-*"))
        assert [p.read_bytes() for p in aside if not p.name.endswith(("-wal", "-shm"))] == [junk]
        assert "was corrupt" in (state / "worker.log").read_text()
    finally:
        kill_worker(tmp_path)
