"""How many cores the segment encode uses: ``encode_mp4`` of one 1920×1080 segment, wall seconds
against process CPU seconds, and the RGB→YUV conversion alone (it runs in the Python loop,
one frame at a time). Prints JSON.

    python bench/encode.py --frames 121 --out bench/results/encode_<machine>_<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import machine, print_report  # noqa: E402

from pipeline.stages.encode import encode_mp4  # noqa: E402


def _frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Moving gradients with noise: x264 does real motion search on them, unlike a flat frame."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = (np.sin((xx + 8 * i) / 97.0) + np.cos((yy - 5 * i) / 61.0)) * 60 + 128
        noise = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
        rgb = np.stack([base, base * 0.8 + 20, 255 - base], axis=-1) + noise
        out.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return out


def _timed(fn) -> tuple[float, float]:  # noqa: ANN001 - a bench helper
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    frames = _frames(args.frames, size)

    import av

    def convert() -> None:
        for f in frames:
            av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709")

    with tempfile.TemporaryDirectory() as tmp:
        enc_wall, enc_cpu = _timed(lambda: encode_mp4(Path(tmp) / "seg.mp4", frames, fps=24, size=size))
    conv_wall, conv_cpu = _timed(convert)
    report = {
        "bench": "encode", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(["av", "numpy"]), "frames": args.frames, "size": list(size),
        "encode_wall_s": round(enc_wall, 2), "encode_cpu_s": round(enc_cpu, 2),
        "encode_cores_used": round(enc_cpu / enc_wall, 2),
        "rgb_to_yuv_wall_s": round(conv_wall, 2), "rgb_to_yuv_share": round(conv_wall / enc_wall, 3),
        "how": "cores used = process CPU seconds / wall seconds; the RGB→YUV conversion runs on one core",
    }
    return print_report(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
