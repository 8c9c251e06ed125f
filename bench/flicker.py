"""Flicker analysis speed at 1920×1080 on this machine's CPU cores. Prints JSON.

Three numbers, frames per second:
* ``video``: ``analyze_video`` on an H.264 yuv420p file (decode + Y plane + PSNR), what
  ``sulphur flicker`` and the worker's post-encode check cost;
* ``rgb_frames``: ``analyze_frames`` on in-memory RGB uint8 frames (BT.709 luma + PSNR),
  what the worker's post-draft/refine check costs at this size;
* ``psnr_only``: the PSNR kernel alone on Y planes.

    python bench/flicker.py [--frames 96] [--crf 18]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.quality import flicker  # noqa: E402

W, H = 1920, 1080


def make_frames(n: int) -> np.ndarray:
    """Textured content panning 6 px per frame (fine detail keeps the encoder and decoder
    honest), with a flash every 24 frames."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (H // 4, (W + 6 * n) // 4 + 1, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(tex, 4, axis=0), 4, axis=1)
    yy, xx = np.mgrid[0:H, 0:W]
    grad = ((xx / W * 80) + (yy / H * 40)).astype(np.uint8)[..., None]
    out = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        f = tex[:, 6 * i: 6 * i + W] // 2 + grad
        if i % 24 == 12:
            f = np.clip(f.astype(np.int16) + 30, 0, 255).astype(np.uint8)
        out[i] = f
    return out


def encode(frames: np.ndarray, path: Path, crf: int) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": str(crf), "preset": "ultrafast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def best_of(fn, repeat: int = 3) -> tuple[float, float]:  # noqa: ANN001
    """Best wall time and best CPU time (all threads of this process) of ``repeat`` runs.
    On a shared machine wall time includes waiting for the cores; CPU time does not, so
    frames per CPU-second is a lower bound of frames/s on one idle core."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--crf", type=int, default=18)
    args = ap.parse_args()
    frames = make_frames(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        encode(frames, path, args.crf)
        size = path.stat().st_size
        t_video = best_of(lambda: flicker.analyze_video(path))
        stats = flicker.analyze_video(path)
    t_rgb = best_of(lambda: flicker.analyze_frames(frames))
    ys = [flicker.luma(f) for f in frames[:24]]
    t_psnr = best_of(lambda: [flicker.psnr_y(a, b) for a, b in zip(ys, ys[1:], strict=False)])
    n = args.frames
    print(json.dumps({
        "size": [W, H],
        "frames": n,
        "fps": {
            "video": round(n / t_video[0], 1),
            "rgb_frames": round(n / t_rgb[0], 1),
            "psnr_only": round((len(ys) - 1) / t_psnr[0], 1),
        },
        "frames_per_cpu_second": {
            "video": round(n / t_video[1], 1),
            "rgb_frames": round(n / t_rgb[1], 1),
            "psnr_only": round((len(ys) - 1) / t_psnr[1], 1),
        },
        "goal_fps": 100,
        "video_bitrate_mbps": round(size * 8 / (n / 24) / 1e6, 1),
        "worst_found": stats.worst[:4],
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "av": av.__version__,
        "python": platform.python_version(),
    }, indent=1))


if __name__ == "__main__":
    main()
