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
