"""Issue 19 item 9: `sulphur cache` — size per storyboard, --prune, a size cap; journal retention."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.render.cache import StageCache
from tests.hostile.conftest import sulphur

pytestmark = pytest.mark.timeout(60)


def _entry(cache: StageCache, stage: str, key: str, size: int) -> str:
    with cache.build(stage, key) as b:
        (b.path / "frames.npy").write_bytes(b"\0" * size)
    assert cache.get(stage, key) is not None
    return f"{stage}/{key}"


def _project(tmp_path: Path) -> tuple[StageCache, dict[str, str]]:
    from pipeline.render.usage import record

    for name in ("one.toml", "two.toml"):
        (tmp_path / name).write_text('[[segment]]\nid = "a"\nprompt = "x"\n')
    cache = StageCache(tmp_path / ".sulphur" / "cache")
    keys = {n: _entry(cache, "draft", n * 32, size)
            for n, size in (("a", 100_000), ("b", 200_000), ("c", 400_000), ("d", 800_000))}
    record(tmp_path / "one.toml", {keys["a"], keys["b"]}, complete=True)
    record(tmp_path / "two.toml", {keys["b"], keys["c"]}, complete=True)
    return cache, keys  # d: used by nobody


def test_sizes_per_storyboard_and_prune(tmp_path: Path) -> None:
    cache, keys = _project(tmp_path)
    result = sulphur("cache", "--project", str(tmp_path), "--json", cwd=tmp_path)
    data = json.loads(result.stdout)
    assert data["storyboards"]["one.toml"] >= 300_000 and data["storyboards"]["two.toml"] >= 600_000
    assert 800_000 <= data["unreferenced"] < 810_000
    result = sulphur("cache", "--project", str(tmp_path), "--prune", cwd=tmp_path)
    assert result.returncode == 0 and "pruned 1 entries" in result.stdout, result.stdout + result.stderr
    assert cache.get("draft", "d" * 32) is None
    assert all(cache.get("draft", k * 32) is not None for k in "abc")


def test_a_deleted_storyboard_frees_what_only_it_used(tmp_path: Path) -> None:
    from pipeline.render.usage import prune

    cache, _ = _project(tmp_path)
    (tmp_path / "two.toml").unlink()
    removed, _ = prune(tmp_path)
    assert removed == 2  # c (two.toml only) and d; b is still one.toml's
    assert [k for k in "abcd" if cache.get("draft", k * 32) is not None] == ["a", "b"]


def test_a_failed_render_adds_to_the_record_instead_of_forgetting(tmp_path: Path) -> None:
    from pipeline.render.usage import record, report

    cache, keys = _project(tmp_path)
    record(tmp_path / "one.toml", {keys["d"]}, complete=False)
    assert report(tmp_path).unreferenced == []


def test_the_size_cap_prunes_oldest_unused_first(tmp_path: Path) -> None:
    from pipeline.render.usage import prune, report

    cache, keys = _project(tmp_path)
    old = _entry(cache, "upscale", "e" * 64, 300_000)  # unused, and newer than d
    time.sleep(0.01)
    total = report(tmp_path).total
    removed, freed = prune(tmp_path, limit_bytes=total - 500_000)
    assert removed == 1 and freed >= 800_000  # d alone (the oldest unused) brings it under
    assert cache.get("upscale", old.split("/")[1]) is not None


def test_the_cap_is_a_project_setting(tmp_path: Path) -> None:
    from pipeline.project.storyboard import StoryboardError, parse

    assert parse('[project]\ncache_limit_gb = 20\n[[segment]]\nid = "a"\nprompt = "x"\n').project.cache_limit_gb == 20
    with pytest.raises(StoryboardError, match=":2:1: project.cache_limit_gb"):
        parse('[project]\ncache_limit_gb = 0\n[[segment]]\nid = "a"\nprompt = "x"\n')


def test_finished_jobs_leave_the_journal_after_the_retention(tmp_path: Path) -> None:
    from pipeline.worker.journal import JobRecord, Journal

    journal = Journal(tmp_path / "journal.db")
    old, new, pending = (JobRecord(id=i, storyboard="s.toml", state=s) for i, s in
                         (("old", "done"), ("new", "failed"), ("pending", "queued")))
    for rec in (old, new, pending):
        journal.add_job(rec)
    journal._db.execute("UPDATE jobs SET updated=? WHERE id IN ('old', 'pending')", (time.time() - 90 * 86400,))
    assert journal.prune(time.time() - 30 * 86400) == 1
    assert sorted(r.id for r in journal.jobs()) == ["new", "pending"]


_HOLD = """
import sys, time
from pathlib import Path
from pipeline.render.outputs import OutputLock
with OutputLock(Path(sys.argv[1]), Path(sys.argv[2])):
    print("held", flush=True)
    time.sleep(60)
