"""GPU benchmark: the full-size LTX-2 transformer (random weights) under memory plans.

One process runs every mode of one comparison, each on a freshly built model:
``resident`` (bf16 on the GPU), ``peer`` (diffusers block-level group offload with
``use_stream=True``, the best peer mode) under a VRAM cap, and ``sulphur`` modes
(pipeline/memory/offload.py's block streamer: pinned in place, one copy per block, bf16 or
fp8 storage, as many blocks kept resident as the cap allows) under 8 and 12 GiB.
Per mode: median step seconds, ratio to the resident step of this run, peak VRAM
(allocator), peak host RSS (sampled) and pinned bytes, bytes over PCIe per step and
the effective GB/s. Prints one JSON document (and a Markdown table on stderr).

    python bench/gpu_pipeline.py --shape draft --modes resident,peer:8,sulphur:8:fp8,sulphur:12:fp8
    python bench/gpu_pipeline.py --layers 4 ...   # a quick smoke run (checks outputs too)

GGUF weights (random blocks): ``sulphur:8:q4`` (Q4_0; ``q8``: Q8_0) dequantizes per layer with
diffusers' torch ops, ``q4t`` with the Triton kernel; a ``b`` suffix (``q4tb``, ``q4b``) makes
the streamer dequantize each block's weights at once (``options["dequant"] = "block"``).
``resident::q4`` is the resident bf16 baseline with those same (dequantized) values.

Building 18.9B parameters: on the meta device, ``to_empty`` on the CPU, then filled by
copying tiles of one random bank (``normal_`` over every value takes minutes).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx2_inputs import ltx2_step_inputs  # noqa: E402

from pipeline.memory.planner import GiB  # noqa: E402

SHAPES = {"draft": ((640, 352), 121), "refine": ((1280, 704), 121)}


# --------------------------------------------------------------------------- building


#: bench spelling → GGUF quant type of the random blocks
_QTYPES = {"q8": "Q8_0", "q4": "Q4_0"}


def build_model(layers: int | None, quant: str | None = None) -> tuple[torch.nn.Module, int]:
    """The transformer with random bf16 weights, or random GGUF blocks in every block
    Linear (built on the meta device, so never in bf16 first); returns it and how many
    layers are GGUF."""
    from diffusers import LTX2VideoTransformer3DModel

    from pipeline.models import random_weights

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = random_weights.on_meta(
        lambda: LTX2VideoTransformer3DModel(**({"num_layers": layers} if layers else {})), torch.bfloat16)
    n = random_weights.quantize_linears(model, quant) if quant else 0
    return random_weights.materialize(model, torch.bfloat16), n


def model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# --------------------------------------------------------------------------- measuring


class RssSampler:
    """Peak resident set size of this process, sampled every 20 ms."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.peak = self.proc.memory_info().rss
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def pinned_bytes() -> int:
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is None:
        return -1
    try:
        return int(stats().get("allocated_bytes.current", -1))
    except Exception:  # noqa: BLE001 - older torch: no pinned statistics
        return -1


def free_everything() -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    if hasattr(torch._C, "_host_emptyCache"):
        torch._C._host_emptyCache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def cap(gib: float | None) -> None:
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(1.0 if gib is None else min(1.0, gib * GiB / total), 0)


def time_steps(model: torch.nn.Module, inputs: dict[str, Any], steps: int) -> tuple[list[float], torch.Tensor]:
    times = []
    out = None
    with torch.no_grad():
        for i in range(steps + 1):  # the first is warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(**inputs)[0]
            torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    return times, out.float().flatten()[:1_000_000].cpu()


# --------------------------------------------------------------------------- modes


