"""Full-size random-weight models: built without a bf16 detour, real GGUF blocks, planned like real weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import LTX2VideoTransformer3DModel

from pipeline.memory.planner import GiB, component_sizes, plan_ladder
from pipeline.models import random_weights
from pipeline.models.registry import get_preset
from pipeline.models.tiny_ltx2 import TRANSFORMER_CONFIG
from pipeline.project.storyboard import Project

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from ltx2_inputs import ltx2_step_inputs  # noqa: E402


def _tiny_transformer(quant: str | None) -> torch.nn.Module:
    model = random_weights.on_meta(lambda: LTX2VideoTransformer3DModel(**TRANSFORMER_CONFIG), torch.float32)
    if quant:
        random_weights.quantize_linears(model, quant, compute_dtype=torch.float32)
    return random_weights.materialize(model, torch.float32)


def test_every_parameter_is_materialized_with_nonzero_random_values() -> None:
    model = _tiny_transformer(None)
    params = list(model.parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
    flat = torch.cat([p.detach().flatten() for p in params])
    assert 0.01 < float(flat.std()) < 0.03  # the bank's scale (0.02), not zeros or init defaults
    assert len({float(p.flatten()[0]) for p in params if p.numel() > 1}) > len(params) // 2  # not one tile


def test_block_linears_become_gguf_layers_that_dequantize_and_run() -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear, dequantize_gguf_tensor

    model = _tiny_transformer("Q4_0")
    swapped = [m for m in model.transformer_blocks.modules() if isinstance(m, GGUFLinear)]
    assert swapped and all(m.weight.quant_type == 2 for m in swapped)
    assert not any(isinstance(m, GGUFLinear) for m in model.proj_out.modules())  # only inside the blocks
    layer = swapped[0]
    w = dequantize_gguf_tensor(layer.weight).float()
    assert w.shape == (layer.out_features, layer.in_features)
    assert torch.isfinite(w).all() and float(w.abs().max()) > 0
    # a Q4_0 block holds 32 weights in 18 bytes
    assert layer.weight.numel() == layer.out_features * layer.in_features // 32 * 18
    assert random_weights.parameter_count(model) > sum(p.numel() for p in model.parameters())

    inputs = ltx2_step_inputs(model.config, (128, 64), 9, audio_tokens=8, text_tokens=8, dtype=torch.float32)
    with torch.no_grad():
        video, audio = model(**inputs)
    assert torch.isfinite(video).all() and torch.isfinite(audio).all()


def test_the_full_size_random_preset_is_planned_like_real_weights() -> None:
    preset = get_preset("ltx2-19b-random")
    sizes = component_sizes(preset)
    # sizes come from parameter counts (no weight files to measure), not the tiny table
    assert 9.5 * GiB < sizes["transformer"].nbytes < 10.5 * GiB  # 18.9B in Q4_0 (0.5625 B each)
    assert sizes["text_encoder"].nbytes > 22 * GiB  # Gemma 3 12B in bf16
    project = Project(vram_budget_gb=8, ram_budget_gb=32, output_size=(1920, 1080))
    for stage in ("draft", "refine"):
        first = plan_ladder(stage, preset, project, "cuda", frames=121)[0]
        assert first.options["streamer"] == "sulphur" and first.options["dequant"] == "block"
        assert first.vram_bytes <= 8 * GiB and first.host_bytes <= 32 * GiB


def test_a_shrunken_random_stack_never_shares_cache_keys_with_the_full_one(monkeypatch) -> None:  # noqa: ANN001
    from pipeline.models import ltx2

    preset = get_preset("ltx2-19b-random")
    full = ltx2.model_identity(preset)
    monkeypatch.setenv("SULPHUR_RANDOM_LAYERS", "1")
    assert ltx2.model_identity(preset) != full
    assert ltx2.model_identity(get_preset("tiny")) != full