"""


def _render_holding(tmp_path: Path, stem: str):  # noqa: ANN202 - a Popen
    """Another process holding ``renders/<stem>/.lock`` exactly as a running render does."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "renders" / stem), str(tmp_path / f"{stem}.toml")],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_prune_waits_for_a_running_render(tmp_path: Path) -> None:
    """`sulphur cache --prune` during a render removed the entries it had just built (they are in
    no record until it ends): the render then failed reading its own refine. Now prune refuses,
    naming the render, and removes nothing; once that render has ended it prunes."""
    cache, _ = _project(tmp_path)
    proc = _render_holding(tmp_path, "two")
    try:
        result = sulphur("cache", "--project", str(tmp_path), "--prune", cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip() == f"sulphur cache --prune: renders/two (PID {proc.pid}) is rendering: " \
                                         "prune once it has finished"
        assert cache.get("draft", "d" * 32) is not None
    finally:
        proc.kill()
        proc.wait()
    result = sulphur("cache", "--project", str(tmp_path), "--prune", cwd=tmp_path)
    assert result.returncode == 0 and "pruned 1 entries" in result.stdout
    assert cache.get("draft", "d" * 32) is None


def test_a_render_pruning_after_itself_skips_only_its_own_lock(tmp_path: Path) -> None:
    """``cache_limit_gb``: the render that just finished still holds its lock while it prunes."""
    from pipeline.render.outputs import OutputLock
    from pipeline.render.usage import CacheInUse, prune

    cache, _ = _project(tmp_path)
    with OutputLock(tmp_path / "renders" / "one", tmp_path / "one.toml") as mine:
        proc = _render_holding(tmp_path, "two")
        try:
            with pytest.raises(CacheInUse, match=r"renders/two \(PID \d+\) is rendering"):
                prune(tmp_path, 0, own_lock=mine.path)
        finally:
            proc.kill()
            proc.wait()
        mine.release_cache()  # what the render does once it has recorded its entries
        assert prune(tmp_path, 0, own_lock=mine.path)[0] == 1
    assert cache.get("draft", "d" * 32) is None


def test_a_render_that_starts_during_a_prune_waits_for_it(tmp_path: Path) -> None:
    """The check-then-delete race: a render that took its lock after the prune looked at the
    render locks must not have entries deleted under it, nor start while the prune runs."""
    import threading

    from pipeline.render.outputs import OutputLock
    from pipeline.render.usage import CacheInUse, _exclusive_cache, prune, rendering_now
    from pipeline.stages.base import Cancelled

    cache, _ = _project(tmp_path)
    entered = threading.Event()
    told: list[str] = []

    def render() -> None:
        with OutputLock(tmp_path / "renders" / "two", tmp_path / "two.toml", waiting=told.append):
            entered.set()

    with _exclusive_cache(tmp_path):  # a prune past its look at the render locks
        starter = threading.Thread(target=render)
        starter.start()
        assert not entered.wait(0.5)  # the render waits for the prune, says so once ...
        assert told == ["waiting for a cache prune of this project to finish (sulphur cache --prune)"]
        assert rendering_now(tmp_path) == []  # ... and holds no output folder meanwhile
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):  # a cancelled wait ends
            OutputLock(tmp_path / "renders" / "one", tmp_path / "one.toml", cancel=cancel).__enter__()
    starter.join(10)
    assert entered.is_set()  # ... and starts when it is done
    with OutputLock(tmp_path / "renders" / "one", tmp_path / "one.toml") as lock:
        lock.path.unlink()  # its render lock gone from view: the shared cache lock still tells
        with pytest.raises(CacheInUse, match="a render of this project is running"):
            prune(tmp_path, 0)
    assert cache.get("draft", "d" * 32) is not None


