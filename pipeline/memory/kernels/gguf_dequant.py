"""Single-pass GGUF dequantization (Q8_0, Q4_0, Q3_K, Q4_K, Q5_K, Q6_K) in Triton, and a
GGUF linear that uses it.

diffusers' native GGUF path dequantizes with a chain of torch ops (split, view, cast,
multiply: several passes over the weight) before the bf16 matmul; at the LTX-2 draft
shape that costs more than the matmul itself (shared/notes/gpu-facts.md). Here one
kernel reads each quantized block once (34 or 18 bytes per 32 weights) and writes the
bf16 weight once. ``TRITON_INTERPRET=1`` runs it on the CPU for tests.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Deferred imports: diffusers — only patching a loaded GGUF model needs its quantizer classes

Q4_0, Q8_0, Q3_K, Q4_K, Q5_K, Q6_K = 2, 8, 11, 12, 13, 14
_BLOCK_BYTES = {Q8_0: 34, Q4_0: 18, Q3_K: 110, Q4_K: 144, Q5_K: 176, Q6_K: 210}
_BLOCK_WEIGHTS = {Q8_0: 32, Q4_0: 32, Q3_K: 256, Q4_K: 256, Q5_K: 256, Q6_K: 256}
K_ROWS = 4  # 256-weight super-blocks per program
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


@triton.jit
def _f16(src, at, ok):
    lo = tl.load(src + at, mask=ok, other=0).to(tl.uint16)
    hi = tl.load(src + at + 1, mask=ok, other=0).to(tl.uint16)
    return (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _byte(src, at, ok):
    return tl.load(src + at, mask=ok, other=0).to(tl.int32)


@triton.jit
def _scale_min_k4(src, base, j, ok):
    """6-bit scale and min of sub-block j (0..7) from the 12 packed bytes at base (Q4_K/Q5_K)."""
    lo = j < 4
    jj = tl.where(lo, j, j - 4)
    d_ = _byte(src, base + jj, ok)
    m_ = _byte(src, base + 4 + jj, ok)
    md = _byte(src, base + 8 + jj, ok)
    sc = tl.where(lo, d_ & 0x3F, (md & 0x0F) | ((d_ >> 2) & 0x30))
    mn = tl.where(lo, m_ & 0x3F, (md >> 4) | ((m_ >> 2) & 0x30))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _dequant_k(src, dst, n_blocks, QT: tl.constexpr, NB: tl.constexpr, ROWS: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    okr = rows < n_blocks
    e = tl.arange(0, 256)[None, :]
    ok = okr[:, None] & (e >= 0)
    base = (rows.to(tl.int64) * NB)[:, None]
    j = e // 32
    l32 = e % 32
    if QT == 12 or QT == 13:  # Q4_K / Q5_K: d, dmin, 12 scale bytes, [qh 32], qs 128
        d = _f16(src, base, ok)
        dmin = _f16(src, base + 2, ok)
        sc, mn = _scale_min_k4(src, base + 4, j, ok)
        QS: tl.constexpr = 16 if QT == 12 else 48
        q = (_byte(src, base + QS + (j // 2) * 32 + l32, ok) >> (4 * (j % 2))) & 0xF
        if QT == 13:
            q = q | (((_byte(src, base + 16 + l32, ok) >> j) & 1) << 4)
        w = d * sc * q.to(tl.float32) - dmin * mn
    elif QT == 14:  # Q6_K: ql 128, qh 64, int8 scales 16, d
        h = e // 128
        r = e % 128
        ql = (_byte(src, base + h * 64 + (r % 64), ok) >> (4 * (r // 64))) & 0xF
        qh = (_byte(src, base + 128 + h * 32 + (r % 32), ok) >> (2 * (r // 32))) & 3
        q = (ql | (qh << 4)) - 32
        sb = _byte(src, base + 192 + e // 16, ok)
        scale = tl.where(sb >= 128, sb - 256, sb).to(tl.float32)  # int8 scales
        w = _f16(src, base + 208, ok) * scale * q.to(tl.float32)
    else:  # Q3_K: hmask 32, qs 64, 12 scale bytes, d
        i = e // 16
        lsc = (_byte(src, base + 96 + (i % 8), ok) >> (4 * (i // 8))) & 0xF
        hsc = (_byte(src, base + 104 + (i % 4), ok) >> (2 * (i // 4))) & 3
        scale = ((lsc | (hsc << 4)) - 32).to(tl.float32)
        h = e // 128
        r = e % 128
        ql = (_byte(src, base + 32 + h * 32 + (r % 32), ok) >> (2 * (r // 32))) & 3
        hm = ((_byte(src, base + l32, ok) >> j) & 1) ^ 1
        q = ql - (hm << 2)
        w = _f16(src, base + 108, ok) * scale * q.to(tl.float32)
    out = rows.to(tl.int64)[:, None] * 256 + e
    tl.store(dst + out, w.to(dst.dtype.element_ty), mask=ok)


def dequantize(qweight: torch.Tensor, quant_type: int, shape: tuple[int, int],
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(out, in) weight in ``dtype`` from GGUF bytes of shape (out, in/32 × block bytes)."""
    if quant_type not in _BLOCK_BYTES:
        raise NotImplementedError(f"GGUF type {quant_type} has no single-pass kernel")
    dst = torch.empty(shape, dtype=dtype, device=qweight.device)
    dequantize_into(qweight.contiguous().view(torch.uint8).reshape(-1), quant_type, dst)
    return dst


def dequantize_into(src: torch.Tensor, quant_type: int, dst: torch.Tensor) -> torch.Tensor:
    """Dequantize the GGUF blocks in the contiguous bytes ``src`` into the contiguous ``dst``
    (block n fills elements n × block weights onwards), in one launch. Several weights of one
    type packed back to back in ``src`` come out back to back in ``dst``: the block streamer
    dequantizes a whole transformer block this way."""
    if quant_type not in _BLOCK_BYTES:
        raise NotImplementedError(f"GGUF type {quant_type} has no single-pass kernel")
    n_blocks = src.numel() // _BLOCK_BYTES[quant_type]
    if dst.numel() != n_blocks * _BLOCK_WEIGHTS[quant_type]:
        raise ValueError(f"{n_blocks} GGUF blocks do not fill {dst.numel()} weights")
    if _BLOCK_WEIGHTS[quant_type] == 256:
        _dequant_k[(triton.cdiv(n_blocks, K_ROWS),)](src, dst, n_blocks, QT=quant_type,
                                                     NB=_BLOCK_BYTES[quant_type], ROWS=K_ROWS)
        return dst
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
    return os.environ.get("TRITON_INTERPRET") == "1"
