"""The editor's link to the worker: a worker that lives but does not answer (busy, or still
starting) is not a worker gone. Taken for gone, the editor marked its running job stopped
("■ draft", "worker stopped mid-job") while the job went on."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from pipeline.wire.framing import ProjectLock, lock_path, socket_path
from sulphur_tui.sources import follow_worker


def _statuses_until(project: Path, done, seconds: float = 15.0) -> list[tuple[bool, str]]:  # noqa: ANN001
    """What ``follow_worker`` reports about the link, until ``done(reports)``."""
    seen: list[tuple[bool, str]] = []
    stop = threading.Event()
    thread = threading.Thread(target=follow_worker, args=(project, lambda *a: None,
                                                          lambda ok, detail: seen.append((ok, detail)), stop))
    thread.start()
    deadline = time.monotonic() + seconds
    while not done(seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    return seen


def test_a_worker_that_holds_the_project_but_does_not_answer_is_not_taken_for_gone(tmp_path: Path) -> None:
    lock = ProjectLock(lock_path(tmp_path))
    lock.acquire()  # a worker process holds the project…
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(socket_path(tmp_path)))  # …and its socket is there, but nothing accepts on it
    try:
        seen = _statuses_until(tmp_path, lambda s: bool(s))
        assert seen, "follow_worker reported nothing"
        alive, detail = seen[0]
        assert alive, seen
        assert "not answering" in detail, detail
        lock.release()  # now it is gone: the next try says so
        seen = _statuses_until(tmp_path, lambda s: any(not ok for ok, _ in s))
        assert (False, "no render worker running (F5 starts one)") in seen, seen
    finally:
        sock.close()
        lock.release()


def test_a_lock_that_cannot_be_read_keeps_the_editor_following(tmp_path: Path) -> None:
    """``.sulphur`` is a file, not a folder: probing the lock raised NotADirectoryError inside
    the retry loop's handler, the following thread died, and the editor stopped following."""
    (tmp_path / ".sulphur").write_text("not a folder")
    seen: list[tuple[bool, str]] = []
    stop = threading.Event()
    thread = threading.Thread(target=follow_worker, args=(tmp_path, lambda *a: None,
                                                          lambda ok, detail: seen.append((ok, detail)), stop))
    thread.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    try:
        assert thread.is_alive(), "the following thread died"
        assert seen and seen[0][0] is False, seen
    finally:
        stop.set()
        thread.join(10)
