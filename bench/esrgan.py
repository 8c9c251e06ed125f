"""Benchmark the upscale stage: Real-ESRGAN x2plus (full-size layout, random weights) + resize.

Runs :class:`pipeline.stages.upscale.UpscaleStage` exactly as the runner does, on
synthetic refine frames, for several batch sizes; prints one JSON object with frames/s,
peak VRAM, peak host RSS growth and the model-only speed (to show what the stage adds:
host↔device copies, the antialiased resize, the memmap writes).

    python bench/esrgan.py                       # 1024×576 → 1920×1080, 48 frames
    python bench/esrgan.py --frames 8 --size 256x144 --out 480x270 --nb 1   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import StagePlan  # noqa: E402
from pipeline.models.esrgan import build_tiny_x2plus, load_upscaler  # noqa: E402
from pipeline.models.registry import ModelFile, Preset  # noqa: E402
from pipeline.project.storyboard import Project, Segment, Storyboard  # noqa: E402
from pipeline.render.cache import Artifact  # noqa: E402
from pipeline.stages.base import SegmentJob, StageContext  # noqa: E402
from pipeline.stages.upscale import UpscaleStage  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _rss_mib() -> tuple[float, float]:
    """(anonymous, file-backed) resident MiB: anonymous memory is what an OOM kill counts;
    file pages (mapped .npy files) are reclaimable but still show up in RSS and ru_maxrss."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                key, value, _ = line.split()
                fields[key] = int(value) / 1024
    return fields["RssAnon:"], fields["RssFile:"]


class _RssPeak:
    """Samples RSS every 10 ms on a thread: the peaks during one stage run."""

    def __enter__(self) -> _RssPeak:
        self.base = _rss_mib()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.01):
            self._sample()

    def _sample(self) -> None:
        now = _rss_mib()
        self.peak = (max(self.peak[0], now[0]), max(self.peak[1], now[1]))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self._sample()


