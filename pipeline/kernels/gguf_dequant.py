"""Single-pass GGUF dequantization (Q8_0, Q4_0) in Triton, and a GGUF linear that uses it.

diffusers' native GGUF path dequantizes with a chain of torch ops (split, view, cast,
multiply: several passes over the weight) before the bf16 matmul; at the LTX-2 draft
shape that costs more than the matmul itself (shared/notes/gpu-facts.md). Here one
kernel reads each quantized block once (34 or 18 bytes per 32 weights) and writes the
bf16 weight once. ``TRITON_INTERPRET=1`` runs it on the CPU for tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Q4_0, Q8_0 = 2, 8
_BLOCK_BYTES = {Q8_0: 34, Q4_0: 18}
ROWS = 64  # quant blocks per program


@triton.jit
def _dequant_q8_0(src, dst, n_blocks, ROWS: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    ok = rows < n_blocks
    base = rows.to(tl.int64) * 34
    lo = tl.load(src + base, mask=ok, other=0).to(tl.uint16)
    hi = tl.load(src + base + 1, mask=ok, other=0).to(tl.uint16)
    d = (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)
    cols = tl.arange(0, 32)
    q = tl.load(src + base[:, None] + 2 + cols[None, :], mask=ok[:, None], other=0).to(tl.int8, bitcast=True)
    w = q.to(tl.float32) * d[:, None]
    out = rows.to(tl.int64)[:, None] * 32 + cols[None, :]
    tl.store(dst + out, w.to(dst.dtype.element_ty), mask=ok[:, None])


@triton.jit
def _dequant_q4_0(src, dst, n_blocks, ROWS: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    ok = rows < n_blocks
    base = rows.to(tl.int64) * 18
    lo = tl.load(src + base, mask=ok, other=0).to(tl.uint16)
    hi = tl.load(src + base + 1, mask=ok, other=0).to(tl.uint16)
    d = (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)
    cols = tl.arange(0, 16)
    q = tl.load(src + base[:, None] + 2 + cols[None, :], mask=ok[:, None], other=0).to(tl.int32)
    w_lo = ((q & 0xF) - 8).to(tl.float32) * d[:, None]      # elements 0..15
    w_hi = ((q >> 4) - 8).to(tl.float32) * d[:, None]       # elements 16..31
    out = rows.to(tl.int64)[:, None] * 32 + cols[None, :]
    tl.store(dst + out, w_lo.to(dst.dtype.element_ty), mask=ok[:, None])
    tl.store(dst + out + 16, w_hi.to(dst.dtype.element_ty), mask=ok[:, None])


def dequantize(qweight: torch.Tensor, quant_type: int, shape: tuple[int, int],
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(out, in) weight in ``dtype`` from GGUF bytes of shape (out, in/32 × block bytes)."""
    if quant_type not in _BLOCK_BYTES:
        raise NotImplementedError(f"GGUF type {quant_type} has no single-pass kernel")
    src = qweight.contiguous().view(torch.uint8).reshape(-1)
    n_blocks = src.numel() // _BLOCK_BYTES[quant_type]
    dst = torch.empty(shape, dtype=dtype, device=qweight.device)
    kernel = _dequant_q8_0 if quant_type == Q8_0 else _dequant_q4_0
    kernel[(triton.cdiv(n_blocks, ROWS),)](src, dst, n_blocks, ROWS=ROWS)
    return dst


def supports(quant_type: int | None) -> bool:
    return quant_type in _BLOCK_BYTES


def patch_gguf_linears(module: torch.nn.Module) -> int:
    """Make diffusers' ``GGUFLinear`` layers under ``module`` dequantize with the kernel
    (Q8_0/Q4_0 weights; other types keep diffusers' path). Returns how many were patched."""
    from diffusers.quantizers.gguf.utils import GGUFLinear

    n = 0
    for m in module.modules():
        if isinstance(m, GGUFLinear) and supports(getattr(m.weight, "quant_type", None)):
            m.forward = _fast_forward.__get__(m)
            n += 1
    return n


def _fast_forward(self: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    w = self.weight
    if not w.is_cuda and not _interpreting():
        return self.forward_native(inputs)
    weight = dequantize(w.as_tensor() if hasattr(w, "as_tensor") else w, w.quant_type,
                        (self.out_features, self.in_features), self.compute_dtype)
    bias = self.bias.to(self.compute_dtype) if self.bias is not None else None
    return torch.nn.functional.linear(inputs.to(self.compute_dtype), weight, bias)


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"
