"""The wire's limits and framing, at their edges: every reader refuses a valid event that is
too long (for its size, not for being junk), lines split anywhere resynchronise, sockets and
the project lock behave as the worker and its clients rely on."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.wire import framing, protocol
from pipeline.wire.framing import LineBuffer
from pipeline.wire.protocol import MAX_LINE_BYTES, Log, ProtocolError, StepProgress
from tests.raw_socket import full_backlog


def oversized() -> bytes:
    """A well-formed Log event whose line is one byte over the limit."""
    head = len(protocol.encode(Log(message="", ts=1.0, job_id="j")).rstrip(b"\n"))
    line = protocol.encode(Log(message="x" * (MAX_LINE_BYTES + 1 - head), ts=1.0, job_id="j"))
    assert len(line.rstrip(b"\n")) == MAX_LINE_BYTES + 1
    assert msgspec.json.decode(line)["type"] == "log"  # valid: refused only for its size
    return line


SMALL = protocol.encode(StepProgress(segment="a", stage="draft", step=1, total=2, ts=2.0))


def _read_tui(tmp_path: Path, data: bytes) -> list[Any]:
    from sulphur_tui.sources import read_events

    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    return read_events(path)


def _read_journal(tmp_path: Path, data: bytes) -> list[Any]:
    from pipeline.worker.journal import Journal

    j = Journal(tmp_path / "journal.db")
    with j._lock:  # rows as an older or hostile writer could have left them
        for line in data.splitlines():
            j._db.execute("INSERT INTO events (job_id, ts, type, body) VALUES ('j', 0, 't', ?)", (line.decode(),))
    try:
        return j.events()
    finally:
        j.close()


def _read_client(tmp_path: Path, data: bytes) -> list[Any]:
    from pipeline.worker.client import _Reader

    a, b = socket.socketpair()
    threading.Thread(target=lambda: (b.sendall(data), b.close()), daemon=True).start()
    reader, out = _Reader(a), []
    while (msg := reader.next()) is not None:
        out.append(msg)
    a.close()
    return out


@pytest.mark.parametrize("decode", [protocol.decode_event, protocol.decode, protocol.decode_request])
def test_every_decoder_refuses_a_valid_message_over_the_limit(decode: Any) -> None:
    line = oversized()
    with pytest.raises(ProtocolError, match=f"exceeds the {MAX_LINE_BYTES}-byte limit"):
        decode(line)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(line.decode())


@pytest.mark.parametrize("reader", [_read_tui, _read_journal, _read_client])
def test_every_event_reader_skips_an_oversized_event_and_keeps_the_rest(reader: Any, tmp_path: Path) -> None:
    got = reader(tmp_path, SMALL + oversized() + SMALL)
    assert [type(e).__name__ for e in got] == ["StepProgress", "StepProgress"]


def test_a_message_at_exactly_the_limit_is_accepted() -> None:
    head = len(protocol.encode(Log(message="", ts=1.0)).rstrip(b"\n"))
    line = protocol.encode(Log(message="y" * (MAX_LINE_BYTES - head), ts=1.0))
    assert len(line) == MAX_LINE_BYTES + 1  # the newline is not counted
    assert protocol.decode_event(line[:-1]).message.startswith("yyy")  # as LineBuffer hands it over
    assert LineBuffer().feed(line) == [line[:-1]]


def test_the_tui_reads_a_last_line_without_newline_and_skips_other_output(tmp_path: Path) -> None:
    got = _read_tui(tmp_path, b"rendering...\n" + SMALL + b"  \n" + SMALL.rstrip(b"\n"))
    assert len(got) == 2


def test_line_buffer_splits_anywhere_and_resynchronises_after_an_oversized_line() -> None:
    buf = LineBuffer(limit=8)
    assert buf.feed(b"ab") == [] and buf.pending == 2
    assert buf.feed(b"c\nde\n") == [b"abc", b"de"] and buf.pending == 0
    assert buf.feed(b"12345678\n") == [b"12345678"]  # exactly the limit
    assert buf.feed(b"123456789\n") == [None]  # whole line over the limit, newline in the same chunk
    assert buf.feed(b"1234") == [] and buf.feed(b"56789") == [None]  # reported as soon as it grows past
    assert buf.pending == 0  # and not held
    assert buf.feed(b"more") == []  # still the tail of the long line: discarded
    assert buf.feed(b"rest\nok\n") == [b"ok"]
    assert buf.feed(b"a\n\nb\n") == [b"a", b"", b"b"]
    assert buf.feed(b"\n") == [b""]  # an empty line at the start of the buffer
    assert buf.feed(b"12345678") == [] and buf.feed(b"\n") == [b"12345678"]  # held at exactly the limit


def test_line_buffer_default_limit_is_the_protocols() -> None:
    assert LineBuffer().limit == MAX_LINE_BYTES


def test_round_trip_of_every_event_and_request_type() -> None:
    msgs = [protocol.JobQueued(storyboard="s", segments=["a"]), protocol.Submit(storyboard="s", segments=["a"]),
            protocol.Cancel(job_id="j"), protocol.GetStatus(), protocol.Subscribe(), protocol.Shutdown(),
            protocol.Ack(id="r", job_id="j"), protocol.Reject(id="r", error="no")]
    for m in msgs:
        line = protocol.encode(m)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert protocol.decode(line) == m
        assert protocol.to_dict(m)["type"] == json.loads(line)["type"]
    with pytest.raises(ProtocolError):
        protocol.decode_event(protocol.encode(protocol.Cancel(job_id="j")))  # a request is not an event
    with pytest.raises(ProtocolError):
        protocol.decode_request(SMALL)


# --------------------------------------------------------------------------- sockets


def test_a_socket_path_longer_than_sun_path_binds_and_connects(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / ("e" * 30)
    deep.mkdir(parents=True)
    path = framing.socket_path(deep)
    path.parent.mkdir()
    assert len(os.fsencode(path)) > 107
    server = framing.bind_unix(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = framing.connect_unix(path, timeout=5)
        conn, _ = _accept(server)
        client.sendall(b"hi\n")
        assert conn.recv(3) == b"hi\n"
        client.close()
        conn.close()
    finally:
        server.close()
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        framing.connect_unix(tmp_path / "nobody.sock", timeout=1)


def _accept(server: socket.socket) -> tuple[socket.socket, Any]:
    import select

    select.select([server], [], [], 5)
    return server.accept()


def test_short_path_keeps_short_addresses_and_closes_its_descriptor(tmp_path: Path) -> None:
    short = framing._ShortPath(tmp_path / "s.sock")
    assert short.address == str(tmp_path / "s.sock")
    long_dir = tmp_path / ("x" * 120)
    long_dir.mkdir()
    short = framing._ShortPath(long_dir / "w.sock")
    with short as address:
        assert address.startswith("/proc/self/fd/") and address.endswith("/w.sock")
        fd = int(address.split("/")[4])
        os.fstat(fd)
    with pytest.raises(OSError):
        os.fstat(fd)
    short.close()  # closing again does not touch a descriptor it no longer owns


def test_project_files_live_in_the_projects_state_folder(tmp_path: Path) -> None:
    assert framing.socket_path(tmp_path) == tmp_path / ".sulphur" / "worker.sock"
    assert framing.lock_path(tmp_path) == tmp_path / ".sulphur" / "worker.lock"


def test_sockets_keep_their_timeout_and_the_listener_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "w.sock"
    server = framing.bind_unix(path)
    try:
        assert server.getblocking() is False
        client = framing.connect_unix(path, timeout=0.2)
        assert client.gettimeout() == 0.2
        with pytest.raises(TimeoutError):
            client.recv(1)
        client.close()
    finally:
        server.close()


def test_a_path_of_exactly_sun_path_is_used_as_it_is(tmp_path: Path) -> None:
    name = "s" * (107 - len(os.fsencode(tmp_path)) - 1)
    path = tmp_path / name
    assert len(os.fsencode(path)) == 107
    short = framing._ShortPath(path)
    assert short.address == str(path)
    short.close()
    short.close()  # twice is harmless


def test_the_lock_in_one_process_refuses_a_second_holder_quickly(tmp_path: Path) -> None:
    import time

    project = tmp_path / "new" / "project"  # neither exists yet
    first = framing.ProjectLock(framing.lock_path(project))
    first.release()  # before acquiring: harmless
    old = os.umask(0o022)
    try:
        first.acquire()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(framing.lock_path(project).stat().st_mode) == 0o644
        t0 = time.monotonic()
        with pytest.raises(framing.WorkerLocked) as info:
            framing.ProjectLock(framing.lock_path(project)).acquire()
        assert time.monotonic() - t0 < 2.0
        assert info.value.pid == os.getpid()
        assert framing.lock_holder(project) == os.getpid()
    finally:
        first.release()
    assert framing.lock_holder(project) is None
    assert str(framing.WorkerLocked(None, framing.lock_path(project))) == (
        f"a worker is already running for {project} (another process holds {framing.lock_path(project)})")


def test_a_lock_held_before_its_pid_is_written_reports_minus_one(tmp_path: Path) -> None:
    import fcntl

    path = framing.lock_path(tmp_path)
    path.parent.mkdir()
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert framing.lock_holder(tmp_path) == -1
    finally:
        os.close(fd)


def test_acquire_waits_out_a_clients_brief_shared_lock(tmp_path: Path) -> None:
    import fcntl

    path = framing.lock_path(tmp_path)
    path.parent.mkdir()
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # as lock_holder() takes it for a moment
    timer = threading.Timer(0.15, lambda: os.close(fd))
    timer.start()
    lock = framing.ProjectLock(path)
    lock.acquire()
    timer.join()
    assert path.read_text() == f"{os.getpid()}\n"
    lock.release()


def test_a_decoding_error_says_what_was_wrong() -> None:
    with pytest.raises(ProtocolError, match="nope"):
        protocol.decode_event(b'{"type": "nope"}')


def _child_env() -> dict[str, str]:
    """This checkout first on the child's path, the rest kept (mutmut or wheels may live there)."""
    path = [str(Path(framing.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def test_the_project_lock_is_exclusive_names_its_holder_and_frees_on_release(tmp_path: Path) -> None:
    assert framing.lock_holder(tmp_path) is None  # no file yet
    lock = framing.ProjectLock(framing.lock_path(tmp_path))
    lock.acquire()
    try:
        assert framing.lock_path(tmp_path).read_text() == f"{os.getpid()}\n"
        code = ("import sys; from pathlib import Path; from pipeline.wire import framing as f; "
                "l = f.ProjectLock(f.lock_path(Path(sys.argv[1])))\n"
                "try: l.acquire()\nexcept f.WorkerLocked as e: print(e.pid, e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             env=_child_env(),
                             timeout=60).stdout
        assert out.startswith(f"{os.getpid()} a worker is already running for {tmp_path} (PID {os.getpid()} holds")
        holder = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                 "from pipeline.wire import framing as f; print(f.lock_holder(Path(sys.argv[1])))",
                                 str(tmp_path)], capture_output=True, text=True, timeout=60,
                                env=_child_env()).stdout
        assert holder.strip() == str(os.getpid())
    finally:
        lock.release()
    assert framing.lock_path(tmp_path).read_text() == ""
    assert framing.lock_holder(tmp_path) is None
    lock.release()  # twice is harmless
    assert "another process" in str(framing.WorkerLocked(None, framing.lock_path(tmp_path)))


# ------------------------------------------------------------------ the project's state folder, a busy worker


def test_the_state_folder_is_the_owners_only_and_an_old_one_is_tightened(tmp_path: Path) -> None:
    """.sulphur holds every prompt (the journal), the log and the cache."""
    made = framing.state_dir(tmp_path / "project")
    assert made == tmp_path / "project" / ".sulphur" and stat.S_IMODE(made.stat().st_mode) == 0o700
    old = tmp_path / "old" / ".sulphur"
    old.mkdir(parents=True)
    old.chmod(0o755)
    assert framing.state_dir(tmp_path / "old") == old and stat.S_IMODE(old.stat().st_mode) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="making a folder someone else's needs root")
def test_someone_elses_state_folder_is_left_as_its_owner_set_it(tmp_path: Path) -> None:
    theirs = tmp_path / ".sulphur"
    theirs.mkdir(mode=0o755)
    theirs.chmod(0o755)
    os.chown(theirs, 4242, 4242)
    framing.private_dir(theirs)
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o755


def test_a_connection_queue_that_stays_full_times_out_naming_the_socket(tmp_path: Path) -> None:
    """A busy worker (its backlog full: EAGAIN at once) is retried until the timeout, then named."""
    import time

    path = tmp_path / "busy.sock"
    with full_backlog(path):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            framing.connect_unix(path, timeout=0.6)
        elapsed = time.monotonic() - t0
        assert str(info.value) == f"{path}: the worker's connection queue stayed full"
        assert 0.35 <= elapsed <= 2.0  # retried for about the timeout, not given up at once nor after 10 s
