"""Retake a span end to end on the tiny twin: render, retake frames 5..8, undo.

The shot also has an end keyframe, so keyframes run through the whole render too
(condition-pipeline draft → refine → upscale → encode) and combine with the retake.

In process (``pipeline.render.runner.render``) with one model holder, as a worker keeps
them. What a user sees of a shot is its segment MP4; H.264 is not lossless, so "outside
the span byte-identical" is asserted on the frames the encode stage is given (the
``retake`` splice vs the original's upscale entry). The encode of identical frames is
deterministic (EncodeStage v3 pins x264's frame threads for reproducible bytes), which
the undo step shows: the restored segment MP4 is byte-for-byte the first render's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.render.errors import RenderError
from pipeline.render.runner import render
from pipeline.wire import protocol
from tests.functional.conftest import cache_entries, decode_frames, tiny_storyboard

pytestmark = pytest.mark.slow
SPAN = (5, 8)


def _board(path: Path, **shot: object) -> Path:
    from PIL import Image

    Image.new("RGB", (300, 200), (220, 120, 40)).save(path.parent / "end.png")
    shot = {"keyframes": [{"frame": -1, "image": "end.png"}], **shot}
    path.write_text(tiny_storyboard([{"id": "a", "prompt": "a red fox in the snow", "frames": 17, **shot}],
                                    title="retake", fps=8, seed=3, preset="tiny", output_size=[448, 256],
                                    enhance=False))
    return path


def _render(board: Path, models: LoadedModels) -> list[protocol.Event]:
    events: list[protocol.Event] = []
    render(board, emit=events.append, models=models)
    return events


def _ran(events: list[protocol.Event]) -> list[str]:
    return [e.stage for e in events if isinstance(e, protocol.StageFinished) and e.segment]


def _frames(project: Path, stage: str, key: str) -> np.ndarray:
    return np.load(cache_entries(project, stage)[key] / "frames.npy")


def test_a_retake_changes_only_its_span_and_undo_restores_the_original(tmp_path: Path) -> None:
    models = LoadedModels()
    board = _board(tmp_path / "retake.toml")
    segment_mp4 = tmp_path / "renders" / "retake" / "segments" / "a.mp4"

    # 1. The original render.
    first = _render(board, models)
    assert _ran(first) == ["draft", "refine", "upscale", "encode"]
    original_mp4 = segment_mp4.read_bytes()
    (up_key,) = cache_entries(tmp_path, "upscale")
    original = _frames(tmp_path, "upscale", up_key)

    # 2. retake = [5, 8]: the take is drafted, refined and upscaled, then spliced; the original stays cached.
    _board(board, retake=list(SPAN))
    second = _render(board, models)
    assert _ran(second) == ["retake-draft", "refine", "upscale", "retake", "encode"]
    (splice_key,) = cache_entries(tmp_path, "retake")
    spliced = _frames(tmp_path, "retake", splice_key)
    a, b = SPAN
    outside = np.r_[0:a, b + 1:len(original)]
    assert np.array_equal(spliced[outside], original[outside])  # byte-identical outside the span
    inside = np.abs(spliced[a:b + 1].astype(int) - original[a:b + 1]).mean(axis=(1, 2, 3))
    assert (inside > 1.0).all(), inside  # every retaken frame is new
    assert up_key in cache_entries(tmp_path, "upscale")
    film = json.loads((tmp_path / "renders" / "retake" / "film.json").read_text())
    assert film["segments"][0]["upscale_key"] == splice_key  # the film uses the retake
    shown = decode_frames(segment_mp4)
    assert len(shown) == len(original)
    assert np.abs(shown[a:b + 1].astype(int) - decode_frames_of(original_mp4, tmp_path)[a:b + 1]).mean() > 1.0

    # 3. Undo: without the key every entry is the original's, nothing renders, the MP4 is the first one.
    _board(board)
    third = _render(board, models)
    assert _ran(third) == []
    assert {e.stage for e in third if isinstance(e, protocol.StageCached)} >= {"draft", "refine", "upscale",
                                                                               "encode"}
    assert segment_mp4.read_bytes() == original_mp4

    # 4. The same retake again is a cache hit too (its own entries, keyed on original + span + seed).
    _board(board, retake=list(SPAN))
    assert _ran(_render(board, models)) == []


def decode_frames_of(data: bytes, tmp: Path) -> np.ndarray:
    path = tmp / "first.mp4"
    path.write_bytes(data)
    return decode_frames(path)


def test_other_families_refuse_keyframes_and_retake_before_any_stage(tmp_path: Path) -> None:
    for key, value in (("retake", [1, 2]), ("keyframes", [{"frame": -1, "image": "end.png"}])):
        board = _board(tmp_path / "wan.toml", preset="tiny-wan-ti2v", **{"keyframes": [], key: value})
        events: list[protocol.Event] = []
        with pytest.raises(RenderError) as err:
            render(board, emit=events.append)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{board}:") and f"segment[0].{key}:" in message
        assert "tiny-wan-ti2v" in message
        assert not [e for e in events if isinstance(e, protocol.StageStarted)]
