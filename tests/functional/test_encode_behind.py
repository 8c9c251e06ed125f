"""The local engine encodes segment k behind segment k+1's GPU stages (issue 20), and a failure
or a cancel behind the front still ends the render the way it did in line.

Real tiny renders through :func:`pipeline.render.runner.render` in this process; the
encode is held back with ``SULPHUR_FAULT_SLOW`` (a wait at the stage's start) so the overlap
is certain without timing anything.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.render.errors import RenderError
from pipeline.render.runner import render
from pipeline.stages.base import Cancelled
from pipeline.wire import protocol
from tests.functional.conftest import cache_entries, tiny_storyboard

pytestmark = pytest.mark.slow

BOARD = tiny_storyboard([{"id": "one", "prompt": "a lighthouse at dawn", "frames": 9},
                         {"id": "two", "prompt": "the beam sweeps the sea", "frames": 9}],
                        title="behind", fps=8, preset="tiny", output_size=[224, 128], enhance=False)


def _board(tmp_path: Path) -> Path:
    path = tmp_path / "behind.toml"
    path.write_text(BOARD)
    return path


def _index(events: list[protocol.Event], kind: type, segment: str, stage: str | None = None) -> int:
    return next(i for i, e in enumerate(events) if isinstance(e, kind) and e.segment == segment
                and (stage is None or getattr(e, "stage", None) == stage))


def test_the_next_draft_starts_before_the_encode_before_it_ends(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SULPHUR_FAULT_SLOW", "encode:4")  # each encode waits 4 s before it starts work
    events: list[protocol.Event] = []
    final = render(_board(tmp_path), emit=events.append)
    assert final.name == "final.mp4" and final.stat().st_size > 0
    # shot two drafted while shot one's encode was still running...
    assert _index(events, protocol.StageStarted, "two", "draft") < _index(events, protocol.StageFinished, "one", "encode")
    # ...and the film waited for both encodes
    film = next(i for i, e in enumerate(events) if isinstance(e, protocol.StageStarted) and e.stage == "film")
    assert max(_index(events, protocol.SegmentDone, s) for s in ("one", "two")) < film
    assert len(cache_entries(tmp_path, "encode")) == 2
    done = [e for e in events if isinstance(e, protocol.StageFinished) and e.stage == "encode"]
    assert all(e.peak_reserved == 0 and e.peak_allocated == 0 for e in done)  # a CPU stage claims no GPU peak
    # the measurements ran on their own lane, and all of them before the job's end: the refined
    # and the encoded frames' flicker and the preview picture of each shot
    job_end = next(i for i, e in enumerate(events) if isinstance(e, protocol.JobFinished))
    for seg in ("one", "two"):
        for stage in ("refine", "encode"):
            assert _index(events, protocol.FlickerReport, seg, stage) < job_end
        assert _index(events, protocol.Preview, seg, "upscale") < job_end


def test_an_encode_that_fails_behind_fails_the_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SULPHUR_FAULT_OOM", "encode:all")
    events: list[protocol.Event] = []
    with pytest.raises(RenderError) as info:
        render(_board(tmp_path), emit=events.append)
    assert info.value.kind == "oom" and info.value.stage == "encode"
    assert not cache_entries(tmp_path, "encode")
    assert not any(isinstance(e, protocol.JobFinished) for e in events)
    assert not (tmp_path / "renders" / "behind" / "final.mp4").exists()


def test_a_cancel_reaches_the_encode_behind_and_a_rerun_resumes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    board = _board(tmp_path)
    monkeypatch.setenv("SULPHUR_FAULT_SLOW", "encode:300")
    cancel = threading.Event()

    def emit(e: protocol.Event) -> None:
        if isinstance(e, protocol.StageStarted) and e.stage == "encode" and e.segment == "one":
            cancel.set()  # the user cancels while shot one encodes behind shot two

    with pytest.raises(Cancelled):
        render(board, emit=emit, cancel=cancel)
    assert not cache_entries(tmp_path, "encode")  # no partial entry
    monkeypatch.delenv("SULPHUR_FAULT_SLOW")
    events: list[protocol.Event] = []
    render(board, emit=events.append)
    cached = {(e.segment, e.stage) for e in events if isinstance(e, protocol.StageCached)}
    assert ("one", "draft") in cached and ("one", "upscale") in cached  # only what was not finished ran again
    assert len(cache_entries(tmp_path, "encode")) == 2
