"""Issue 19 item 6 (cache): a damaged cache entry is treated as missing and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.render.cache import StageCache

pytestmark = pytest.mark.timeout(30)


def _build(cache: StageCache, payload: bytes = b"x" * 5000) -> Path:
    with cache.build("encode", "ab" * 32, {"fps": 8}) as b:
        (b.path / "segment.mp4").write_bytes(payload)
        b.meta["frames"] = 9
    art = cache.get("encode", "ab" * 32)
    assert art is not None
    return art.path


@pytest.mark.parametrize("damage", ["zero-length", "truncated", "grown", "missing", "meta-garbage",
                                    "meta-not-object"])
def test_a_damaged_entry_reads_as_missing_and_is_rebuilt(tmp_path: Path, damage: str) -> None:
    """A 0-byte cached segment.mp4 overwrote the good segments/<id>.mp4 and every rerun failed."""
    cache = StageCache(tmp_path / ".sulphur" / "cache")
    entry = _build(cache)
    target = entry / "segment.mp4"
    if damage == "zero-length":
        target.write_bytes(b"")
    elif damage == "truncated":
        target.write_bytes(b"x" * 100)
    elif damage == "grown":
        target.write_bytes(b"x" * 6000)
    elif damage == "missing":
        target.unlink()
    elif damage == "meta-garbage":
        (entry / "meta.json").write_bytes(b"\x00\xff not json")
    else:
        (entry / "meta.json").write_text(json.dumps([1, 2]))
    assert cache.get("encode", "ab" * 32) is None
    assert not entry.exists()  # moved out of the way, so the stage can build it again
    rebuilt = _build(cache)
    assert (rebuilt / "segment.mp4").read_bytes() == b"x" * 5000


def test_an_intact_entry_is_a_hit_and_lists_its_files(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    entry = _build(cache)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["files"] == {"segment.mp4": 5000}
    assert cache.get("encode", "ab" * 32).meta == {"frames": 9}
