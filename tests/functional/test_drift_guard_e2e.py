"""Drift guard through the real tiny pipeline: what anchor segment k+1 gets, and cache keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.quality.drift import match_colors
from pipeline.render.runner import render
from pipeline.wire import protocol
from tests.functional.conftest import cache_entry, tiny_storyboard

pytestmark = pytest.mark.slow

def _story(guard: str) -> str:
    return tiny_storyboard(
        [dict(id="a", prompt="a red boat on a calm sea", frames=9),
         dict(id="b", prompt="the boat sails towards a green island", frames=9),
         dict(id="c", prompt="the sun sets behind the island", frames=9)],
        title="drift", fps=24, seed=5, output_size=[320, 180], enhance=False, drift_guard=guard, drift_strength=0.8)


def _render(folder: Path, guard: str) -> list[protocol.Event]:
    path = folder / "story.toml"
    path.write_text(_story(guard))
    events: list[protocol.Event] = []
    render(path, segments=["c"], emit=events.append)
    return events


def _keys(events: list[protocol.Event], stage: str) -> dict[str, str]:
    out = {}
    for e in events:
        if isinstance(e, (protocol.StageFinished, protocol.StageCached)) and e.stage == stage:
            out[e.segment] = e.cache_key
    return out


def test_anchor_is_colour_matched_only_with_the_guard_on(tmp_path: Path) -> None:
    off = _render(tmp_path, "off")
    drafts = _keys(off, "draft")
    last = {s: np.load(cache_entry(tmp_path, "draft", k) / "frames.npy")[-1] for s, k in drafts.items()}
    raw_anchor = np.load(cache_entry(tmp_path, "draft", drafts["c"]) / "anchor.npy")
    assert np.array_equal(raw_anchor, last["b"])

    on = _render(tmp_path, "anchor")
    on_drafts = _keys(on, "draft")
    assert on_drafts["a"] == drafts["a"]  # the first shot has no anchor to guard
    # Segment c's anchor is b's last frame matched to the reference (a's last draft frame).
    b_last = np.load(cache_entry(tmp_path, "draft", on_drafts["b"]) / "frames.npy")[-1]
    a_last = np.load(cache_entry(tmp_path, "draft", on_drafts["a"]) / "frames.npy")[-1]
    anchor = np.load(cache_entry(tmp_path, "draft", on_drafts["c"]) / "anchor.npy")
    expected = match_colors(b_last, a_last, 0.8)
    assert np.array_equal(anchor, expected)
    assert not np.array_equal(anchor, b_last)
    assert on_drafts["c"] != drafts["c"], "the guard must change the draft's cache key"
    reports = [e for e in on if isinstance(e, protocol.DriftReport)]
    assert {r.segment for r in reports} == {"a", "b", "c"} and all(r.guard == "anchor" for r in reports)


def test_anchor_plus_output_grades_the_encoded_frames(tmp_path: Path) -> None:
    events = _render(tmp_path, "anchor+output")
    ran = {(e.segment, e.stage) for e in events if isinstance(e, protocol.StageFinished)}
    assert ("c", "grade") in ran
    graded = cache_entry(tmp_path, "grade", _keys(events, "grade")["c"]) / "frames.npy"
    upscaled = cache_entry(tmp_path, "upscale", _keys(events, "upscale")["c"]) / "frames.npy"
    g, u = np.load(graded), np.load(upscaled)
    assert g.shape == u.shape
    assert np.array_equal(g[0], u[0])          # the ramp starts at identity (the anchor is matched)
    assert not np.array_equal(g[-1], u[-1])    # and ends at the full correction
