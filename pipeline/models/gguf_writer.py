"""Write a torch state dict as a GGUF file, the way quantized community checkpoints ship.

Tiny test models go through this so the real ``from_single_file`` + GGUF loading path
runs in CI. ``gguf.quants`` can quantize the legacy types (Q8_0 here) but not K-quants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Deferred imports: gguf, numpy — only writing a tiny twin needs them


def write_state_dict_gguf(state_dict: dict[str, Any], path: Path, arch: str) -> Path:
    """Q8_0 for 2-D ``.weight`` tensors whose rows split into 32-blocks, F32 for the rest."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    for name, tensor in state_dict.items():
        arr = tensor.detach().float().cpu().numpy()
        if arr.ndim == 2 and arr.shape[1] % 32 == 0 and name.endswith(".weight"):
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


#: GGML block layouts random tensors can be written in: (weights per block, bytes per block).
RANDOM_BLOCKS = {"Q4_0": (32, 18), "Q8_0": (32, 34)}
_BANK_BLOCKS = 1 << 16


def _random_banks(scale: float = 0.0005) -> dict[str, Any]:
    """One bank of valid blocks per type (a small fp16 scale, random quants), and float banks."""
    import numpy as np

    rng = np.random.default_rng(0)
    banks: dict[str, Any] = {}
    for kind, (_, nbytes) in RANDOM_BLOCKS.items():
        bank = rng.integers(0, 256, size=(_BANK_BLOCKS, nbytes), dtype=np.uint8)
        bank[:, 0:2] = np.array([scale], dtype=np.float16).view(np.uint8)
        banks[kind] = bank.reshape(-1)
    normal = (rng.standard_normal(_BANK_BLOCKS * 32) * 0.02).astype(np.float32)
    banks["F32"], banks["F16"] = normal, normal.astype(np.float16)
    return banks


def write_random_gguf(path: Path, arch: str, tensors: list[tuple[str, tuple[int, ...], str]]) -> int:
    """Write a GGUF of random tensors, one at a time, so the host never holds the model.

    ``tensors``: (name, shape as torch has it, kind) with kind ``Q4_0``/``Q8_0`` (a 2-D weight
    whose rows split into 32-blocks) or ``F16``/``F32``. Every block is valid GGML bytes, tiled
    from one bank, so the real loaders and dequantization kernels run on them. Returns bytes written.
    """
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    banks = _random_banks()
    writer = gguf.GGUFWriter(str(path), arch)
    layouts = []
    for name, shape, kind in tensors:
        if kind in RANDOM_BLOCKS:
            per, nbytes = RANDOM_BLOCKS[kind]
            rows, cols = shape
            byte_shape = (rows, cols // per * nbytes)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), rows * byte_shape[1],
                                   raw_dtype=gguf.GGMLQuantizationType[kind])
        else:
            byte_shape = tuple(shape)
            dtype = banks[kind].dtype
            writer.add_tensor_info(name, byte_shape, dtype, int(np.prod(shape)) * dtype.itemsize)
        layouts.append((byte_shape, kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for i, (byte_shape, kind) in enumerate(layouts):
        bank = banks[kind]
        n = int(np.prod(byte_shape))
        start = (i * 7919 * (RANDOM_BLOCKS.get(kind, (1, 1))[1])) % bank.size  # whole blocks
        writer.write_tensor_data(np.resize(np.roll(bank, -start), n).reshape(byte_shape))
    writer.close()
    return path.stat().st_size
