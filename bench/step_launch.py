"""Is a draft step bound by the GPU or by the thread that feeds it? One resident LTX-2 step (Q4_0
GGUF weights with the Triton dequant, as the uncapped render holds them; render-shaped inputs):

* ``eager``: wall seconds, and how long ``model(...)`` took to return (``enqueue_s``).
* ``profile``: under ``torch.profiler``, the GPU's busy time (its kernels' time added up) against
  the step's wall time, the kernels launched, and the synchronising calls the step makes. A GPU
  busy for a small part of the step means the step waits on the host: on the launching thread's
  speed, on whatever takes its CPU (runs 11-14 in bench/results/README.md).
* ``syncs``: where the step synchronises (``torch.cuda.set_sync_debug_mode``): each one stops
  the host from queueing the next kernels ahead of the GPU.
* ``graph``: the step as a resident stage runs it since run 15: eager once, then recorded as a
  CUDA graph and replayed (``GraphedSteps``); a replay's seconds and its distance from the eager
  step. A recording that fails says why (a sync, a host-side decision on GPU data).

The inputs carry the rotary coordinates the pipeline computes once per stage (``video_coords``,
``audio_coords``); without them each step builds them from host lists (two syncs).

Prints JSON.

    python bench/step_launch.py --out bench/results/step_launch_<gpu>_<date>.json
    python bench/step_launch.py --layers 1 --frames 9 --draft 64x32 --steps 2   # CPU smoke (eager, profile)
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ltx2_inputs import ltx2_step_inputs, pipeline_coords  # noqa: E402
from machine_info import machine, print_report  # noqa: E402
from resident_step import add_arguments, setup, shape_size, time_steps  # noqa: E402

from pipeline.memory.planner import audio_tokens  # noqa: E402

#: the host calls that wait for the GPU (the CUDA runtime's and driver's names; a plain
#: cudaMemcpy to the host waits, its Async form does not)
SYNC_CALLS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cuStreamSynchronize",
              "cuCtxSynchronize", "cudaMemcpy"}


def _busy_s(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of ``(start, end)`` intervals in microseconds (kernels on
    several streams overlap: their times added up would count the overlap twice)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 1e6


def profiled(model: torch.nn.Module, inputs: dict[str, Any], device: str) -> dict[str, Any]:
    """One step under torch.profiler: how much of it the GPU was busy (kernels, copies and sets
    on any stream, overlaps once), the kernels it ran and the host calls that waited on it. The
    profiler adds host time of its own, so the busy share reads low by that much."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    if device == "cuda":
        torch.cuda.synchronize()
    with torch.no_grad(), profile(activities=activities) as prof:
        t = time.perf_counter()
        model(**inputs)
        if device == "cuda":
            torch.cuda.synchronize()  # the step's end; not counted among its syncs below
        wall = time.perf_counter() - t
    gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    host = [e for e in prof.events() if e.device_type != torch.autograd.DeviceType.CUDA]
    out: dict[str, Any] = {"wall_s": round(wall, 4), "cpu_ops": len(host)}
    if device == "cuda":
        syncs = collections.Counter(e.name for e in host if e.name in SYNC_CALLS)
        syncs["cudaDeviceSynchronize"] -= 1  # the bench's own, at the step's end
        busy = _busy_s([(e.time_range.start, e.time_range.end) for e in gpu])
        out |= {"gpu_busy_s": round(busy, 4), "gpu_busy_share": round(busy / wall, 3),
                "gpu_events": len(gpu), "host_launch_calls": sum(1 for e in host if "LaunchKernel" in e.name),
                "sync_calls": {k: v for k, v in syncs.items() if v > 0}}
    return out


def sync_sites(model: torch.nn.Module, inputs: dict[str, Any]) -> list[str]:
    """The distinct warnings ``set_sync_debug_mode("warn")`` raises over one step (each names the op)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            model(**inputs)
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    seen = collections.Counter(f"{w.filename.rsplit('/', 2)[-1]}:{w.lineno}: {str(w.message)[:120]}" for w in caught)
    return [f"{n}× {site}" for site, n in seen.most_common(10)]


def graphed(model: torch.nn.Module, inputs: dict[str, Any], steps: int) -> dict[str, Any]:
    """The step as the render's resident stages run it (``GraphedSteps``, pipeline/memory/cuda_graphs.py):
    eager, then recorded, then replayed ``steps`` times; and how far a replay's output is from the
    eager step's."""
    from pipeline.memory.cuda_graphs import GraphedSteps

    graph = GraphedSteps(model)
    with torch.no_grad():
        reference = model(**inputs)
        try:
            for _ in range(2):  # eager, then recorded (and replayed once)
                out = graph(**inputs)
        except Exception as exc:  # noqa: BLE001 - why a step cannot be recorded is the finding
            return {"captured": False, "error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        walls = []
        for _ in range(steps):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = graph(**inputs)
            torch.cuda.synchronize()
            walls.append(time.perf_counter() - t)
    diffs = [(a.float() - b.float()).abs().max().item() for a, b in zip(out, reference, strict=True)]
    graph.release()
    return {"captured": not graph.report.failure, "report": graph.report.describe(),
            "step_s": round(statistics.median(walls), 4) if walls else None, "steps_s": [round(w, 4) for w in walls],
            "vs_eager_max_abs": max(diffs), "bitwise_equal": all(torch.equal(a, b) for a, b in zip(out, reference,
                                                                                                strict=True))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, steps=5)
    args = ap.parse_args()
    model, report = setup(args, "step_launch", machine(["torch", "diffusers"]))
    device = report["device"]
    report["shapes"] = {}
    for shape in args.shapes.split(","):
        size = shape_size(report["draft"], shape)
        inputs = ltx2_step_inputs(model.config, size, args.frames, audio_tokens=audio_tokens(args.frames, 24),
                                  device=device, text_tokens=1024, as_rendered=True)
        inputs |= pipeline_coords(model, inputs)
        row: dict[str, Any] = {"size": list(size), "eager": time_steps(model, inputs, args.steps, device),
                               "profile": profiled(model, inputs, device)}
        if device == "cuda":
            row["syncs"] = sync_sites(model, inputs)
            row["graph"] = graphed(model, inputs, args.steps)
        report["shapes"][shape] = row
        print(f"{shape}: {row}", file=sys.stderr)
        del inputs
    return print_report(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
