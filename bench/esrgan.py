"""Benchmark the upscale stage against a torch.compiled spandrel x2plus, in one process and one GPU call.

Real-ESRGAN x2plus layout (full size, random weights), synthetic refine frames. Measures,
on the same frames and in this order (a step that would overrun --budget-s is skipped, and
listed under ``skipped``):
- the stage as it was (eager, copies and writes in line): the reference frames;
- the model alone, eager, batch 4 and 8;
- the peer: spandrel's network under ``torch.compile`` (default mode), fp16, channels_last,
  batch 4, cudnn.benchmark on, its own cold inductor cache;
- the stage as the runner calls it (``UpscaleStage.run``) for each of ``CANDIDATES``: eager
  with the overlapped copies; compiled RRDB blocks or the whole network; modes default /
  reduce-overhead (CUDA graphs) / max-autotune-no-cudagraphs; the dense blocks regrouped
  ("wide"); batch 8; cudnn.benchmark. Each compile is timed at its first call, cold in a
  fresh inductor cache folder (or warm from a folder an earlier step filled, as labelled),
  and for ``blocks_default`` / ``blocks_wide`` again in a second process reading the same
  folder: what a new worker pays with the persistent cache.
Every candidate's frames are compared with the eager stage's (max |Δ| in levels, PSNR;
null PSNR = identical frames).
Writes JSON (after every step, so a cut-off run keeps what it measured) with
``stage_over_compiled_peer`` = the best stage candidate's frames/s ÷ the peer's.

    python bench/esrgan.py --json-out bench/results/esrgan_h200_<date>.json      # GPU: 121 frames
    python bench/esrgan.py --frames 8 --size 256x144 --out 480x270 --nb 1        # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.memory.loaded import LoadedModels  # noqa: E402
from pipeline.memory.planner import StagePlan  # noqa: E402
from pipeline.models.esrgan import build_tiny_x2plus, load_upscaler  # noqa: E402
from pipeline.models.registry import ModelFile, Preset  # noqa: E402
from pipeline.project.storyboard import Project, Segment, Storyboard  # noqa: E402
from pipeline.render.cache import Artifact  # noqa: E402
from pipeline.stages.base import SegmentJob, StageContext  # noqa: E402
from pipeline.stages.upscale import COMPILED_KEY, MODEL_KEY, UpscaleStage, compile_network  # noqa: E402
from pipeline.wire.protocol import Log  # noqa: E402

#: name → (stage options, inductor cache folder name or None, estimated seconds for the budget).
#: In run order: what the goal needs first; the cheap variants of the default last.
CANDIDATES: dict[str, tuple[dict[str, Any], str | None, float]] = {
    "eager_overlap": ({"esrgan_compile": False}, None, 8),
    "blocks_default": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "default",
                        "esrgan_dense": "concat"}, "blocks", 30),
    "whole_default": ({"esrgan_compile_scope": "whole", "esrgan_compile_mode": "default",
                       "esrgan_dense": "concat"}, "peer", 25),
    "blocks_wide": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "default", "esrgan_dense": "wide"},
                    "wide", 30),
    "blocks_max_autotune": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "max-autotune-no-cudagraphs",
                             "esrgan_dense": "concat"},
                            "autotune", 90),
    # CUDA graphs on the whole network: one graph, fixed weights. Per block, the 23 blocks' weights
    # are different static inputs of one graph, which CUDA-graph trees may re-record or give up on.
    "whole_reduce_overhead": ({"esrgan_compile_scope": "whole", "esrgan_compile_mode": "reduce-overhead",
                               "esrgan_dense": "concat"},
                              "peer", 30),
    "blocks_default_batch8": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "default",
                               "esrgan_batch": 8, "esrgan_dense": "concat"}, "blocks", 20),
    "blocks_default_cudnn_benchmark": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "default",
                                        "esrgan_cudnn_benchmark": True, "esrgan_dense": "concat"}, "blocks", 12),
    "blocks_reduce_overhead": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "reduce-overhead",
                                "esrgan_dense": "concat"},
                               "blocks", 20),
    # The regrouped dense blocks (the default since run5) with each of the knobs above.
    "wide_cudnn_benchmark": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "default",
                              "esrgan_cudnn_benchmark": True, "esrgan_dense": "wide"}, "wide", 15),
    "wide_batch8": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "default", "esrgan_batch": 8,
                     "esrgan_dense": "wide"}, "wide", 20),
    "wide_reduce_overhead": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "reduce-overhead",
                              "esrgan_dense": "wide"}, "wide_graphs", 30),
    "wide_max_autotune": ({"esrgan_compile_scope": "blocks", "esrgan_compile_mode": "max-autotune-no-cudagraphs",
                           "esrgan_dense": "wide"}, "wide_autotune", 90),
}


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Bench:
    """The frames, the job and the held models shared by every measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.cuda = args, args.device == "cuda"
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-esrgan-"))
        self.weights = build_tiny_x2plus(self.tmp / "x2plus.pth", nf=args.nf, nb=args.nb)
        (w, h), (ow, oh) = args.size, args.out
        yy, xx = np.mgrid[0:h, 0:w]
        rng = np.random.default_rng(0)
        frames = np.lib.format.open_memmap(self.tmp / "frames.npy", mode="w+", dtype=np.uint8,
                                           shape=(args.frames, h, w, 3))
        for i in range(args.frames):  # textured, moving content: ramps plus noise
            base = np.stack([(xx + 3 * i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
            frames[i] = np.clip(base + rng.integers(-12, 12, base.shape), 0, 255)
        frames.flush()
        del frames
        self.refine = Artifact(stage="refine", key="bench", path=self.tmp, meta={})
        preset = Preset(name="bench", family="ltx2", description="",
                        files=(ModelFile(role="upscaler", description="x2plus layout", path=str(self.weights)),))
        seg = Segment(id="bench", prompt="")
        board = Storyboard(path=self.tmp / "bench.toml", project=Project(output_size=(ow, oh)), segments=(seg,))
        self.job = SegmentJob(storyboard=board, segment=seg, index=0, preset=preset, frames=args.frames, seed=0,
                              fps=24, draft_size=(w // 2, h // 2), refine_size=(w, h), output_size=(ow, oh),
                              steps=1, refine_sigmas=(0.0,), lora_strength=0.0, audio=False)
        self.models = LoadedModels()
        self.dtype = torch.float16 if self.cuda else torch.float32
        self.reference: Path | None = None

    def stage(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """``UpscaleStage.run`` as the runner calls it; the frames compared with the eager reference."""
        out = self.tmp / name
        out.mkdir()
        plan = StagePlan(name="bench", device=self.args.device, dtype="float16" if self.cuda else "float32",
                         options={"esrgan_batch": self.args.batch, "esrgan_tile": 0, **options})
        logs: list[str] = []  # a compile that fell back to eager says so here
        ctx = StageContext(emit=lambda e: logs.append(e.message) if isinstance(e, Log) else None,
                           cancel=threading.Event(), models=self.models, plan=plan)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        UpscaleStage().run(ctx, self.job, {"refine": self.refine}, out)
        _sync()
        seconds = time.perf_counter() - t0
        frames = out / "frames.npy"
        result: dict[str, Any] = {"seconds": round(seconds, 3), "frames_per_s": round(self.args.frames / seconds, 2),
                                  "batch": plan.options["esrgan_batch"],
                                  "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
                                  if self.cuda else None}
        if logs:
            result["logs"] = logs
        if self.reference is None:
            self.reference = frames
        else:
            result.update(_compare(frames, self.reference))
            frames.unlink()
        return result

    def compile_first_call(self, scope: str, mode: str, dense: str) -> float:
        """Compile as the stage would, timing the first call at the stage's shape; the compiled
        forward is then held in the models, where the stage picks it up (as a worker keeps it)."""
        model = self.models.get(MODEL_KEY, lambda: None)[3]
        self.models.make_room(drop=[COMPILED_KEY], reason="next candidate")
        torch._dynamo.reset()
        fn = compile_network(model.model, scope, mode, dense, backend=self.args.backend)
        w, h = self.args.size
        t0 = time.perf_counter()
        with torch.inference_mode():  # an inference tensor, as the stage's: no recompile when it runs
            x = _batch(self.args.batch, h, w, self.args.device, self.dtype)
            fn(x)
            _sync()
        self.models.get(COMPILED_KEY, lambda: ((scope, mode, dense), fn))
        return round(time.perf_counter() - t0, 2)


def _batch(n: int, h: int, w: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.rand(n, 3, h, w, device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if device == "cuda" else x


def _compare(a: Path, b: Path) -> dict[str, float]:
    """Max |Δ| (of 255 levels) and PSNR of two frame files, a few frames at a time."""
    x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
    worst, sq = 0, 0.0
    for i in range(0, len(x), 8):
        d = x[i:i + 8].astype(np.int16) - y[i:i + 8].astype(np.int16)
        worst = max(worst, int(np.abs(d).max()))
        sq += float(np.square(d, dtype=np.float64).sum())
    mse = sq / x.size
    return {"vs_eager_max_abs": worst, "vs_eager_psnr_db": round(10 * np.log10(255**2 / mse), 1) if mse else None}


def _fps(fn: Any, xb: torch.Tensor, frames: int) -> float:
    with torch.inference_mode():
        fn(xb)
        _sync()
        n = max(2, frames // xb.shape[0])
        t0 = time.perf_counter()
        for _ in range(n):
            fn(xb)
        _sync()
    return round(n * xb.shape[0] / (time.perf_counter() - t0), 2)


def _peer(bench: Bench) -> dict[str, Any]:
    """The same weights the way a peer runs them at their best: cudnn.benchmark, then
    torch.compile of the whole network (default mode), fp16, channels_last, batch 4."""
    model = bench.models.get(MODEL_KEY, lambda: None)[3]
    w, h = bench.args.size
    xb = _batch(4, h, w, bench.args.device, bench.dtype)
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    out: dict[str, Any] = {"eager_cudnn_benchmark_batch4": _fps(model, xb, bench.args.frames)}
    torch._dynamo.reset()
    compiled = torch.compile(model.model, backend=bench.args.backend)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(xb)
        _sync()
    out["compile_s"] = round(time.perf_counter() - t0, 1)
    out["compiled_batch4"] = _fps(compiled, xb, bench.args.frames)
    torch.backends.cudnn.benchmark = saved
    torch._dynamo.reset()
    return out


def _warm_probe(bench: Bench, scope: str, mode: str, dense: str, cache: Path) -> dict[str, Any]:
    """A second process compiling with the cache the first one filled: what a new worker pays."""
    a = bench.args
    cmd = [sys.executable, __file__, "--probe", f"{scope}:{mode}:{dense}", "--weights", str(bench.weights),
           "--size", f"{a.size[0]}x{a.size[1]}", "--batch", str(a.batch), "--device", a.device,
           "--backend", a.backend]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)})
    if run.returncode:
        return {"error": run.stderr.strip().splitlines()[-1:] or [f"exit {run.returncode}"]}
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "process_s": round(time.perf_counter() - t0, 1)}


def _probe(args: argparse.Namespace) -> int:
    """--probe: load the model, compile, time the first call; print one JSON line."""
    scope, mode, dense = args.probe.split(":")
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    t0 = time.perf_counter()
    model = load_upscaler(Path(args.weights), device=args.device, dtype=dtype)
    if args.device == "cuda":
        model.model.to(memory_format=torch.channels_last)
    load_s = time.perf_counter() - t0
    fn = compile_network(model.model, scope, mode, dense, backend=args.backend)
    w, h = args.size
    t0 = time.perf_counter()
    with torch.inference_mode():
        x = _batch(args.batch, h, w, args.device, dtype)
        fn(x)
        _sync()
    compile_s = round(time.perf_counter() - t0, 2)
    from torch._dynamo.utils import counters

    hits = {k: v for k, v in counters["inductor"].items() if "cache" in k}  # did the persistent cache serve it
    print(json.dumps({"load_s": round(load_s, 2), "compile_s": compile_s, "inductor_cache": hits}))
    return 0


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--size", type=_size, default=(1024, 576), help="refine frame size WxH")
    ap.add_argument("--out", type=_size, default=(1920, 1080), help="output size WxH")
    ap.add_argument("--batch", type=int, default=4, help="the stage's batch (the peer's is 4)")
    ap.add_argument("--nf", type=int, default=64, help="features (64 = RealESRGAN_x2plus)")
    ap.add_argument("--nb", type=int, default=23, help="RRDB blocks (23 = RealESRGAN_x2plus)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default=None,
                    help="torch.compile backend (default: inductor on CUDA, eager for the CPU smoke)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, from: " + ",".join(CANDIDATES))
    ap.add_argument("--budget-s", type=float, default=360, help="skip what would not fit in this many seconds")
    ap.add_argument("--json-out", type=Path, help="also write the JSON here (after every step)")
    ap.add_argument("--no-warm-probes", action="store_true",
                    help="skip re-compiling blocks_default/blocks_wide in a fresh process from the disk cache")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.backend = args.backend or ("inductor" if args.device == "cuda" else "eager")
    return args


@contextmanager
def _cache_dir(bench: Bench, folder: str) -> Iterator[None]:
    """A fresh-per-run inductor cache folder, in-memory caches cleared on the way in and out (so a
    first use is a cold compile, and a later use of the same folder warm from disk only)."""
    if bench.args.backend != "inductor":
        yield
        return
    import torch._inductor.utils as inductor_utils

    # older torch releases name it clear_inductor_caches
    clear = getattr(inductor_utils, "clear_caches", None) or inductor_utils.clear_inductor_caches
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(bench.tmp / "inductor" / folder)
    clear()
    try:
        yield
    finally:
        clear()
        if saved is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def _candidate(bench: Bench, name: str, used: set[str]) -> dict[str, Any]:
    options, folder, _ = CANDIDATES[name]
    if folder is None:
        return {"options": options, **bench.stage(name, options)}
    scope, mode = options["esrgan_compile_scope"], options["esrgan_compile_mode"]
    dense = options.get("esrgan_dense", "concat")
    batch = options.get("esrgan_batch", bench.args.batch)
    cache = "warm (disk, same process)" if folder in used else "cold"
    used.add(folder)
    with _cache_dir(bench, folder):
        saved, bench.args.batch = bench.args.batch, batch
        try:
            compile_s = bench.compile_first_call(scope, mode, dense)
            return {"options": options, "compile_s": compile_s, "compile_cache": cache,
                    **bench.stage(name, {**options, "esrgan_compile": True})}
        finally:
            bench.args.batch = saved


def _summary(out: dict[str, Any]) -> dict[str, Any]:
    """The best stage candidate, its ratio to the compiled peer, and when compiling pays."""
    stage = out["stage"]
    measured = {k: v for k, v in stage.items() if "frames_per_s" in v and k != "warmup"}
    best = max(measured, key=lambda k: measured[k]["frames_per_s"])
    res: dict[str, Any] = {"best_stage_candidate": best, "best_stage_frames_per_s": measured[best]["frames_per_s"]}
    peer = out.get("peer") or {}
    if peer.get("compiled_batch4"):
        res["stage_over_compiled_peer"] = round(measured[best]["frames_per_s"] / peer["compiled_batch4"], 3)
        res["goal"] = ">= 1.5"
    eager = stage.get("eager", {}).get("frames_per_s")
    pays = {}
    for name in ("blocks_default", "blocks_wide"):  # the stage's default, and the regrouped blocks
        compiled = stage.get(name, {})
        if eager and compiled.get("frames_per_s", 0) > eager:
            saved_per_frame = 1 / eager - 1 / compiled["frames_per_s"]
            warm = (out.get("warm_compile") or {}).get(name, {}).get("compile_s")
            pays[name] = {"cold": round(compiled["compile_s"] / saved_per_frame),
                          "warm": round(warm / saved_per_frame) if warm else None}
    res["compile_pays_from_frames"] = pays
    return res


def main() -> int:
    args = _args()
    if args.probe:
        return _probe(args)
    start = time.perf_counter()
    bench = Bench(args)
    import spandrel

    out: dict[str, Any] = {
        "bench": "esrgan", "device": torch.cuda.get_device_name() if bench.cuda else "cpu",
        "torch": torch.__version__, "spandrel": spandrel.__version__, "backend": args.backend,
        "model": {"layout": "RealESRGAN x2plus (pixel-unshuffle, 12 in)", "nf": args.nf, "nb": args.nb},
        "frames": args.frames, "in": list(args.size), "out": list(args.out), "batch": args.batch,
        "trt_onnxruntime": "not measured: their GPU wheels (TensorRT ~1 GB, onnxruntime-gpu ~300 MB with its "
                           "CUDA libraries) exceed the 64 MiB that can be carried to the GPU machine",
        "stage": {}, "skipped": {}}

    def write() -> str:
        out["elapsed_s"] = round(time.perf_counter() - start, 1)
        text = json.dumps(out, indent=1)
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(text + "\n")
        return text

    def fits(name: str, est: float) -> bool:
        if time.perf_counter() - start + est <= args.budget_s:
            return True
        out["skipped"][name] = f"over --budget-s {args.budget_s:g} (estimated {est:g} s)"
        return False

    plain = {"esrgan_compile": False, "esrgan_overlap": False}  # the stage before this work
    out["stage"]["warmup"] = bench.stage("warmup", plain)  # loads the model; its frames are the reference
    out["stage"]["eager"] = bench.stage("eager", plain)
    model = bench.models.get(MODEL_KEY, lambda: None)[3]
    w, h = args.size
    out["model_only_eager_frames_per_s"] = {
        f"batch{b}": _fps(model, _batch(b, h, w, args.device, bench.dtype), args.frames) for b in (4, 8)}
    write()
    if fits("peer", 80):
        with _cache_dir(bench, "peer"):
            out["peer"] = _peer(bench)
        write()
    used = {"peer"} if "peer" in out else set()  # cache folders an earlier step filled
    out["warm_compile"] = {}
    for name in args.candidates.split(","):
        if fits(name, CANDIDATES[name][2]):
            out["stage"][name] = _candidate(bench, name, used)
            write()
        if (not args.no_warm_probes and name in ("blocks_default", "blocks_wide") and name in out["stage"]
                and fits(f"warm {name}", 40)):
            options, folder, _ = CANDIDATES[name]
            out["warm_compile"][name] = _warm_probe(bench, options["esrgan_compile_scope"], "default",
                                                    options.get("esrgan_dense", "concat"),
                                                    bench.tmp / "inductor" / folder)
            write()
    out["summary"] = _summary(out)
    print(write())
    shutil.rmtree(bench.tmp, ignore_errors=True)  # the frames of every run: up to a GB at 121 frames
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
