"""Plans applied to tiny LTX-2 transformers run on CPU through the same hooks a GPU uses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from diffusers import LTX2VideoTransformer3DModel

from pipeline.memory.offload import BlockStreamer, apply_plan, enable_vae_tiling
from pipeline.memory.planner import StagePlan
from pipeline.models.tiny_ltx2 import TRANSFORMER_CONFIG

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from ltx2_inputs import ltx2_step_inputs  # noqa: E402

CONFIG = dict(TRANSFORMER_CONFIG, num_layers=3)


def fresh() -> LTX2VideoTransformer3DModel:
    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(**CONFIG).eval()


def run(model: torch.nn.Module, seed: int = 1, device: str = "cpu") -> torch.Tensor:
    """One step's video and audio outputs, flattened, on the host."""
    inputs = ltx2_step_inputs(model.config, (128, 64), 9, audio_tokens=8, text_tokens=8,
                              dtype=torch.float32, seed=seed, device=device)
    with torch.no_grad():
        video, audio = model(**inputs)
    return torch.cat([video.flatten(), audio.flatten()]).cpu()


def run_gpu(model: torch.nn.Module) -> torch.Tensor:
    return run(model, device="cuda")


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


def test_a_plan_s_tiles_do_not_outlive_it() -> None:
    """A VAE held from a refine tiled at a small edge encodes and decodes a draft as a fresh VAE
    does: diffusers' ``enable_tiling()`` keeps the last sizes set, so a draft after a 256 px refine
    went on tiling at 256 px, and a segment's cache entry depended on what came before it."""
    from diffusers import AutoencoderKLLTX2Video

    from pipeline.models import tiny_ltx2

    vae = AutoencoderKLLTX2Video.from_pretrained(tiny_ltx2.build_tiny() / tiny_ltx2.DIFFUSERS_DIR / "vae").eval()
    video = torch.rand(1, 3, 9, 288, 320, generator=torch.Generator().manual_seed(0)) * 2 - 1
    draft = StagePlan(name="draft", device="cpu", vae_tiling=True, options={"vae_tile": 512})
    refine = StagePlan(name="refine", device="cpu", vae_tiling=True, options={"vae_tile": 256})

    def roundtrip() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            latents = vae.encode(video).latent_dist.mode()
            return latents, vae.decode(latents, return_dict=False)[0]

    enable_vae_tiling(vae, draft)
    fresh = roundtrip()
    enable_vae_tiling(vae, refine)
    tiled = roundtrip()
    assert not torch.equal(tiled[0], fresh[0]) and not torch.equal(tiled[1], fresh[1])  # 256 px tiles do tile
    enable_vae_tiling(vae, draft)
    again = roundtrip()
    assert torch.equal(again[0], fresh[0]) and torch.equal(again[1], fresh[1])


# --------------------------------------------------------------------------- per-block GGUF dequantization


def _gguf_model() -> torch.nn.Module:
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    return ltx2.load_transformer(get_preset("tiny"), StagePlan(name="cpu"))


@pytest.fixture(scope="module")
def gguf_reference() -> torch.Tensor:
    return run(_gguf_model())