def test_a_link_planted_as_the_cache_lock_is_never_followed(tmp_path: Path) -> None:
    from pipeline.render.outputs import OutputLock
    from pipeline.render.usage import prune

    _project(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "made-through-the-link"
    elsewhere.parent.mkdir()
    (tmp_path / ".sulphur" / "cache.lock").symlink_to(elsewhere)
    with OutputLock(tmp_path / "renders" / "one", tmp_path / "one.toml"):
        pass
    assert prune(tmp_path)[0] == 1  # d, which nothing uses
    assert not elsewhere.exists()


def test_a_fifo_planted_as_the_render_lock_is_named_and_leaks_nothing(tmp_path: Path) -> None:
    """It used to raise a bare ``[Errno 22]`` and keep the folder locked for the worker's life."""
    import os

    from pipeline.render.errors import RenderError
    from pipeline.render.outputs import OutputLock

    folder = tmp_path / "renders" / "one"
    folder.mkdir(parents=True)
    os.mkfifo(folder / ".lock")
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RenderError, match=r"/renders/one/\.lock: not usable as the render lock .*remove it"):
        OutputLock(folder, tmp_path / "one.toml").__enter__()
    assert len(os.listdir("/proc/self/fd")) == fds
    (folder / ".lock").unlink()
    with OutputLock(folder, tmp_path / "one.toml"):
        pass


def test_a_waiting_render_whose_report_fails_never_skips_the_lock(tmp_path: Path) -> None:
    """``waiting`` raising (a closed stdout: BrokenPipeError) ends the wait, not the locking."""
    import os

    from pipeline.render.outputs import OutputLock
    from pipeline.render.usage import _exclusive_cache

    _project(tmp_path)

    def broken(_: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    fds = len(os.listdir("/proc/self/fd"))
    with _exclusive_cache(tmp_path), pytest.raises(BrokenPipeError):
        OutputLock(tmp_path / "renders" / "one", tmp_path / "one.toml", waiting=broken).__enter__()
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_capped_render_prunes_after_itself_while_holding_its_lock(tmp_path: Path) -> None:
    """The render's own shared cache lock must not stop its own prune (the runner's path)."""
    from dataclasses import replace

    from pipeline.project.storyboard import load
    from pipeline.render.outputs import OutputLock
    from pipeline.render.usage import after_render

    cache, keys = _project(tmp_path)
    story = tmp_path / "one.toml"
    sb = load(story)
    sb = replace(sb, project=replace(sb.project, cache_limit_gb=1e-6))  # the tiny entries are over it
    events: list = []
    with OutputLock(tmp_path / "renders" / "one", story) as lock:
        after_render(sb, {keys["a"], keys["b"]}, True, events.append, lock)
    assert [e.message for e in events] == ["cache over 1e-06 GiB: removed 1 unused entries (781.4 KiB)"]
    assert [k for k in "abcd" if cache.get("draft", k * 32) is not None] == ["a", "b", "c"]  # c: two.toml's


def test_cache_bookkeeping_that_cannot_write_warns_in_words(tmp_path: Path) -> None:
    """``.sulphur`` a file: the warning said ``[Errno 20] Not a directory: '…'``."""
    from pipeline.project.storyboard import parse
    from pipeline.render.outputs import OutputLock
    from pipeline.render.usage import after_render

    (tmp_path / ".sulphur").write_text("not a folder")
    story = tmp_path / "one.toml"
    story.write_text('[[segment]]\nid = "a"\nprompt = "x"\n')
    events: list = []
    after_render(parse(story.read_text(), story), {"draft/" + "a" * 32}, True, events.append,
                     OutputLock(tmp_path / "renders" / "one", story))
    (log,) = events
    assert log.level == "warning" and log.message == \
        f"cache bookkeeping skipped: {tmp_path / '.sulphur' / 'uses'}: Not a directory"
