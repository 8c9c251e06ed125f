"""Colour drift: measured gains match planted ones; the guard stops the compounding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.quality import drift as d

H, W = 64, 96
CONTRAST, SATURATION = 1.08, 1.10  # planted per segment


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return d.synthetic_scene(H, W, seed=1)


def test_lab_is_the_standard_one() -> None:
    px = np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0], [128, 128, 128]]], np.uint8)
    lab = d.rgb_to_lab(px)[0]
    # CIE Lab of sRGB white, red, black and mid-grey (D65), as colour-science tables list.
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[1], [53.24, 80.09, 67.20], atol=0.02)
    np.testing.assert_allclose(lab[2], [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[3], [53.59, 0, 0], atol=0.01)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(d.lab_to_rgb(d.rgb_to_lab(img)), img)  # lossless round trip


def test_stats_of_flat_and_grey_frames() -> None:
    grey = np.full((8, 8, 3), 128, np.uint8)
    s = d.frame_stats(grey)
    assert s["contrast"] == 0 and s["saturation"] == 0 and s["chroma"] == pytest.approx(0, abs=1e-3)
    assert d.drift(s, s)["contrast"] == 1.0 and d.drift(s, s)["delta_e"] == 0
    with pytest.raises(ValueError, match="uint8"):
        d.frame_stats(grey.astype(np.float32))


@pytest.mark.parametrize("segments", [1, 3, 6])
def test_drift_measures_the_planted_gain(scene: np.ndarray, segments: int) -> None:
    segs = d.simulate_chain(scene, segments=segments, contrast=CONTRAST, saturation=SATURATION)
    got = d.drift(d.frame_stats(segs[-1][-1]), d.frame_stats(scene))
    for key, gain in (("contrast", CONTRAST), ("saturation", SATURATION)):
        planted = gain**segments
        assert abs(got[key] - planted) / planted < 0.05, (key, got[key], planted)


def test_drift_keys_are_differences_and_ratios(scene: np.ndarray) -> None:
    brighter = np.clip(scene.astype(int) + 20, 0, 255).astype(np.uint8)
    got = d.drift(d.frame_stats(brighter), d.frame_stats(scene))
    assert got["L_mean"] > 5 and got["luma_mean"] == pytest.approx(20 / 255, abs=0.01)
    assert got["delta_e"] >= abs(got["L_mean"])
    assert got["contrast"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("method", d.METHODS)
def test_guard_holds_drift_after_six_segments(scene: np.ndarray, method: str) -> None:
    """Reference = the first segment's last frame. Off: drift compounds as planted.
    "anchor": only the last segment's own burn remains (never more than one gain, ±3 %).
    "anchor+output": within 2 % of the reference."""
    ref_stats = None
    results = {}
    for guard in ("off", "anchor", "anchor+output"):
        segs = d.simulate_chain(scene, segments=6, contrast=CONTRAST, saturation=SATURATION, guard=guard,
                                method=method)
        ref_stats = d.frame_stats(segs[0][-1])
        results[guard] = [d.drift(d.frame_stats(s[-1]), ref_stats) for s in segs]
    for key, gain in (("contrast", CONTRAST), ("saturation", SATURATION)):
        off = [r[key] for r in results["off"]]
        assert abs(off[-1] - gain**5) / gain**5 < 0.05  # five more burns after the reference
        assert all(b > a for a, b in zip(off, off[1:], strict=False))  # it grows every segment
        for r in results["anchor"][1:]:
            assert abs(r[key] - gain) < 0.03 * gain, (key, r[key])
        for r in results["anchor+output"]:
            assert abs(r[key] - 1.0) < 0.02, (key, r[key])
    assert max(r["delta_e"] for r in results["anchor+output"]) < 0.5


def test_guard_keeps_content(scene: np.ndarray) -> None:
    """Matching a burnt frame back gives the unburnt frame within a few levels, and a
    frame already in the reference look is left alone."""
    burnt = d.burn(scene, 1.3, 1.4)
    fixed = d.match_colors(burnt, scene, 1.0)
    err_before = np.abs(burnt.astype(int) - scene).mean()
    err_after = np.abs(fixed.astype(int) - scene).mean()
    assert err_after < err_before / 4 and err_after < 1.5
    same = d.match_colors(scene, scene, 1.0)
    assert np.abs(same.astype(int) - scene).max() <= 1


def test_strength_blends(scene: np.ndarray) -> None:
    burnt = d.burn(scene, 1.3, 1.4)
    ref = d.frame_stats(scene)
    assert np.array_equal(d.match_colors(burnt, scene, 0.0), burnt)
    c = [d.drift(d.frame_stats(d.match_colors(burnt, scene, s)), ref)["contrast"] for s in (0.0, 0.5, 1.0)]
    assert c[0] > c[1] > c[2] and c[2] == pytest.approx(1.0, abs=0.02)
    assert c[1] == pytest.approx((c[0] + c[2]) / 2, abs=0.03)
    # Reference of another size works: only its statistics are used.
    small = scene[::2, ::2].copy()
    assert d.match_colors(burnt, small, 1.0).shape == burnt.shape


def test_match_frames_ramps_and_adds_no_flicker(scene: np.ndarray) -> None:
    from pipeline.quality.flicker import analyze_frames

    seg = d.simulate_chain(scene, segments=2, frames=9, contrast=1.2, saturation=1.2)[1]
    fixed = d.match_colors_frames(seg, seg[0], 1.0)
    assert fixed.shape == seg.shape and fixed.dtype == np.uint8
    assert np.abs(fixed[0].astype(int) - seg[0]).max() == 0  # identity at the first frame
    ref = d.frame_stats(seg[0])
    assert d.drift(d.frame_stats(fixed[-1]), ref)["contrast"] == pytest.approx(1.0, abs=0.02)
    before, after = analyze_frames(seg), analyze_frames(fixed)
    assert after.minimum >= before.minimum - 0.5  # the correction is smooth over time
    flat = d.match_colors_frames(seg, seg[0], 1.0, ramp=False)
    assert d.drift(d.frame_stats(flat[0]), ref)["contrast"] < 0.95  # no ramp: over-corrects frame 0
    assert math.isclose(d.match_colors_frames(seg, seg[0], 0.0).sum(), seg.sum())


@pytest.mark.parametrize("method", d.METHODS)
def test_torch_path_gives_the_same_frames(scene: np.ndarray, method: str) -> None:
    pytest.importorskip("torch")
    seg = d.simulate_chain(scene, segments=2, frames=6, contrast=1.2, saturation=1.2)[1]
    ref = seg[0]
    a = d.match_colors_frames(seg, ref, 0.8, method=method)
    b = d.match_colors_frames(seg, ref, 0.8, method=method, device="cpu")
    diff = np.abs(a.astype(int) - b)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_drift_event_round_trips(scene: np.ndarray) -> None:
    from pipeline.wire.protocol import decode_event, encode

    flat = np.full_like(scene, 128)
    ev = d.drift_event("shot2", scene, d.burn(scene, 1.08, 1.1), d.frame_stats(flat), guard="anchor", job_id="j")
    back = decode_event(encode(ev))  # contrast ratio against a flat frame: not inf on the wire
    assert back.segment == "shot2" and back.guard == "anchor" and back.drift["contrast"] == 999.0
    ev = d.drift_event("shot2", scene, d.burn(scene, 1.08, 1.1), d.frame_stats(scene))
    assert decode_event(encode(ev)).drift["contrast"] == pytest.approx(1.08, rel=0.05)


def test_grading_in_chunks_equals_grading_the_whole_segment() -> None:
    from pipeline.quality.drift import burn, match_colors_chunks, match_colors_frames, synthetic_scene

    scene = synthetic_scene(36, 48, seed=3)
    frames = np.stack([burn(scene, 1.0 + 0.02 * t, 1.0 + 0.03 * t) for t in range(11)])
    whole = match_colors_frames(frames, scene, 0.9)
    chunked = np.concatenate(list(match_colors_chunks((frames[i:i + 4] for i in range(0, 11, 4)), frames[-1],
                                                      11, scene, 0.9)))
    assert np.array_equal(whole, chunked)
    assert not np.array_equal(whole[-1], frames[-1])