def _count_native_dequant(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from diffusers.quantizers.gguf import utils

    calls = [0]
    native = utils.GGUFLinear.forward_native

    def counted(self, inputs):
        calls[0] += 1
        return native(self, inputs)

    monkeypatch.setattr(utils.GGUFLinear, "forward_native", counted)
    return calls


@pytest.mark.parametrize("resident", [0, 1])
def test_streamer_dequantizes_gguf_per_block(resident: int, gguf_reference: torch.Tensor,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """dequant="block": a block's GGUF weights are dequantized in one go (one launch per
    quant type) into the shared scratch when it starts; its layers run plain F.linear on
    views of it. Same result as the per-layer path and as no streamer, bit for bit on CPU
    (diffusers' torch-ops dequantization either way)."""
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    layer = apply_plan(_gguf_model(), plan("group_block", streamer="sulphur", resident_blocks=resident))
    block = apply_plan(_gguf_model(), plan("group_block", streamer="sulphur", resident_blocks=resident,
                                           dequant="block"))
    st: BlockStreamer = block._sulphur_streamer
    n_quant = sum(isinstance(p, GGUFParameter) for p in st.blocks[0].module.parameters())
    assert n_quant >= 20
    for b in st.blocks:
        assert len(b.runs) == 1 and b.runs[0].numel == sum(s.numel() for _, _, s, _ in b.linears)
        assert len(b.weights) == n_quant and b.n_bind == len(b.tensors) - n_quant
    assert st.scratch is not None and st.scratch.numel() == max(b.scratch_bytes for b in st.blocks)
    layer_out = run(layer)
    calls = _count_native_dequant(monkeypatch)
    out = run(block)
    n_blocks_layers = sum(len(b.weights) for b in st.blocks)
    n_all = sum(isinstance(m, GGUFLinear) for m in block.modules())
    assert calls[0] == n_all - n_blocks_layers  # only the non-block GGUF layers dequantize themselves
    assert torch.equal(out, gguf_reference) and torch.equal(layer_out, gguf_reference)
    assert torch.equal(run(block), gguf_reference)  # second step: the scratch is reused
    # between passes no layer holds a scratch view; streamed GGUF weights never left their host buffer
    for b in st.blocks:
        assert all(m._sulphur_w is None for m, _ in b.weights)
    for b in st.streamed:
        base = b.host.untyped_storage().data_ptr()
        assert all(p.untyped_storage().data_ptr() == base for p in b.module.parameters())


def test_block_dequant_hooks_remove_cleanly(gguf_reference: torch.Tensor) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear

    from pipeline.memory.offload import STREAMER_HOOK

    model = apply_plan(_gguf_model(), plan("group_block", streamer="sulphur", dequant="block"))
    st: BlockStreamer = model._sulphur_streamer
    run(model)
    st.detach()
    assert not hasattr(model, "_sulphur_streamer")
    for b in model.transformer_blocks:
        assert b._diffusers_hook.get_hook(STREAMER_HOOK) is None
    for m in model.modules():
        assert "_sulphur_w" not in m.__dict__ and "_sulphur_layer_forward" not in m.__dict__
        if isinstance(m, GGUFLinear):
            assert "forward" not in m.__dict__
    assert torch.equal(run(model), gguf_reference)  # the layers' own path, from the host buffers
    apply_plan(model, plan("resident"))  # and the model can be placed again
    assert torch.equal(run(model), gguf_reference)


def test_a_detached_streamer_frees_its_buffers_without_waiting_for_gc(reference: torch.Tensor) -> None:
    """Re-streaming packs every block into new host buffers: the old ones must be gone as
    soon as their tensors are rebound, not at the next gc pass, or the model is in host RAM
    twice for the whole re-pack (seen as +10 GiB at draft → refine on the 19B model)."""
    import gc
    import weakref

    model = apply_plan(fresh(), plan("group_block", streamer="sulphur", resident_blocks=1))
    run(model)
    old = weakref.ref(model._sulphur_streamer)
    host = weakref.ref(old().blocks[-1].host)  # a streamed block's buffer object
    gc.collect()
    gc.disable()
    try:
        old().detach()
        assert old() is None, "something still holds the detached streamer"
        apply_plan(model, plan("group_block", streamer="sulphur", resident_blocks=0))  # re-packed
        assert host() is None, "the old host buffer outlived the re-pack"
    finally:
        gc.enable()
    assert torch.equal(run(model), reference)


def test_block_dequant_is_a_no_op_without_gguf(reference: torch.Tensor) -> None:
    model = apply_plan(fresh(), plan("group_block", streamer="sulphur", dequant="block"))
    st: BlockStreamer = model._sulphur_streamer
    assert st.scratch is None and not any(b.runs for b in st.blocks)
    assert torch.equal(run(model), reference)
    with pytest.raises(ValueError, match="dequant"):
        apply_plan(fresh(), plan("group_block", streamer="sulphur", dequant="blocks"))


@pytest.fixture()
def interpreted_kernels(monkeypatch: pytest.MonkeyPatch):
    """The Triton kernels under Triton's CPU interpreter (as tests/unit/test_kernels.py)."""
    pytest.importorskip("triton")
    import importlib

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import pipeline.memory.kernels.gguf_dequant as mod

    yield importlib.reload(mod)
    monkeypatch.delenv("TRITON_INTERPRET")
    importlib.reload(mod)


def test_block_dequant_with_the_triton_kernel_matches_the_per_layer_kernel(interpreted_kernels,
                                                                           gguf_reference: torch.Tensor) -> None:
    """One Triton launch over a whole block's back-to-back Q8_0 weights gives exactly what
    the per-layer Triton forward gives (the GPU path, run by the interpreter)."""
    layer, block = _gguf_model(), _gguf_model()
    for m in (layer, block):  # as apply_plan does on CUDA: every GGUF layer on the kernel, then the streamer
        assert interpreted_kernels.patch_gguf_linears(m) > 0
    apply_plan(layer, plan("group_block", streamer="sulphur"))
    apply_plan(block, plan("group_block", streamer="sulphur", dequant="block"))
    assert all(r.kernel for b in block._sulphur_streamer.blocks for r in b.runs)
    out = run(block)
    assert torch.equal(out, run(layer))
    # Triton dequantizes in fp32, diffusers' torch ops through fp16: equal to fp16 rounding
    assert torch.allclose(out, gguf_reference, rtol=1e-2, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_block_dequant_on_cuda_matches_the_per_layer_path(gguf_reference: torch.Tensor) -> None:
    """On the GPU: streams, events, pinned buffers and the Triton kernel, block vs layer."""
    def cuda_plan(**o: object) -> StagePlan:
        return StagePlan(name="s", device="cuda", offload="group_block", dtype="float32",
                         options={"streamer": "sulphur", **o})

    layer = apply_plan(_gguf_model(), cuda_plan())
    block = apply_plan(_gguf_model(), cuda_plan(dequant="block"))
    assert all(r.kernel for b in block._sulphur_streamer.blocks for r in b.runs)

    ref = run_gpu(layer)
    assert torch.equal(run_gpu(block), ref) and torch.equal(run_gpu(block), ref)
    assert torch.allclose(ref, gguf_reference, rtol=1e-2, atol=1e-3)


def test_block_dequant_falls_back_to_diffusers_for_types_without_a_kernel(
        interpreted_kernels, gguf_reference: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernels run but lack the quant type, the same per-block launch goes through
    diffusers' torch ops."""
    import pipeline.memory.offload as offload

    monkeypatch.setattr(offload, "_kernel_supports", lambda qtype: False)
    model = apply_plan(_gguf_model(), plan("group_block", streamer="sulphur", dequant="block"))
    assert model._sulphur_streamer.gguf_kernels
    assert not any(r.kernel for b in model._sulphur_streamer.blocks for r in b.runs)
    assert torch.equal(run(model), gguf_reference)


def test_a_streamed_transformer_is_restreamed_in_place_not_reloaded(gguf_reference: torch.Tensor,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Draft and refine plans differ in how many blocks stay on the device: the held
    transformer is re-streamed (same object, no second load) and computes the same."""
    from pipeline.memory.loaded import LoadedModels
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset, models, loads = get_preset("tiny"), LoadedModels(), []
    real_load = ltx2.load_transformer

    def counting_load(*args: object, **kwargs: object) -> torch.nn.Module:
        loads.append(1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ltx2, "load_transformer", counting_load)
    draft = ltx2.component(models, preset, "transformer",
                           plan("group_block", streamer="sulphur", resident_blocks=0, dequant="block"))
    assert torch.equal(run(draft), gguf_reference)
    refine = ltx2.component(models, preset, "transformer", plan("group_block", streamer="sulphur", resident_blocks=1))
    assert refine is draft and len(loads) == 1
    assert len(refine._sulphur_streamer.streamed) == len(refine.transformer_blocks) - 1
    assert torch.equal(run(refine), gguf_reference)
    # a different placement cannot be changed in place: that one reloads
    ltx2.component(models, preset, "transformer", plan("resident"))
    assert len(loads) == 2


def test_components_that_ride_along_are_not_reloaded_for_a_transformer_only_change() -> None:
    """Draft → refine changes the transformer's streaming options; the VAE is placed the
    same way under both (it rides along), so it is kept, not loaded from disk again."""
    from pipeline.memory.loaded import LoadedModels
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset, models = get_preset("tiny"), LoadedModels()
    draft = plan("group_block", streamer="sulphur", resident_blocks=0, dequant="block")
    refine = plan("group_block", streamer="sulphur", resident_blocks=2)
    vae = ltx2.component(models, preset, "vae", draft)
    assert ltx2.component(models, preset, "vae", refine) is vae
    assert ltx2.component(models, preset, "vae", plan("resident")) is not vae  # another placement: reloaded
