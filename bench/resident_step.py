"""One resident LTX-2 transformer step, as the step benches (``step_contention.py``,
``step_launch.py``, ``reference_step.py``) time it: the model as the uncapped render holds it,
their shared arguments and the timing loop."""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models import ltx2_random  # noqa: E402


def add_arguments(ap: argparse.ArgumentParser, steps: int) -> None:
    ap.add_argument("--layers", type=int, default=None, help="transformer blocks (default: all 48)")
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--draft", default="512x288", help="WxH of the draft step (the refine's is twice)")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--quant", default="Q4_0", help="GGUF type of the block weights ('' for bf16)")
    ap.add_argument("--shapes", default="draft,refine")
    ap.add_argument("--out", type=Path, default=None)


def build(layers: int | None, device: str, quant: str | None) -> torch.nn.Module:
    """The random-weight transformer with ``quant`` GGUF block weights dequantized by the Triton
    kernel, as the uncapped render holds it (bf16 weights when ``quant`` is None)."""
    from pipeline.memory.kernels.gguf_dequant import patch_gguf_linears

    model = ltx2_random.transformer(torch.bfloat16, quant, layers=layers).to(device).eval()
    if quant:
        patch_gguf_linears(model)
    return model


def setup(args: argparse.Namespace, bench: str, machine: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model ``args`` ask for, and the report's opening fields (``device``, ``draft`` size, ``build_s``)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    model = build(args.layers, device, args.quant or None)
    return model, {
        "bench": bench, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine, "device": device, "quant": args.quant or "bf16", "layers": model.config.num_layers,
        "frames": args.frames, "draft": [int(v) for v in args.draft.split("x")],
        "build_s": round(time.perf_counter() - t0, 1)}


def shape_size(draft: list[int], shape: str) -> tuple[int, int]:
    """The draft's size, or the refine's (twice it)."""
    w, h = draft
    return (w, h) if shape == "draft" else (2 * w, 2 * h)


def time_steps(model: torch.nn.Module, inputs: dict[str, Any], steps: int, device: str) -> dict[str, Any]:
    """``steps`` forwards after a warm-up: the median and each one (synchronised), and how long
    ``model(...)`` took to return (``enqueue_s``: near the step when the host is the bound, or
    when the forward synchronises inside)."""
    walls, enqueues = [], []
    with torch.no_grad():
        for i in range(steps + 1):  # the first is a warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(**inputs)
            q = time.perf_counter()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                walls.append(time.perf_counter() - t)
                enqueues.append(q - t)
    return {"step_s": round(statistics.median(walls), 4), "steps_s": [round(w, 4) for w in walls],
            "enqueue_s": round(statistics.median(enqueues), 4)}
