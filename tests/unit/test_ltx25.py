"""LTX-2.5 the same way as LTX-2.3: the tiny 2.5 twin, written as 2.5 is published, loads through the
real loaders with every tensor equal to its source, and ``ltx25-distilled`` names the published files
and recipe. Names, shapes and numbers below are restated from the sources written beside the preset
(pipeline/models/ltx2.py) and from diffusers 0.42.1, not read from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.memory.planner import StagePlan
from pipeline.models import ltx2, published, tiny_ltx25
from pipeline.models.registry import get_preset


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ltx25.write_twin(tmp_path_factory.mktemp("ltx25"))


@pytest.fixture
def preset(root: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a Preset
    for key, value in tiny_ltx25.overrides(root).items():
        monkeypatch.setenv(key, value)
    return get_preset("ltx25-distilled")


def _source(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    assert len(files) == 1, files
    return load_file(str(files[0]))


def _plain(t: torch.Tensor) -> torch.Tensor:
    if hasattr(t, "quant_type"):
        from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

        return dequantize_gguf_tensor(t).float()
    return t.float()


def test_twin_is_ltx25_shaped_with_lightricks_names(root: Path) -> None:
    import gguf
    from safetensors import safe_open

    cfg = json.loads((root / "diffusers" / "transformer" / "config.json").read_text())
    assert cfg["ff_bias"] is False and cfg["use_keyframes_abs_pos_embedding"] is True
    assert cfg["gated_attn"] and cfg["cross_attn_mod"] and cfg["use_prompt_adaln_single"]
    with safe_open(str(root / tiny_ltx25.SAFETENSORS_FILE), "pt") as f:
        names = set(f.keys())
        keyframes = f.get_tensor("model.diffusion_model.keyframes_abs_pos_embedding")
    assert all(n.startswith("model.diffusion_model.") for n in names)
    assert keyframes.shape == (1, 32) and keyframes.abs().sum() > 0  # (1, inner dim) as Lightricks ships it
    assert "model.diffusion_model.prompt_adaln_single.linear.weight" in names
    # video FFN without biases, audio FFN with them (the published 2.5 header)
    assert not any(".ff.net." in n and n.endswith(".bias") for n in names)
    assert "model.diffusion_model.transformer_blocks.0.audio_ff.net.2.bias" in names
    # the community-style GGUF stores the keyframe parameter 1-D
    reader = gguf.GGUFReader(str(root / tiny_ltx25.GGUF_FILE))
    tensor = next(t for t in reader.tensors if t.name.endswith("keyframes_abs_pos_embedding"))
    assert list(tensor.shape) == [32]
    te = json.loads((root / "diffusers" / "text_encoder" / "config.json").read_text())
    assert te["model_type"] == "gemma4_unified" and te["text_config"]["attention_k_eq_v"] is True


@pytest.mark.parametrize("rel", [tiny_ltx25.GGUF_FILE, tiny_ltx25.SAFETENSORS_FILE])
def test_transformer_twin_loads_every_tensor_equal(root: Path, rel: str) -> None:
    source = _source(root / "diffusers" / "transformer")
    model = published.load_transformer(root / rel, root / "diffusers" / "transformer", torch.float32)
    loaded = model.state_dict()
    assert set(loaded) == set(source)
    assert loaded["keyframes_abs_pos_embedding"].shape == (1, 32)
    for name, want in source.items():
        got = _plain(loaded[name]).reshape(want.shape)
        if hasattr(loaded[name], "quant_type"):  # Q8_0: one scale per 32 values
            assert torch.allclose(got, want.float(), atol=float(want.abs().max()) / 100 + 1e-6), name
        else:
            assert torch.equal(got, want.float()), name


def test_the_full_size_25_config_has_the_published_tensor_count() -> None:
    """A third-party read of the real ltx-2.5 distilled header: 4091 DiT tensors (the 2.3 layout's 4186, less
    the 48 blocks' two video FFN biases, plus the keyframe parameter), 18.99B parameters."""
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel

    from pipeline.models import ltx_keys

    with init_empty_weights():
        model = LTX2VideoTransformer3DModel.from_config(tiny_ltx25.PUBLISHED_TRANSFORMER_CONFIG)
    sd = model.state_dict()
    assert len(sd) == 4186 - 2 * 48 + 1
    assert round(sum(t.numel() for t in sd.values()) / 1e9, 2) == 18.99
    assert tuple(sd["keyframes_abs_pos_embedding"].shape) == (1, 4096)
    assert all(ltx_keys.to_diffusers(ltx_keys.to_lightricks(k)) == k for k in sd)


def test_a_23_config_refuses_the_25_file_naming_what_differs(root: Path, tmp_path: Path) -> None:
    cfg = json.loads((root / "diffusers" / "transformer" / "config.json").read_text())
    cfg.update(ff_bias=True, use_keyframes_abs_pos_embedding=False)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(published.WeightsMismatch) as err:
        published.load_transformer(root / tiny_ltx25.GGUF_FILE, tmp_path, torch.float32)
    e = err.value
    assert "transformer_blocks.0.ff.net.0.proj.bias" in e.missing and len(e.missing) == 2 * 2  # 2 blocks × 2
    assert e.unexpected == ["keyframes_abs_pos_embedding"]
    assert str(root / tiny_ltx25.GGUF_FILE) in str(e) and "\n" not in str(e)


def test_every_folder_component_loads_strictly_with_every_tensor_equal(root: Path, preset) -> None:  # noqa: ANN001
    plan, d = StagePlan(name="cpu"), root / "diffusers"
    for name, folder in (("vae", d / "vae"), ("audio_vae", d / "audio_vae"), ("vocoder", d / "vocoder"),
                         ("connectors", d / "connectors"), ("upsampler", d / "latent_upsampler")):
        model = ltx2._load_diffusers_component(preset, name, plan)
        source, loaded = _source(folder), model.state_dict()
        assert set(source) == set(loaded), name
        for key, want in source.items():
            assert torch.equal(loaded[key].float(), want.float()), f"{name}: {key}"
    # Gemma 4: transformers renames some keys on save (embed_vision -> vision_embedder), so the source is
    # the module that was saved; the file holds one tensor per parameter (lm_head is tied to the embedding).
    encoder = ltx2._load_diffusers_component(preset, "text_encoder", plan)
    assert type(encoder).__name__ == "Gemma4UnifiedForConditionalGeneration"
    want, got = tiny_ltx25.text_encoder_model().state_dict(), encoder.state_dict()
    assert set(want) == set(got)
    for key, value in want.items():
        assert torch.equal(got[key], value), f"text_encoder: {key}"
    assert len(_source(d / "text_encoder")) == len(want) - 1
    assert type(ltx2._load_diffusers_component(preset, "vocoder", plan)).__name__ == "LTX2VocoderWithBWE"
    # no LoRA role: the connectors carry no adapter
    assert not getattr(ltx2._load_diffusers_component(preset, "connectors", plan), "peft_config", None)


def test_an_unknown_text_encoder_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(published.WeightsMismatch, match="model_type=llama"):
        published.text_encoder_class(tmp_path)


def test_preset_names_the_published_files_and_no_lora() -> None:
    p = get_preset("ltx25-distilled")
    gguf = p.file("transformer_gguf")
    assert (gguf.repo, gguf.filename) == ("realrebelai/LTX-2.5_GGUFs", "LTX-2.5-Distilled-Q3_K_M.gguf")
    assert not gguf.sha256 and not gguf.size  # one third-party source only: not pinned
    for role in ("transformer_config", "diffusers", "upsampler"):
        assert p.file(role).repo == "Lightricks/LTX-2.5-Diffusers", role
    assert p.file("transformer_config").patterns == ("transformer/config.json",)
    assert p.file("upsampler").patterns == ("latent_upsampler/*",)
    assert "transformer/*" not in p.file("diffusers").patterns
    assert {"text_encoder/*", "vae/*", "vocoder/*", "connectors/*"} <= set(p.file("diffusers").patterns)
    enhancer = p.file("enhancer")
    assert (enhancer.repo, enhancer.filename) == ("unsloth/gemma-4-E2B-it-GGUF", "gemma-4-E2B-it-Q4_K_M.gguf")
    assert not any(f.role == "lora" for f in p.files) and p.lora_strength == 0.0
    assert p.file("upscaler") == get_preset("ltx23-distilled").file("upscaler")
    # its own env names: an LTX-2.3 override never reaches a 2.5 render
    assert not {f.env for f in p.files if f.role != "upscaler"} & {f.env for f in get_preset("ltx23-distilled").files}


def test_preset_sizes_are_multiples_of_64_and_the_crf_is_18() -> None:
    p = get_preset("ltx25-distilled")
    for w, h in (p.draft_size, p.refine_size):
        assert w % 64 == 0 and h % 64 == 0
    assert p.refine_size == (2 * p.draft_size[0], 2 * p.draft_size[1])  # the x2 latent upsampler
    assert p.size_multiple == 64 and p.guidance_scale == 1.0
    assert p.extra["image_crf"] == 18  # diffusers' LTX2_5_IMAGE_CRF
    from diffusers.pipelines.ltx2.utils import LTX2_5_IMAGE_CRF

    assert LTX2_5_IMAGE_CRF == 18


def test_enhancer_speaks_the_25_prompts_greedily() -> None:
    from diffusers.pipelines.ltx2.utils import (
        LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT,
        LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT,
    )

    from pipeline.models.enhancer import _messages
    from pipeline.stages.enhance import _max_tokens, _temperature

    p = get_preset("ltx25-distilled")
    mode = p.extra["enhance_system_prompt"]
    t2v = _messages("a fox in the snow", mode, False, None)
    assert t2v == [{"role": "system", "content": LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT.strip()},
                   {"role": "user", "content": "user prompt: a fox in the snow"}]
    i2v = _messages("a fox in the snow", mode, True, None)
    assert i2v[0]["content"] == LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT.strip()
    assert i2v[1]["content"] == "User Raw Input Prompt: a fox in the snow."  # pipeline_ltx2.enhance_prompt
    assert _temperature(p) == 0.0 and _temperature(get_preset("ltx23-distilled")) == 0.7

    class Job:
        preset = p

    assert _max_tokens(Job()) == 600  # GEMMA4_PROMPT_ENHANCEMENT_CONFIG.max_new_tokens


@pytest.mark.parametrize(("key", "size"), [("draft_size", "[512, 288]"), ("refine_size", "[1000, 576]")])
def test_a_size_not_divisible_by_64_is_refused_in_one_line(tmp_path: Path, key: str, size: str) -> None:
    from pipeline.project.storyboard import load as load_storyboard
    from pipeline.render.errors import RenderError
    from pipeline.render.job import RenderJob

    board = tmp_path / "story.toml"
    board.write_text(f'[project]\npreset = "ltx23-distilled"\n{key} = {size}\n\n[[segment]]\nid = "a"\n'
                     'prompt = "a fox"\nseconds = 1.0\n')
    sb = load_storyboard(board)
    RenderJob.resolve(sb)  # LTX-2.3 takes /32 sizes (and rounds a draft)
    with pytest.raises(RenderError) as err:
        RenderJob.resolve(sb, _overrides("ltx25-distilled"))
    msg = err.value.message
    assert msg.startswith(f"{board}:3:1: project.{key}: ") and "multiples of 64" in msg and "\n" not in msg
    assert "ltx25-distilled" in msg
    board.write_text(board.read_text().replace(size, "[640, 384]"))
    RenderJob.resolve(load_storyboard(board), _overrides("ltx25-distilled"))


def _overrides(preset: str):  # noqa: ANN202
    from pipeline.render.job import Overrides

    return Overrides(preset=preset)


def test_the_enhance_stage_runs_the_25_enhancer_greedily(root: Path, preset, tmp_path: Path,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The real preset's enhance stage (its GGUF pointed at the twin's) asks for the 2.5 prompts, 600 tokens
    and temperature 0, and the cache key says so; another preset's key keeps no temperature."""
    import threading

    from pipeline.memory.loaded import LoadedModels
    from pipeline.models import enhancer
    from pipeline.project.storyboard import Project, Segment, Storyboard
    from pipeline.stages.base import SegmentJob, StageContext
    from pipeline.stages.enhance import EnhanceStage

    asked: list[dict] = []
    real = enhancer.enhance
    monkeypatch.setattr(enhancer, "enhance", lambda llm, prompt, **kw: asked.append(kw) or real(llm, prompt, **kw))
    seg = Segment(id="s1", prompt="a fox in the snow")
    board = Storyboard(path=tmp_path / "board.toml", project=Project(), segments=(seg,))
    job = SegmentJob(storyboard=board, segment=seg, index=0, preset=preset, frames=9, seed=3, fps=24,
                     draft_size=(128, 64), refine_size=(256, 128), output_size=(256, 128), steps=8,
                     refine_sigmas=preset.refine_sigmas, lora_strength=0.0, audio=False)
    ctx = StageContext(emit=lambda e: None, cancel=threading.Event(), models=LoadedModels(),
                       plan=StagePlan(name="cpu"), segment_id="s1")
    out = tmp_path / "out"
    out.mkdir()
    meta = EnhanceStage().run(ctx, job, {}, out)
    assert (out / "prompt.txt").read_text(encoding="utf-8") == meta["prompt"]
    assert len(asked) == 1
    assert (asked[0]["mode"], asked[0]["temperature"], asked[0]["max_tokens"]) == ("ltx25", 0.0, 600)
    params = EnhanceStage().params(job)
    assert params["temperature"] == 0.0 and params["mode"] == "ltx25" and params["prompts_from"]
    from dataclasses import replace

    assert "temperature" not in EnhanceStage().params(replace(job, preset=get_preset("ltx23-distilled")))
