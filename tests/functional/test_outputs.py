"""Issue 19 items 3 and 5: concurrent renders and a full disk outside a stage.

The full-disk cases mount a small tmpfs (root only; skipped elsewhere): a real ENOSPC
from the kernel, not a mock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.functional.conftest import tiny_storyboard, tmpfs

ROOT = Path(__file__).resolve().parents[2]

STORY = tiny_storyboard([{"id": "a", "prompt": "a lighthouse", "frames": 9}], preset="tiny", fps=8, enhance=False,
                        draft_size=[64, 64], output_size=[128, 128])


@pytest.fixture()
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A 2 MiB tmpfs: writes past it fail with ENOSPC."""
    with tmpfs(tmp_path / "disk", "2m") as mnt:
        yield mnt


def _fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.timeout(60)
def test_two_copies_into_one_file_never_collide(tmp_path: Path) -> None:
    """Item 3: fixed temporary names (segments/<id>.mp4 via .<id>.mp4.partial) raced: FileNotFoundError."""
    from pipeline.render.runner import atomic_copy

    sources = [tmp_path / f"src{i}.bin" for i in range(2)]
    for i, src in enumerate(sources):
        src.write_bytes(bytes([i]) * 200_000)
    target = tmp_path / "out" / "a.mp4"
    target.parent.mkdir()
    errors: list[BaseException] = []

    def copier(src: Path) -> None:
        try:
            for _ in range(150):
                atomic_copy(src, target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=copier, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert target.read_bytes() in (s.read_bytes() for s in sources)
    assert [p.name for p in target.parent.iterdir()] == ["a.mp4"]  # no temporary left


@pytest.mark.timeout(240)
def test_a_second_render_of_the_same_storyboard_says_one_is_running(tmp_path: Path) -> None:
    """Item 3: two renders of one storyboard broke each other (11 of 12 trials)."""
    (tmp_path / "s.toml").write_text(STORY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "render", "s.toml"], cwd=tmp_path,
                             env={**env, "SULPHUR_FAULT_SLOW": "draft:200"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        while not list((tmp_path / ".sulphur" / "cache").glob("draft/*/.*.partial")):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "render", "s.toml"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
    finally:
        first.kill()
        first.wait()
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1 and len(lines) == 1, second.stderr
    assert "s.toml" in lines[0] and "running" in lines[0] and f"PID {first.pid}" in lines[0]


def _segment(folder: Path, name: str, value: int) -> Path:
    from pipeline.stages.encode import encode_in_fresh_process

    np.save(folder / f"{name}.npy", np.full((9, 128, 128, 3), value, np.uint8))
    out = folder / f"{name}.mp4"
    encode_in_fresh_process(out, folder / f"{name}.npy", None, 48000, fps=8, size=(128, 128))
    return out


@pytest.mark.timeout(120)
def test_a_full_disk_during_the_film_is_one_line_and_leaves_nothing(tmp_path: Path, small_disk: Path) -> None:
    """Item 5: ENOSPC in the film gave a traceback, a pointless full re-encode and .final.partial.mp4."""
    from pipeline.project.layout import RenderFolder
    from pipeline.project.storyboard import parse
    from pipeline.render.cache import Artifact
    from pipeline.render.errors import RenderError
    from pipeline.render.film import CachedSegment, assemble_film
    from pipeline.render.job import RenderJob

    story = STORY + '\n[[segment]]\nid = "b"\nprompt = "the beam"\nframes = 9\nanchor = "none"\n'
    job = RenderJob.resolve(parse(story, tmp_path / "s.toml"))
    cached = {}
    for i, seg in enumerate(job.storyboard.segments):
        folder = tmp_path / seg.id
        folder.mkdir()
        mp4 = _segment(folder, "segment", 40 + 100 * i)
        np.save(folder / "frames.npy", np.full((9, 128, 128, 3), 40 + 100 * i, np.uint8))
        art = Artifact("upscale", f"k{i}", folder, {"sample_rate": 48000})
        cached[i] = CachedSegment(frames=art, draft=art, encode=Artifact("encode", f"e{i}", mp4.parent, {}), kept=9)
    out = small_disk / "renders"
    out.mkdir()
    _fill(small_disk)
    events: list = []
    t = time.perf_counter()
    with pytest.raises(RenderError) as info:
        assemble_film(job, cached.get, RenderFolder(out), events.append)
    assert info.value.kind == "disk_full"
    assert "final.mp4" in info.value.message and "\n" not in info.value.message
    assert sorted(p.name for p in out.iterdir()) == []  # no partial film, no manifest
    assert not any("re-encoded" in getattr(e, "message", "") for e in events)
    assert time.perf_counter() - t < 30


@pytest.mark.timeout(120)
def test_a_worker_started_on_a_full_disk_says_so(small_disk: Path) -> None:
    """Item 5: a worker started on a full disk died with an empty log."""
    from pipeline.worker.client import WorkerClient, WorkerError

    (small_disk / "s.toml").write_text(STORY)
    (small_disk / ".sulphur").mkdir(mode=0o700)
    _fill(small_disk)
    with pytest.raises(WorkerError) as info:
        WorkerClient.connect(small_disk, timeout=60).close()
    assert "full" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_real_render_records_its_entries_and_prune_frees_an_edited_shot(tmp_path: Path) -> None:
    """Item 9: the cache grew forever; after an edit, the old shot's entries are what --prune removes."""
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    (tmp_path / "s.toml").write_text(STORY)
    assert run("render", "s.toml").returncode == 0
    first = json.loads(run("cache", "--json").stdout)
    assert first["storyboards"]["s.toml"] == first["total"] > 0 and first["unreferenced"] == 0
    (tmp_path / "s.toml").write_text(STORY.replace("a lighthouse", "a windmill"))
    assert run("render", "s.toml").returncode == 0
    second = json.loads(run("cache", "--json").stdout)
    assert second["unreferenced"] > 0  # the lighthouse's entries
    pruned = json.loads(run("cache", "--prune", "--json").stdout)
    assert pruned["pruned"] >= 3 and pruned["total"] == pruned["storyboards"]["s.toml"]
    assert run("render", "s.toml").stderr.count(" cached") >= 4  # nothing the current film needs was removed