def sulphur_resident_blocks(model: torch.nn.Module, cap_gib: float, act_bytes: int, fp8: bool) -> int:
    """Blocks that stay on the GPU: what the cap leaves after non-block weights, two
    slots, one upcast block, activations and the planner's 10% margin."""
    blocks = model.transformer_blocks
    block_bf16 = sum(p.numel() * 2 for p in blocks[0].parameters() if p.is_floating_point())
    block_bf16 += sum(m.out_features * m.in_features * 2 for m in blocks[0].modules()
                      if type(m).__name__ == "GGUFLinear")
    stored = sum(p.numel() * p.element_size() for p in blocks[0].parameters())
    block_store = block_bf16 // 2 if fp8 and stored == block_bf16 else stored
    nonblock = model_bytes(model) - stored * len(blocks)
    room = int(cap_gib * GiB * 0.9) - nonblock - 2 * block_store - (block_bf16 if fp8 else 0) - act_bytes
    return max(0, min(len(blocks) - 2, room // block_store))


def run_mode(spec: str, layers: int | None, shape: str, steps: int, ref: dict[str, Any]) -> dict[str, Any]:
    from pipeline.memory.offload import apply_plan
    from pipeline.memory.planner import ACT_BYTES_PER_TOKEN, StagePlan, audio_tokens, video_tokens

    parts = spec.split(":")
    kind = parts[0]
    cap_gib = float(parts[1]) if len(parts) > 1 and parts[1] else None
    weights = parts[2] if len(parts) > 2 else "bf16"
    size, frames = SHAPES[shape]
    free_everything()
    cap(cap_gib)
    torch.cuda.reset_peak_memory_stats()
    res: dict[str, Any] = {"mode": spec, "shape": shape, "cap_gib": cap_gib, "weights": weights}
    with RssSampler() as rss:
        t0 = time.perf_counter()
        gguf = weights[:2] in _QTYPES and set(weights[2:]) <= {"t", "b"}
        model, n_gguf = build_model(layers, _QTYPES[weights[:2]] if gguf else None)
        if gguf:
            res["gguf_linears"] = n_gguf
            if "t" in weights[2:]:
                from pipeline.memory.kernels.gguf_dequant import patch_gguf_linears

                res["triton_linears"] = patch_gguf_linears(model)
        res["build_s"] = round(time.perf_counter() - t0, 2)
        res["params"] = sum(p.numel() for p in model.parameters())
        w_bytes = model_bytes(model)
        t0 = time.perf_counter()
        streamed_per_step = 0
        if kind == "resident":
            model.to("cuda")
            if gguf:  # ``resident::q4``: the GGUF run's own values as resident bf16 nn.Linear (same data, same clocks)
                from diffusers.quantizers.gguf.utils import GGUFLinear

                from pipeline.memory.kernels.gguf_dequant import dequantize

                for mod in model.modules():
                    if isinstance(mod, GGUFLinear):
                        w = dequantize(mod.weight.as_tensor(), mod.weight.quant_type, (mod.out_features, mod.in_features))
                        mod.weight = torch.nn.Parameter(w, requires_grad=False)
                        mod.forward = torch.nn.Linear.forward.__get__(mod)
        elif kind == "peer":
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(model, onload_device=torch.device("cuda"), offload_type="block_level",
                                   num_blocks_per_group=1, use_stream=True)
            streamed_per_step = w_bytes  # every group is onloaded once per step
        elif kind == "sulphur":
            act = int((video_tokens(size, frames) + audio_tokens(frames, 24)) * ACT_BYTES_PER_TOKEN)
            k = sulphur_resident_blocks(model, cap_gib or 80, act, weights != "bf16")
            res["resident_blocks"] = k
            plan = StagePlan(name="sulphur", device="cuda", offload="group_block", dtype="bfloat16",
                             options={"streamer": "sulphur", "weights": "fp8" if weights == "fp8" else "as-stored",
                                      "resident_blocks": k, "gguf_kernels": gguf and "t" in weights[2:],
                                      "dequant": "block" if gguf and "b" in weights[2:] else "layer"})
            apply_plan(model, plan)
        else:
            raise SystemExit(f"unknown mode {spec}")
        torch.cuda.synchronize()
        res["setup_s"] = round(time.perf_counter() - t0, 2)
        gc.collect()
        # steady state (the RSS peak also holds the bf16 build before any cast/quantization)
        res["host_rss_after_setup_gib"] = round(psutil.Process().memory_info().rss / GiB, 2)
        res["pinned_bytes"] = pinned_bytes()
        st = getattr(model, "_sulphur_streamer", None)
        if st is not None:  # registered in place (cudaHostRegister), invisible to torch's pinned stats
            res["pinned_bytes"] = max(0, res["pinned_bytes"]) + sum(b.nbytes for b in st.streamed)
        inputs = ltx2_step_inputs(model.config, size, frames, audio_tokens=126, device="cuda")
        streamer = getattr(model, "_sulphur_streamer", None)
        b0 = streamer.bytes_streamed if streamer else 0
        times, out = time_steps(model, inputs, steps)
        if streamer:
            streamed_per_step = (streamer.bytes_streamed - b0) // (steps + 1)
    res["steps_s"] = [round(t, 4) for t in times]
    res["step_s"] = round(sorted(times)[len(times) // 2], 4)
    res["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
    res["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GiB, 2)
    res["peak_host_rss_gib"] = round(rss.peak / GiB, 2)
    res["pinned_gib"] = round(res["pinned_bytes"] / GiB, 2) if res["pinned_bytes"] >= 0 else None
    res["weights_gib"] = round(w_bytes / GiB, 2)
    res["pcie_bytes_per_step_gib"] = round(streamed_per_step / GiB, 2)
    res["effective_pcie_gbps"] = round(streamed_per_step / res["step_s"] / 1e9, 1) if streamed_per_step else 0
    if "out" in ref:
        r = ref["out"]
        res["rel_err_vs_resident"] = float((out - r).norm() / r.norm())
    else:
        ref["out"] = out
    del model, inputs, streamer
    free_everything()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="draft", choices=sorted(SHAPES))
    ap.add_argument("--modes", default="resident,peer:8,sulphur:8:bf16,sulphur:8:fp8,sulphur:12:fp8")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=None, help="fewer blocks for a smoke run")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import diffusers

    props = torch.cuda.get_device_properties(0)
    doc: dict[str, Any] = {
        "gpu": props.name, "gpu_memory_gib": round(props.total_memory / GiB, 1),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host_ram_gib": round(psutil.virtual_memory().total / GiB, 1), "cpus": os.cpu_count(),
        "shape": args.shape, "size": SHAPES[args.shape][0], "frames": SHAPES[args.shape][1],
        "layers": args.layers or 48, "results": [],
    }
    ref: dict[str, Any] = {}
    for spec in args.modes.split(","):
        try:
            r = run_mode(spec, args.layers, args.shape, args.steps, ref)
        except Exception as exc:  # noqa: BLE001 - a failed mode is a result too
            r = {"mode": spec, "error": f"{type(exc).__name__}: {str(exc)[:400]}"}
            free_everything()
        doc["results"].append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    base = next((r["step_s"] for r in doc["results"] if r["mode"] == "resident" and "step_s" in r), None)
    for r in doc["results"]:
        if base and "step_s" in r:
            r["ratio_to_resident"] = round(r["step_s"] / base, 3)
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    print("\n| mode | step s | × resident | peak VRAM GiB | host RSS GiB | pinned GiB | PCIe GB/s |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in doc["results"]:
        if "step_s" in r:
            print(f"| {r['mode']} | {r['step_s']} | {r.get('ratio_to_resident', '')} | {r['peak_vram_gib']} | "
                  f"{r['peak_host_rss_gib']} | {r['pinned_gib']} | {r['effective_pcie_gbps']} |", file=sys.stderr)
        else:
            print(f"| {r['mode']} | error: {r['error'][:80]} |", file=sys.stderr)
    return 0 if any("step_s" in r for r in doc["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
