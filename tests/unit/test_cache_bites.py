"""The stage cache's entries: where they live, what meta.json records, what counts as absent,
and which leftovers a sweep removes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.project.files import pid_alive
from pipeline.render import cache as C
from pipeline.render.cache import StageCache, stage_key

KEY = "ab" + "0" * 62


def test_an_entry_lives_under_stage_and_key_prefix_with_its_params(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    with cache.build("refine", KEY, {"seed": 3, "path": Path("x")}) as b:
        assert b.path.parent == tmp_path / "refine" / "ab" and b.path.name.endswith(".partial")
        assert b.path.name.startswith(f".{KEY[:12]}.{os.getpid()}.")
        assert not (tmp_path / "refine" / "ab" / KEY).exists()  # not before the block ends
        b.meta["frames"] = 9
    entry = tmp_path / "refine" / "ab" / KEY
    assert json.loads((entry / "meta.json").read_text()) == {"stage": "refine", "key": KEY,
                                                              "params": {"seed": 3, "path": "x"},
                                                              "meta": {"frames": 9}, "files": {}}
    art = cache.get("refine", KEY)
    assert art == C.Artifact(stage="refine", key=KEY, path=entry, meta={"frames": 9})
    assert art.file("a.npy") == entry / "a.npy"
    assert cache.get("draft", KEY) is None  # another stage's key space
    with cache.build("upscale", KEY) as b:
        pass
    assert json.loads((tmp_path / "upscale" / "ab" / KEY / "meta.json").read_text())["params"] == {}


def test_a_second_builder_of_the_same_key_leaves_the_first_entry(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    with cache.build("draft", KEY) as b:
        (b.path / "f").write_text("first")
    with cache.build("draft", KEY) as b:
        (b.path / "f").write_text("second")
    assert (tmp_path / "draft" / "ab" / KEY / "f").read_text() == "first"
    assert [p.name for p in (tmp_path / "draft" / "ab").iterdir()] == [KEY]  # its temp folder is gone


@pytest.mark.parametrize("meta", [None, "{not json", json.dumps({"stage": "draft"})])
def test_an_entry_without_readable_meta_is_absent_or_empty(tmp_path: Path, meta: str | None) -> None:
    entry = tmp_path / "draft" / "ab" / KEY
    entry.mkdir(parents=True)
    if meta is not None:
        (entry / "meta.json").write_text(meta)
    got = StageCache(tmp_path).get("draft", KEY)
    if meta is None or meta.startswith("{not"):
        assert got is None
    else:
        assert got is not None and got.meta == {}


@pytest.fixture
def other_process() -> Iterator[int]:
    """A live process of ours (never signal PID 1 or the test runner, even from a mutant)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_sweep_leaves_live_and_unnamed_folders_and_counts_what_it_removed(tmp_path: Path, other_process: int) -> None:
    cache = StageCache(tmp_path / "none")
    assert cache.sweep_partials() == 0  # no cache folder yet
    cache = StageCache(tmp_path)
    base = tmp_path / "draft" / "cd"
    gone = [base / ".cdcdcdcdcdcd.999999999.a.partial", base / ".cdcdcdcdcdcd.0.b.partial",
            base / ".cdcdcdcdcdcd.x.c.partial"]
    kept = [base / f".cdcdcdcdcdcd.{other_process}.d.partial", base / f".cdcdcdcdcdcd.{other_process}.e.partial",
            base / ("cd" + "1" * 62)]
    for p in gone + kept:
        p.mkdir(parents=True)
    assert cache.sweep_partials() == 3
    assert [p.exists() for p in gone + kept] == [False] * 3 + [True] * 3


def test_builder_pid_parsing(other_process: int) -> None:
    assert C._builder_pid(".abcdef012345.4242.xyz.partial") == 4242
    assert C._builder_pid(".abcdef012345.x.partial") == 0
    assert C._builder_pid(".abc12.partial") == 0  # too few parts to be ours
    assert C._builder_pid(".abc.12.partial") == 12
    assert not pid_alive(0) and not pid_alive(-3)
    assert pid_alive(other_process)


def test_digest_and_key_are_sha256_of_canonical_json() -> None:
    assert C.digest(b"abc") == hashlib.sha256(b"abc").hexdigest()
    blob = json.dumps({"stage": "s", "version": 2, "params": {"a": [1, 2], "p": "x"}, "inputs": {"i": "k"}},
                      sort_keys=True, separators=(",", ":"))
    assert stage_key("s", 2, {"p": Path("x"), "a": [1, 2]}, {"i": "k"}) == hashlib.sha256(blob.encode()).hexdigest()


def test_sweep_survives_junk_that_is_not_a_folder(tmp_path: Path) -> None:
    junk = tmp_path / "draft" / "ef" / ".efefefefefef.999999999.z.partial"
    junk.parent.mkdir(parents=True)
    junk.write_text("not a folder")
    assert StageCache(tmp_path).sweep_partials() == 1  # counted, and the sweep goes on


def _entry(cache: StageCache, stage: str = "draft") -> Path:
    """An entry with a frames file and one in a sub-folder, as a stage leaves them."""
    with cache.build(stage, KEY) as b:
        (b.path / "frames.npy").write_bytes(b"\x93NUMPY" + bytes(1000))
        (b.path / "sub").mkdir()
        (b.path / "sub" / "audio.npy").write_bytes(bytes(500))
    return cache.root / stage / KEY[:2] / KEY


@pytest.mark.parametrize("damage", ["cut short", "deleted", "emptied"])
def test_a_damaged_entry_is_absent_and_leaves_nothing_behind(tmp_path: Path, damage: str) -> None:
    """A file cut short by a disk error (not empty), removed, or emptied: the stage runs again,
    and the entry is gone entirely (no folder set aside and left on the disk)."""
    cache = StageCache(tmp_path)
    entry = _entry(cache)
    assert json.loads((entry / "meta.json").read_text())["files"] == {"frames.npy": 1006, "sub/audio.npy": 500}
    victim = entry / "sub" / "audio.npy"
    {"cut short": lambda: victim.write_bytes(bytes(499)), "deleted": victim.unlink,
     "emptied": lambda: victim.write_bytes(b"")}[damage]()
    assert cache.get("draft", KEY) is None
    assert list((tmp_path / "draft" / KEY[:2]).iterdir()) == []
    assert cache.used == set()


def test_an_intact_entry_is_found_and_recorded_as_used(tmp_path: Path) -> None:
    """What a render found is what ``sulphur cache --prune`` keeps."""
    cache = StageCache(tmp_path)
    _entry(cache, "upscale")
    assert cache.get("upscale", KEY) is not None
    assert cache.used == {f"upscale/{KEY}"}


@pytest.mark.parametrize("size,found", [(0, False), (1, True)])
def test_an_entry_from_before_sizes_were_recorded_is_damaged_only_by_an_empty_file(tmp_path: Path, size: int,
                                                                                    found: bool) -> None:
    entry = tmp_path / "draft" / "ab" / KEY
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"stage": "draft", "key": KEY, "params": {}, "meta": {}}))
    (entry / "frames.npy").write_bytes(bytes(size))
    assert (StageCache(tmp_path).get("draft", KEY) is not None) is found
