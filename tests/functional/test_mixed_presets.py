"""A storyboard may pick the model per shot: an LTX-2 shot (with audio) chained into an
LTX-Video 0.9 shot (video only) renders to one film."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.render.runner import RenderError, render
from pipeline.wire import protocol
from tests.functional.conftest import tiny_storyboard

pytestmark = pytest.mark.slow

def _story(second: str) -> str:
    return tiny_storyboard([dict(id="opening", prompt="a harbour at dawn", frames=9),
                            dict(id="continue", preset=second, prompt="the fishing boats leave the harbour", frames=9)],
                           fps=24, seed=3, output_size=[320, 180], enhance=False)


def test_each_shot_uses_its_own_preset_and_the_film_joins_them(tmp_path: Path) -> None:
    path = tmp_path / "mixed.toml"
    path.write_text(_story("tiny-ltxv"))
    events: list[protocol.Event] = []
    final = render(path, emit=events.append)
    drafts = {e.segment: e for e in events if isinstance(e, protocol.StageFinished) and e.stage == "draft"}
    assert set(drafts) == {"opening", "continue"}
    cache = tmp_path / ".sulphur" / "cache" / "draft"
    meta = {seg: (cache / e.cache_key[:2] / e.cache_key / "meta.json").read_text() for seg, e in drafts.items()}
    assert "tiny-ltxv" in meta["continue"] and "tiny-ltxv" not in meta["opening"]
    anchor = np.load(cache / drafts["continue"].cache_key[:2] / drafts["continue"].cache_key / "anchor.npy")
    assert anchor.ndim == 3  # chained across model families
    with av.open(str(final)) as c:
        n = sum(1 for _ in c.decode(video=0))
    with av.open(str(final)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        seconds = sum(f.samples for f in c.decode(audio=0)) / rate
    segs = [e.frames for e in events if isinstance(e, protocol.SegmentDone)]
    assert n == sum(segs) - 1
    assert abs(seconds - n / 24) <= 1 / 24  # the video-only shot is filled with silence
    # Both families' segments are encoded alike: the film copies their H.264 across the seam.
    assert json.loads((final.parent / "film.json").read_text())["video"] == "copied"


def test_an_unknown_shot_preset_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "mixed.toml"
    path.write_text(_story("no-such-model"))
    events: list[protocol.Event] = []
    with pytest.raises(RenderError) as info:
        render(path, emit=events.append)
    assert info.value.kind == "unknown_preset" and info.value.segment == "continue"
    assert not [e for e in events if isinstance(e, protocol.StageStarted)]
