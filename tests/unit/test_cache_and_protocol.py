"""The stage cache never keeps a partial entry; protocol messages round-trip and reject junk."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.render.cache import StageCache, stage_key
from pipeline.wire import protocol


def test_key_depends_on_every_input() -> None:
    base = stage_key("draft", 1, {"seed": 1, "prompt": "a"}, {"enhance": "k1"})
    assert base == stage_key("draft", 1, {"prompt": "a", "seed": 1}, {"enhance": "k1"})  # order-free
    assert base != stage_key("draft", 2, {"seed": 1, "prompt": "a"}, {"enhance": "k1"})
    assert base != stage_key("draft", 1, {"seed": 2, "prompt": "a"}, {"enhance": "k1"})
    assert base != stage_key("draft", 1, {"seed": 1, "prompt": "a"}, {"enhance": "k2"})


def test_interrupted_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    with pytest.raises(RuntimeError), cache.build("draft", "ab" * 32) as b:
        (b.path / "frames.npy").write_bytes(b"half")
        raise RuntimeError("killed")
    assert cache.get("draft", "ab" * 32) is None
    assert not list(tmp_path.rglob("*.partial"))
    with cache.build("draft", "ab" * 32, {"p": 1}) as b:
        (b.path / "frames.npy").write_bytes(b"whole")
        b.meta["frames"] = 3
    art = cache.get("draft", "ab" * 32)
    assert art is not None and art.meta == {"frames": 3}
    assert art.file("frames.npy").read_bytes() == b"whole"


def test_partial_left_by_a_killed_process_is_swept(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    import os
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    leftover = tmp_path / "draft" / "cd" / f".cdcdcdcdcdcd.{proc.pid}.x.partial"
    mine = tmp_path / "draft" / "cd" / f".cdcdcdcdcdcd.{os.getpid()}.y.partial"
    leftover.mkdir(parents=True)
    mine.mkdir(parents=True)
    assert cache.sweep_partials() == 1
    assert not leftover.exists() and mine.exists()  # a live builder's folder is left alone


def test_events_round_trip() -> None:
    ev = protocol.StageFinished(job_id="j", segment="a", stage="draft", seconds=1.5, peak_allocated=7)
    back = protocol.decode_event(protocol.encode(ev))
    assert back == ev and isinstance(back, protocol.StageFinished)
    req = protocol.decode_request(b'{"type":"submit","storyboard":"s.toml","mode":"from","segments":["b"]}')
    assert isinstance(req, protocol.Submit) and req.mode == "from"


@pytest.mark.parametrize("line", [b"", b"{", b'{"type":"nope"}', b'{"type":"submit"}', b"[1,2]",
                                  b'{"type":"submit","storyboard":3}', b"x" * (protocol.MAX_LINE_BYTES + 1)])
def test_junk_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(line)
