"""Drift guard: mean/std transfer in Lab vs histogram matching, on synthetic chains.

Prints JSON. For each scenario, guard mode and method: the drift of every segment's last
frame against the reference (the first segment's last frame), and the PSNR of the last
segment's last frame against the ideal frame (the same panned content in the reference's
look), which drops both when drift remains and when the guard damages content. The
"legit_change" case asks what a guard does to a frame whose look differs for an honest
reason (a dark object entered): PSNR of the matched frame against itself unmatched.

    python bench/drift.py [--size 96x64] [--segments 6]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.quality import drift as d  # noqa: E402
from pipeline.quality.flicker import luma, psnr_y  # noqa: E402


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return round(psnr_y(luma(a), luma(b)), 2) if not np.array_equal(a, b) else math.inf


def _rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return round(10 * math.log10(255**2 / mse), 2) if mse else math.inf


def chain_case(scene: np.ndarray, segments: int, frames: int, shift: int, gains: tuple[float, float, float],
               guard: str, method: str) -> dict:
    c, s, tone = gains
    segs = d.simulate_chain(scene, segments=segments, frames=frames, contrast=c, saturation=s, tone=tone,
                            guard=guard, method=method, shift=shift)
    ref = segs[0][-1]
    ref_stats = d.frame_stats(ref)
    drifts = [d.drift(d.frame_stats(s[-1]), ref_stats) for s in segs]
    ideal = np.roll(ref, shift * (frames - 1) * (segments - 1), axis=1)
    seams = [_psnr(a[-1], b[0]) for a, b in zip(segs[:-1], segs[1:], strict=True)]
    return {
        "contrast": [round(x["contrast"], 4) for x in drifts],
        "saturation": [round(x["saturation"], 4) for x in drifts],
        "delta_e": [round(x["delta_e"], 3) for x in drifts],
        "worst_abs_contrast_drift": round(max(abs(x["contrast"] - 1) for x in drifts), 4),
        "worst_abs_saturation_drift": round(max(abs(x["saturation"] - 1) for x in drifts), 4),
        "last_vs_ideal_rgb_psnr": _rgb_psnr(segs[-1][-1], ideal),
        "min_seam_psnr_y": min(seams) if seams else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="96x64")
    ap.add_argument("--segments", type=int, default=6)
    ap.add_argument("--frames", type=int, default=9)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    scene = d.synthetic_scene(h, w, seed=1)
    out: dict = {"size": [w, h], "segments": args.segments, "frames": args.frames,
                 "planted": {"contrast": 1.08, "saturation": 1.10}, "chains": {}}
    t0 = time.perf_counter()
    # (contrast, saturation, tone) per segment: an affine look change, and one with a
    # non-linear S-curve on luma that a mean/std transfer cannot undo exactly.
    for scenario, gains in (("affine_burn", (1.08, 1.10, 0.0)), ("tone_curve_burn", (1.0, 1.10, 0.12))):
        res: dict = {"off": chain_case(scene, args.segments, args.frames, 2, gains, "off", d.DEFAULT_METHOD)}
        for guard in ("anchor", "anchor+output"):
            for method in d.METHODS:
                res[f"{guard}/{method}"] = chain_case(scene, args.segments, args.frames, 2, gains, guard, method)
        out["chains"][scenario] = res
    # Honest changes of look (no drift): what does a full-strength guard do to them?
    # PSNR of the matched frame against the frame itself (higher = less damage).
    big_scene = d.synthetic_scene(h * 2, w * 2, seed=2)
    changes = {}
    dark = scene.copy()
    dark[:, : w // 3] = (dark[:, : w // 3] * 0.35).astype(np.uint8)
    changes["dark_object_third"] = dark
    sky = scene.copy()
    sky[: h * 2 // 5] = np.array([225, 235, 250], np.uint8)
    changes["bright_sky_top"] = sky
    red = scene.copy()
    red[h // 4: h * 3 // 4, w // 4: w * 3 // 4] = np.array([200, 40, 30], np.uint8)
    changes["red_object_quarter"] = red
    changes["other_crop"] = np.ascontiguousarray(big_scene[:h, w:])
    out["legit_change"] = {
        name: {m: _rgb_psnr(d.match_colors(frame, scene if name != "other_crop" else big_scene[:h, :w], 1.0, m), frame)
               for m in d.METHODS}
        for name, frame in changes.items()}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    # Speed of the guard itself at output size: one frame (the anchor), and a segment
    # ("anchor+output") with NumPy and with torch on each device there is.
    big = np.ascontiguousarray(np.tile(scene, (17, 20, 1))[:1080, :1920])
    seg = np.stack([np.roll(big, 4 * i, axis=1) for i in range(9)])
    speed: dict = {}
    for m in d.METHODS:
        d.match_colors(big, scene, 1.0, m)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(3):
            d.match_colors(big, scene, 1.0, m)
        speed[f"match_colors/{m}"] = round(3 / (time.perf_counter() - t), 2)
        # CPU time is what the work costs on a shared machine, whatever else runs.
        speed[f"match_colors/{m}/per_cpu_second"] = round(3 / (time.process_time() - c), 2)
    devices: list[str | None] = [None]
    try:
        import torch

        devices += ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    except ImportError:
        pass
    for dev in devices:
        d.match_colors_frames(seg[:2], scene, 1.0, device=dev)
        t, c = time.perf_counter(), time.process_time()
        d.match_colors_frames(seg, scene, 1.0, device=dev)
        # Frame 0 of a ramp is identity (skipped): count the frames actually corrected.
        key = f"match_colors_frames/meanstd/{dev or 'numpy'}"
        speed[key] = round((len(seg) - 1) / (time.perf_counter() - t), 2)
        if dev != "cuda":
            speed[key + "/per_cpu_second"] = round((len(seg) - 1) / (time.process_time() - c), 2)
    out["guard_1080p_frames_per_s"] = speed
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
