"""Full-size architectures with random weights, built in seconds.

No weights can be downloaded where the GPU benchmarks run, but the memory and time a
model takes depend only on its architecture. Modules are created on the meta device
(``accelerate.init_empty_weights``) and each parameter is then materialised on the CPU
and filled by copying tiles of one random bank: ``normal_`` over 19 billion values
takes minutes, the copy seconds. Linear layers can instead receive random GGUF blocks
(``GGUFLinear`` + ``GGUFParameter``, as ``from_single_file`` + ``GGUFQuantizationConfig``
would produce) while still on the meta device, so a quantized model never exists in
bf16 on the host: a 19B transformer in Q4_0 takes 10.6 GB of RAM, not 38.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# Deferred imports: accelerate, diffusers — only a random-weight build needs them

#: GGML type id and bytes per 32-weight block of the quant types random blocks can fill.
GGUF_BLOCKS: dict[str, tuple[int, int]] = {"Q8_0": (8, 34), "Q4_0": (2, 18)}
_BANK_SIZE = 1 << 24


def _bank(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(_BANK_SIZE, generator=g) * 0.02).to(dtype)


def _tile(flat: torch.Tensor, bank: torch.Tensor, offset: int) -> None:
    pos, n = 0, flat.numel()
    while pos < n:
        k = min(n - pos, bank.numel() - offset)
        flat[pos:pos + k].copy_(bank[offset:offset + k])
        pos += k
        offset = 0


def materialize(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Give every parameter still on the meta device CPU storage filled from the bank."""
    bank = _bank(dtype)
    i = 0
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is None or p.device.type != "meta":
                continue
            t = torch.empty(p.shape, dtype=dtype if p.is_floating_point() else p.dtype)
            if t.is_floating_point():
                _tile(t.view(-1), bank.to(t.dtype), (i * 7919) % (1 << 20))
            else:
                t.zero_()
            mod._parameters[name] = torch.nn.Parameter(t, requires_grad=False)
            i += 1
    return model.eval()


def on_meta(factory: Callable[[], torch.nn.Module], dtype: torch.dtype) -> torch.nn.Module:
    """Build ``factory()`` with parameters on the meta device and ``dtype`` as the default."""
    from accelerate import init_empty_weights

    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with init_empty_weights():
            return factory()
    finally:
        torch.set_default_dtype(prev)


def build(factory: Callable[[], torch.nn.Module], dtype: torch.dtype) -> torch.nn.Module:
    """A module with random weights in ``dtype``, built without ever initialising it the slow way."""
    return materialize(on_meta(factory, dtype), dtype)


def quantize_linears(model: torch.nn.Module, quant: str, *, compute_dtype: torch.dtype = torch.bfloat16,
                     within: str = "transformer_blocks") -> int:
    """Swap the Linear layers under ``within`` for ``GGUFLinear`` holding random ``quant`` blocks.

    Each block is valid GGML bytes (a fixed small fp16 scale, random quants), so the real
    dequantization kernels run on them. Call on a meta-device model, before
    :func:`materialize`. Returns how many layers were swapped.
    """
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    qtype, nbytes = GGUF_BLOCKS[quant]
    g = torch.Generator().manual_seed(1)
    bank = torch.randint(0, 256, (1 << 20, nbytes), generator=g, dtype=torch.uint8)
    bank[:, 0:2] = torch.tensor([0.0005], dtype=torch.float16).view(torch.uint8)
    bank = bank.reshape(-1)
    root = model.get_submodule(within) if within else model
    swapped = 0
    for name, mod in list(root.named_modules()):
        if type(mod) is not torch.nn.Linear or mod.in_features % 32:
            continue
        rows, cols = mod.out_features, mod.in_features // 32 * nbytes
        data = torch.empty(rows * cols, dtype=torch.uint8)
        _tile(data, bank, 0)
        new = GGUFLinear(mod.in_features, mod.out_features, mod.bias is not None, compute_dtype=compute_dtype,
                         device="meta")
        new.weight = GGUFParameter(data.view(rows, cols), quant_type=qtype)
        parent_name, _, attr = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, attr, new)
        swapped += 1
    return swapped


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters as the checkpoint counts them (a GGUF block row counts its weights, not its bytes)."""
    total = 0
    for mod in model.modules():
        for p in mod._parameters.values():
            if p is None:
                continue
            shape: Any = getattr(p, "quant_shape", None)
            total += int(torch.Size(shape).numel()) if shape is not None else p.numel()
    return total
