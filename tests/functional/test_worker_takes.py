"""The worker's takes mode without rendering anything heavy: what it refuses, what it
records, and a journal from before takes jobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeline.wire import protocol
from pipeline.worker.client import WorkerClient, WorkerError
from pipeline.worker.journal import JobRecord, Journal
from tests.functional.conftest import stop_worker_or_kill, tiny_storyboard, wait_until

STORYBOARD = tiny_storyboard(
    [dict(id="one", prompt="a red lighthouse", frames=9), dict(id="two", prompt="the beam sweeps", frames=9)],
    title="takes test", fps=8, preset="no-such-preset", output_size=[192, 128], draft_size=[96, 64],
    enhance=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("takes")
    (folder / "story.toml").write_text(STORYBOARD)
    yield folder
    stop_worker_or_kill(folder)


@pytest.mark.parametrize(("mode", "segments", "seeds", "error"), [
    ("takes", ["two"], [], "mode 'takes' needs at least one seed"),
    ("takes", [], [3], "mode 'takes' needs exactly one segment id"),
    ("takes", ["one", "two"], [3], "mode 'takes' needs exactly one segment id"),
    ("takes", ["three"], [3], "three"),
    ("takes", ["two"], list(range(protocol.MAX_TAKES + 1)), f"at most {protocol.MAX_TAKES} takes"),
    ("takes", ["two"], [-1], "seeds are whole numbers from 0"),
    ("segments", ["two"], [3], "seeds are for mode 'takes', not 'segments'"),
])
def test_refused(project: Path, mode: str, segments: list[str], seeds: list[int], error: str) -> None:
    with WorkerClient.connect(project, idle_timeout=300) as client, pytest.raises(WorkerError, match=error):
        client.submit(project / "story.toml", mode=mode, segments=segments, seeds=seeds)


def test_takes_job_is_journaled_with_its_seeds(project: Path) -> None:
    """Seeds asked twice count once; the status and the journal name them; an identical
    pending job is not queued twice."""
    with WorkerClient.connect(project, idle_timeout=300) as client:
        job = client.submit(project / "story.toml", mode="takes", segments=["two"], seeds=[5, 6, 5])
        info = next(j for j in client.status().jobs if j.job_id == job)
        assert (info.segments, info.seeds) == (["two"], [5, 6])
        wait_until(lambda: next(j for j in client.status().jobs if j.job_id == job).state == "failed",
                   what="the job to fail on its unknown preset")
    journal = Journal(project / ".sulphur" / "journal.db")
    try:
        record = journal.get(job)
        assert record is not None and (record.mode, record.segments, record.seeds) == ("takes", ["two"], [5, 6])
        queued = [e for e in journal.events(job) if isinstance(e, protocol.JobQueued)]
        assert [e.seeds for e in queued] == [[5, 6]]
    finally:
        journal.close()


def test_journal_from_before_takes_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    old = sqlite3.connect(db)
    old.executescript("""CREATE TABLE jobs (id TEXT PRIMARY KEY, storyboard TEXT NOT NULL, mode TEXT NOT NULL,
        segments TEXT NOT NULL, selected TEXT NOT NULL, preset TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,
        created REAL NOT NULL, updated REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        crashes INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', result TEXT NOT NULL DEFAULT '');
        INSERT INTO jobs VALUES ('old', 's.toml', 'all', '[]', '["a"]', '', 'done', 1, 1, 1, 0, '', 'f.mp4');""")
    old.commit()
    old.close()
    journal = Journal(db)
    try:
        assert journal.get("old") is not None and journal.get("old").seeds == []
        journal.add_job(JobRecord(id="new", storyboard="s.toml", mode="takes", segments=["a"], selected=["a"],
                                  seeds=[1, 2]))
        assert journal.get("new").seeds == [1, 2]
    finally:
        journal.close()


def test_takes_decide_compiling_the_upscaler_on_every_frame_they_upscale(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each take upscales the shot once in the same process, so whether compiling the upscaler
    pays (esrgan_compile_pays: enough frames) is decided on frames × takes, not one shot's frames."""
    from pipeline.render.runner import Renderer
    from pipeline.render.takes import render_takes_local

    story = tmp_path / "story.toml"
    story.write_text(STORYBOARD.replace('"no-such-preset"', '"tiny"'))
    counted: list[int] = []
    real = Renderer.plans

    def plans(self: Renderer, stage: str, *a: object, **k: object) -> list:
        if stage == "upscale":
            counted.append(self.upscale_frames)
        return real(self, stage, *a, **k)

    monkeypatch.setattr(Renderer, "plans", plans)
    takes = render_takes_local(story, "two", [5, 6, 7])
    assert sorted(takes) == [5, 6, 7]
    # the first call is preflight's check that some plan fits; then one upscale per take
    assert counted[-3:] == [3 * 9] * 3
