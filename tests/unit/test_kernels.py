"""The single-pass GGUF dequantization kernel, run by Triton's interpreter on the CPU."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("triton")


@pytest.fixture()
def kernels(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import pipeline.memory.kernels.gguf_dequant as mod

    yield importlib.reload(mod)  # kernels are decorated for the interpreter at import
    monkeypatch.delenv("TRITON_INTERPRET")
    importlib.reload(mod)


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0"])
def test_dequant_matches_gguf_reference(kernels, name: str) -> None:
    qtype = getattr(gguf.GGMLQuantizationType, name)
    w = np.random.default_rng(0).standard_normal((48, 96)).astype(np.float32)
    q = gguf.quants.quantize(w, qtype)
    ref = torch.from_numpy(gguf.quants.dequantize(q, qtype)).float()
    got = kernels.dequantize(torch.from_numpy(q), int(qtype), (48, 96), torch.float32)
    assert torch.allclose(got, ref, rtol=0, atol=1e-6)
    assert (ref - torch.from_numpy(w)).abs().max() < (0.02 if name == "Q8_0" else 0.5)


@pytest.mark.parametrize("name,f16_fields", [("Q3_K", (108,)), ("Q4_K", (0, 2)), ("Q5_K", (0, 2)), ("Q6_K", (208,))])
def test_k_quants_match_gguf_reference(kernels, name: str, f16_fields: tuple[int, ...]) -> None:
    """K-quant blocks assembled from random bytes (gguf cannot quantize K types) with
    finite fp16 scales: every bit layout is exercised, and the result must be exact."""
    qtype = getattr(gguf.GGMLQuantizationType, name)
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (6, type_size * 2), dtype=np.uint8)
    blocks = raw.reshape(-1, type_size)
    for at in f16_fields:
        scales = rng.uniform(1e-3, 1e-2, blocks.shape[0]).astype(np.float16)
        blocks[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
    ref = torch.from_numpy(gguf.quants.dequantize(raw, qtype))
    got = kernels.dequantize(torch.from_numpy(raw), int(qtype), (6, 512), torch.float32)
    assert torch.isfinite(ref).all()
    assert torch.equal(got, ref)


def test_patched_gguf_linear_gives_the_native_result(kernels) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    w = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    layer = GGUFLinear(64, 32, bias=False, compute_dtype=torch.float32)
    layer.weight = GGUFParameter(torch.from_numpy(q), quant_type=int(gguf.GGMLQuantizationType.Q8_0))
    x = torch.randn(5, 64)
    native = layer.forward_native(x)  # diffusers dequantizes through float16
    exact = x @ torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)).T
    assert kernels.patch_gguf_linears(torch.nn.Sequential(layer)) == 1
    out = layer(x)
    assert torch.allclose(out, exact, atol=1e-4)
    assert torch.allclose(out, native, atol=1e-2)
