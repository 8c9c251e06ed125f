"""GGUF dequantization on the GPU: Sulphur's single-pass Triton kernels vs diffusers' torch ops.

For each type, a 16384×4096 weight (the LTX-2 feed-forward shape) of valid random blocks:
checks the kernel against diffusers' dequantization (max abs difference) and times both
(median of ``triton.testing.do_bench``), plus the bf16 matmul at the draft shape for scale.
Prints one JSON document.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.memory.kernels import gguf_dequant as k  # noqa: E402

# type id: (name, bytes per block, weights per block, offsets of fp16 fields)
TYPES = {k.Q8_0: ("Q8_0", 34, 32, (0,)), k.Q4_0: ("Q4_0", 18, 32, (0,)), k.Q3_K: ("Q3_K", 110, 256, (108,)),
         k.Q4_K: ("Q4_K", 144, 256, (0, 2)), k.Q5_K: ("Q5_K", 176, 256, (0, 2)), k.Q6_K: ("Q6_K", 210, 256, (208,))}


def random_blocks(rows: int, cols: int, nbytes: int, per: int, f16: tuple[int, ...]) -> torch.Tensor:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (rows, cols // per * nbytes), dtype=np.uint8)
    blocks = raw.reshape(-1, nbytes)
    for at in f16:
        blocks[:, at:at + 2] = rng.uniform(1e-3, 1e-2, blocks.shape[0]).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return torch.from_numpy(raw)


def main() -> int:
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    rows, cols = 16384, 4096
    x = torch.randn(3646, cols, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16)
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "shape": [rows, cols],
           "matmul_bf16_ms_at_3646_tokens": triton.testing.do_bench(lambda: x @ w.T, return_mode="median"),
           "types": {}}
    for qt, (name, nbytes, per, f16) in TYPES.items():
        q = random_blocks(rows, cols, nbytes, per, f16).cuda()
        p = GGUFParameter(q, quant_type=qt)
        ref = dequantize_gguf_tensor(p).to(torch.bfloat16)
        got = k.dequantize(q, qt, (rows, cols), torch.bfloat16)
        torch.cuda.synchronize()
        r = {"max_abs_diff_vs_diffusers": float((got.float() - ref.float()).abs().max()),
             "ref_max": float(ref.float().abs().max()),
             "triton_ms": triton.testing.do_bench(lambda q=q, qt=qt: k.dequantize(q, qt, (rows, cols)),
                                                  return_mode="median"),
             "diffusers_ms": triton.testing.do_bench(lambda p=p: dequantize_gguf_tensor(p).to(torch.bfloat16),
                                                     return_mode="median"),
             "bytes_read": q.numel(), "bytes_written": rows * cols * 2}
        r["triton_gbps"] = round((r["bytes_read"] + r["bytes_written"]) / r["triton_ms"] / 1e6, 1)
        out["types"][name] = r
        print(name, json.dumps(r), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
