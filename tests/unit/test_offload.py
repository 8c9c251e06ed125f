"""Plans applied to tiny LTX-2 transformers run on CPU through the same hooks a GPU uses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from diffusers import LTX2VideoTransformer3DModel

from pipeline.memory import StagePlan
from pipeline.models.tiny_ltx2 import TRANSFORMER_CONFIG
from pipeline.offload import BlockStreamer, apply_plan

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from ltx2_inputs import ltx2_step_inputs  # noqa: E402

CONFIG = dict(TRANSFORMER_CONFIG, num_layers=3)


def fresh() -> LTX2VideoTransformer3DModel:
    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(**CONFIG).eval()


def run(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    inputs = ltx2_step_inputs(model.config, (128, 64), 9, audio_tokens=8, text_tokens=8,
                              dtype=torch.float32, seed=seed)
    with torch.no_grad():
        video, audio = model(**inputs)
    return torch.cat([video.flatten(), audio.flatten()])


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return run(fresh())


def plan(offload: str, **options: object) -> StagePlan:
    return StagePlan(name=offload, device="cpu", offload=offload, dtype="float32", options=dict(options))


@pytest.mark.parametrize("offload", ["resident", "group_block", "group_leaf", "sequential"])
def test_diffusers_hooks_give_the_resident_result(offload: str, reference: torch.Tensor) -> None:
    model = apply_plan(fresh(), plan(offload, num_blocks_per_group=1))
    assert torch.equal(run(model), reference)
    assert torch.equal(run(model), reference)  # hooks survive a second step


def test_sulphur_streamer_packs_each_block_once_and_matches(reference: torch.Tensor) -> None:
    model = apply_plan(fresh(), plan("group_block", streamer="sulphur"))
    streamer: BlockStreamer = model._sulphur_streamer
    assert len(streamer.streamed) == 3
    # every block tensor is a view of that block's single buffer: one host copy, not two
    for b in streamer.blocks:
        base = b.host.untyped_storage().data_ptr()
        for p in b.module.parameters():
            assert p.untyped_storage().data_ptr() == base
    assert torch.equal(run(model), reference)
    assert torch.equal(run(model), reference)


def test_streamer_with_resident_blocks_and_fp8_storage(reference: torch.Tensor) -> None:
    model = apply_plan(fresh(), plan("group_block", streamer="sulphur", resident_blocks=1, weights="fp8"))
    streamer: BlockStreamer = model._sulphur_streamer
    assert len(streamer.streamed) == 2 and streamer.blocks[0].gpu is not None
    fp8 = [d for (_, _, d) in streamer.blocks[1].layout if d == torch.float8_e4m3fn]
    assert len(fp8) >= 8  # the 2-D projection weights are stored in fp8 (half of bf16's bytes)
    out = run(model)
    rel = (out - reference).norm() / reference.norm()
    assert 0 < rel < 0.1, rel  # lossy, but the same function


def test_fp8_layerwise_storage_through_diffusers(reference: torch.Tensor) -> None:
    model = apply_plan(fresh(), plan("group_block", weights="fp8"))
    assert model.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    rel = (run(model) - reference).norm() / reference.norm()
    assert 0 < rel < 0.1


def test_hooks_do_not_stack() -> None:
    model = apply_plan(fresh(), plan("group_block"))
    with pytest.raises(RuntimeError, match="already placed"):
        apply_plan(model, plan("group_leaf"))


def test_gguf_transformer_composes_with_group_offload() -> None:
    """diffusers' GGUF linear layers under block-level group offloading (the 8 GB path)."""
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset = get_preset("tiny")
    ref_model = ltx2.load_transformer(preset, StagePlan(name="cpu"))
    ref = run(ref_model)
    model = ltx2.load_transformer(preset, StagePlan(name="cpu"))
    apply_plan(model, plan("group_block", num_blocks_per_group=1))
    assert any(isinstance(p, GGUFParameter) for p in model.parameters())
    assert torch.equal(run(model), ref)


def test_gguf_transformer_through_the_sulphur_streamer() -> None:
    """GGUF blocks stream as their quantized bytes (fewest bytes over PCIe), dequantized per layer."""
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset = get_preset("tiny")
    ref = run(ltx2.load_transformer(preset, StagePlan(name="cpu")))
    model = ltx2.load_transformer(preset, StagePlan(name="cpu"))
    apply_plan(model, plan("group_block", streamer="sulphur"))
    block = model._sulphur_streamer.blocks[0]
    quant = [p for p in block.module.parameters() if isinstance(p, GGUFParameter)]
    assert quant and all(p.dtype == torch.uint8 for p in quant)
    assert torch.equal(run(model), ref)
    assert torch.equal(run(model), ref)


def test_plan_applied_to_a_whole_tiny_pipeline() -> None:
    """LTX2Pipeline loaded from the tiny diffusers folder: group offload of every model
    component + VAE tiling gives the resident render, frame for frame and sample for sample."""
    from diffusers import LTX2Pipeline

    from pipeline.models import tiny_ltx2

    folder = tiny_ltx2.build_tiny() / tiny_ltx2.DIFFUSERS_DIR

    def render(p: StagePlan) -> tuple[torch.Tensor, torch.Tensor]:
        pipe = apply_plan(LTX2Pipeline.from_pretrained(folder), p)
        pipe.set_progress_bar_config(disable=True)
        assert bool(getattr(pipe.vae, "use_tiling", False)) == p.vae_tiling
        out = pipe(prompt="a red fox", width=128, height=64, num_frames=9, num_inference_steps=2,
                   guidance_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="pt",
                   max_sequence_length=16, return_dict=True)
        return out.frames, out.audio

    frames, audio = render(plan("resident"))
    frames2, audio2 = render(StagePlan(name="group", device="cpu", offload="group_block", dtype="float32",
                                       vae_tiling=True, options={"num_blocks_per_group": 1}))
    assert torch.equal(frames, frames2) and torch.equal(audio, audio2)