def _fps(fn: Any, xb: torch.Tensor, frames: int) -> float:
    with torch.inference_mode():
        fn(xb)
        torch.cuda.synchronize()
        n = max(2, frames // xb.shape[0])
        t0 = time.perf_counter()
        for _ in range(n):
            fn(xb)
        torch.cuda.synchronize()
    return round(n * xb.shape[0] / (time.perf_counter() - t0), 2)


def _peer(model: Any, h: int, w: int, frames: int, device: str) -> dict[str, Any]:
    """The same weights the way a peer runs them at their best: cudnn.benchmark, then torch.compile."""
    xb = torch.rand(4, 3, h, w, device=device, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    out: dict[str, Any] = {}
    torch.backends.cudnn.benchmark = True
    out["eager_cudnn_benchmark_batch4"] = _fps(model, xb, frames)
    compiled = torch.compile(model.model)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(xb)
        torch.cuda.synchronize()
    out["compile_s"] = round(time.perf_counter() - t0, 1)
    out["compiled_batch4"] = _fps(compiled, xb, frames)
    torch.backends.cudnn.benchmark = False
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=_size, default=(1024, 576), help="refine frame size WxH")
    ap.add_argument("--out", type=_size, default=(1920, 1080), help="output size WxH")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--tile", type=int, default=0)
    ap.add_argument("--nf", type=int, default=64, help="features (64 = RealESRGAN_x2plus)")
    ap.add_argument("--nb", type=int, default=23, help="RRDB blocks (23 = RealESRGAN_x2plus)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peer", action="store_true",
                    help="also time the peer: spandrel x2plus under torch.compile (fp16, channels_last, batch 4), "
                         "and the model with cudnn.benchmark on")
    args = ap.parse_args()
    cuda = args.device == "cuda"

    tmp = Path(tempfile.mkdtemp(prefix="bench-esrgan-"))
    weights = build_tiny_x2plus(tmp / "x2plus.pth", nf=args.nf, nb=args.nb)
    (w, h), (ow, oh) = args.size, args.out
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=(args.frames, h, w, 3))
    for i in range(args.frames):  # textured, moving content: ramps plus noise
        base = np.stack([(x + 3 * i) % 256, (y * 2) % 256, (x + y) % 256], -1)
        frames[i] = np.clip(base + rng.integers(-12, 12, base.shape), 0, 255)
    frames.flush()
    del frames
    refine = Artifact(stage="refine", key="bench", path=tmp, meta={})

    preset = Preset(name="bench", family="ltx2", description="",
                    files=(ModelFile(role="upscaler", description="x2plus layout", path=str(weights)),))
    seg = Segment(id="bench", prompt="")
    board = Storyboard(path=tmp / "bench.toml", project=Project(output_size=(ow, oh)), segments=(seg,))
    job = SegmentJob(storyboard=board, segment=seg, index=0, preset=preset, frames=args.frames, seed=0,
                     fps=24, draft_size=(w // 2, h // 2), refine_size=(w, h), output_size=(ow, oh), steps=1,
                     refine_sigmas=(0.0,), lora_strength=0.0, audio=False)
    models = LoadedModels()

    def run(batch: int, name: str) -> dict[str, float]:
        out = tmp / name
        out.mkdir()
        plan = StagePlan(name="bench", device=args.device, dtype="float16" if cuda else "float32",
                         options={"esrgan_batch": batch, "esrgan_tile": args.tile})
        ctx = StageContext(emit=lambda e: None, cancel=threading.Event(), models=models, plan=plan)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with _RssPeak() as rss:
            t0 = time.perf_counter()
            UpscaleStage().run(ctx, job, {"refine": refine}, out)
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        result = np.load(out / "frames.npy", mmap_mode="r")
        assert result.shape == (args.frames, oh, ow, 3)
        (out / "frames.npy").unlink()
        return {"seconds": round(seconds, 3), "frames_per_s": round(args.frames / seconds, 2),
                "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
                "host_anon_growth_mib": round(rss.peak[0] - rss.base[0], 1),
                "host_file_rss_growth_mib": round(rss.peak[1] - rss.base[1], 1)}

    t0 = time.perf_counter()
    load = load_upscaler(weights, device=args.device, dtype=torch.float16 if cuda else torch.float32)
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in load.model.parameters())
    del load

    run(1, "warmup")  # loads into `models`, initialises CUDA/cuDNN kernels
    results = {f"batch{b}": run(int(b), f"b{b}") for b in args.batches.split(",")}

    # Model alone on the same batch sizes: the stage's overhead is the difference.
    model_only = {}
    model = models.get("upscaler", lambda: None)[3]
    dtype = torch.float16 if cuda else torch.float32
    with torch.inference_mode():
        for b in (int(v) for v in args.batches.split(",")):
            xb = torch.rand(b, 3, h, w, device=args.device, dtype=dtype)
            if cuda:
                xb = xb.contiguous(memory_format=torch.channels_last)
            model(xb)
            n = max(1, args.frames // b)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(n):
                model(xb)
            if cuda:
                torch.cuda.synchronize()
            model_only[f"batch{b}"] = round(n * b / (time.perf_counter() - t0), 2)

    peer = _peer(model, h, w, args.frames, args.device) if args.peer and cuda else None

    import spandrel

    print(json.dumps({
        "bench": "esrgan", "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__, "spandrel": spandrel.__version__,
        "model": {"layout": "RealESRGAN x2plus (pixel-unshuffle, 12 in)", "nf": args.nf, "nb": args.nb,
                  "params": params, "load_s": round(load_s, 3)},
        "frames": args.frames, "in": [w, h], "out": [ow, oh], "tile": args.tile,
        "output_mib": round(args.frames * ow * oh * 3 / 2**20, 1),
        "stage": results, "model_only_frames_per_s": model_only, "peer": peer,
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
