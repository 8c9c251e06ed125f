"""Wan2.2: TI2V-5B (one dense transformer, text- or image-to-video) and I2V-A14B (two GGUF experts).

Wan2.2-I2V-A14B splits denoising between a high-noise expert (``transformer``, steps
with t ≥ boundary_ratio × 1000) and a low-noise expert (``transformer_2``). The
consumer-card build is GGUF (QuantStack/Wan2.2-I2V-A14B-GGUF, ~9 GB per expert at Q4),
loaded with ``WanTransformer3DModel.from_single_file(..., quantization_config=
GGUFQuantizationConfig(...))``; everything else comes from the Diffusers repo. Both use
umT5-XXL as text encoder (encoded on the CPU, then evicted; see recipes.py).

The tiny twins keep the real structure: the TI2V twin has the 48-channel, 16× VAE
(patch 2) and ``expand_timesteps``; the A14B twin has the 16-channel 8× VAE, two
experts with 36 input channels, and its experts are written as GGUF files in the
*original* Wan key layout (``blocks.0.self_attn.q.weight``…) so diffusers' Wan
checkpoint conversion runs exactly as for the QuantStack files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models import family
from pipeline.models.registry import ModelFile, Preset, register, sulphur_home

if TYPE_CHECKING:
    import torch

# Deferred imports: torch, diffusers — the presets are read without them; they load with the model

BUILDER_VERSION = 1
TI2V_FOLDER = f"tiny-wan-ti2v-v{BUILDER_VERSION}"
A14B_FOLDER = f"tiny-wan-i2v-a14b-v{BUILDER_VERSION}"
HIGH_GGUF = "gguf/wan22-i2v-a14b-tiny-HighNoise-Q8_0.gguf"
LOW_GGUF = "gguf/wan22-i2v-a14b-tiny-LowNoise-Q8_0.gguf"

_TRANSFORMER_COMMON: dict[str, Any] = {
    # 2 heads × 16 = 32 wide, so the attention / FFN weights are GGUF Q8_0-eligible (rows of 32).
    "patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 32,
    "freq_dim": 64, "ffn_dim": 64, "num_layers": 2, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32,
}
TI2V_TRANSFORMER = dict(_TRANSFORMER_COMMON, in_channels=48, out_channels=48)
A14B_TRANSFORMER = dict(_TRANSFORMER_COMMON, in_channels=36, out_channels=16)

TI2V_VAE: dict[str, Any] = {
    # Wan2.2's VAE: 48 latent channels, patchified input, 16× space / 4× time.
    "base_dim": 4, "z_dim": 48, "in_channels": 12, "out_channels": 12, "is_residual": True, "patch_size": 2,
    "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
    "scale_factor_spatial": 16, "scale_factor_temporal": 4, "temperal_downsample": [False, True, True],
}
A14B_VAE: dict[str, Any] = {
    # Wan2.1's VAE (used by the A14B models): 16 channels, 8× space / 4× time.
    "base_dim": 4, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
SCHEDULER: dict[str, Any] = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 5.0}
A14B_BOUNDARY = 0.9  # Wan2.2 I2V: the high-noise expert takes t ≥ 900


def _digest(kind: str) -> str:
    cfg = {"v": BUILDER_VERSION, "kind": kind, "scheduler": SCHEDULER, "words": family.WORDS}
    if kind == "ti2v":
        cfg.update(transformer=TI2V_TRANSFORMER, vae=TI2V_VAE)
    else:
        cfg.update(transformer=A14B_TRANSFORMER, vae=A14B_VAE, boundary=A14B_BOUNDARY)
    return family.config_digest(cfg)


# --------------------------------------------------------------------------- tiny twins


def build_tiny_ti2v() -> Path:
    return family.build_once(family.tiny_root(TI2V_FOLDER), _build_ti2v, _digest("ti2v"))


def build_tiny_a14b() -> Path:
    return family.build_once(family.tiny_root(A14B_FOLDER), _build_a14b, _digest("a14b"))


def _build_ti2v(root: Path) -> None:
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    d = root / "diffusers"
    family.save_t5(d, "umt5", 32, seed=0)
    torch.manual_seed(1)
    transformer = WanTransformer3DModel(**TI2V_TRANSFORMER)
    torch.manual_seed(2)
    vae = AutoencoderKLWan(**TI2V_VAE)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=UniPCMultistepScheduler(**SCHEDULER),
                       transformer=transformer, expand_timesteps=True)
    pipe.save_pretrained(d)
    family.patch_model_index(d, text_encoder=["transformers", "UMT5EncoderModel"])
    family.build_shared_tiny_parts(root)


def _build_a14b(root: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )

    d = root / "diffusers"
    family.save_t5(d, "umt5", 32, seed=0)
    torch.manual_seed(2)
    vae = AutoencoderKLWan(**A14B_VAE)
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                   scheduler=UniPCMultistepScheduler(**SCHEDULER), image_processor=None,
                                   image_encoder=None, transformer=None, transformer_2=None,
                                   boundary_ratio=A14B_BOUNDARY)
    pipe.save_pretrained(d)
    family.patch_model_index(d, text_encoder=["transformers", "UMT5EncoderModel"],
                       transformer=["diffusers", "WanTransformer3DModel"],
                       transformer_2=["diffusers", "WanTransformer3DModel"])
    # Like the real Diffusers repo: transformer/ and transformer_2/ hold the configs the
    # GGUF experts are loaded against; the weights themselves live in the GGUF files.
    for seed, sub, rel in ((3, "transformer", HIGH_GGUF), (4, "transformer_2", LOW_GGUF)):
        torch.manual_seed(seed)
        expert = WanTransformer3DModel(**A14B_TRANSFORMER)
        expert.save_config(d / sub)
        family.write_gguf(to_original_keys(expert.state_dict()), root / rel, "wan")
    family.build_shared_tiny_parts(root)


#: diffusers → original Wan names (the inverse of diffusers' convert_wan_transformer_to_diffusers).
_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."), (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    (".ffn.net.0.proj.", ".ffn.0."), (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),  # diffusers' norm2 is the cross-attention norm, the original's norm3
    ("proj_out.", "head.head."),
)


def to_original_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename a diffusers Wan transformer state dict to the layout of the original / GGUF files."""
    out = {}
    for key, value in state_dict.items():
        new = key
        for a, b in _TO_ORIGINAL:
            new = new.replace(a, b)
        if new == "scale_shift_table":
            new = "head.modulation"
        elif new.endswith(".scale_shift_table"):
            new = new[: -len("scale_shift_table")] + "modulation"
        out[new] = value
    return out


# --------------------------------------------------------------------------- presets

_HOME = str(sulphur_home())

TINY_TI2V = register(Preset(
    name="tiny-wan-ti2v",
    family="wan",
    description="Random-weight Wan2.2-TI2V-5B twin (built offline in seconds): text- or image-to-video, no audio.",
    files=family.tiny_files(TI2V_FOLDER, (
        ModelFile("diffusers", "Wan2.2-TI2V twin: transformer, VAE, umT5, tokenizer, scheduler", path="diffusers"),
    )),
    draft_size=(64, 32), refine_size=(64, 32), steps=2, guidance_scale=5.0,
    frame_multiple=4, size_multiple=32, audio=False, builder=build_tiny_ti2v,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "recipe": "wan22-ti2v-5b", "max_sequence_length": 16, "tiny_digest": _digest("ti2v"),
           "native_size": (64, 32), "native_frames": 5},
))

TINY_A14B = register(Preset(
    name="tiny-wan-i2v-a14b",
    family="wan",
    description="Random-weight Wan2.2-I2V-A14B twin: two GGUF (Q8_0) experts, image-to-video only, no audio.",
    files=family.tiny_files(A14B_FOLDER, (
        ModelFile("diffusers", "A14B twin: VAE, umT5, tokenizer, scheduler, expert configs", path="diffusers"),
        ModelFile("expert_high", "high-noise expert, GGUF", path=HIGH_GGUF),
        ModelFile("expert_low", "low-noise expert, GGUF", path=LOW_GGUF),
    )),
    draft_size=(64, 32), refine_size=(64, 32), steps=2, guidance_scale=3.5,
    frame_multiple=4, size_multiple=16, audio=False, builder=build_tiny_a14b,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "recipe": "wan22-i2v-a14b-gguf", "max_sequence_length": 16, "tiny_digest": _digest("a14b"),
           "needs_anchor": True, "native_size": (64, 32), "native_frames": 5},
))

TI2V_5B = register(Preset(
    name="wan22-ti2v-5b",
    family="wan",
    description="Wan2.2-TI2V-5B (text- or image-to-video, 24 fps); soft at 12 GB sizes; model offload. No audio.",
    files=(
        ModelFile("diffusers", "Wan2.2-TI2V-5B, Diffusers folder (transformer, VAE, umT5-XXL, tokenizer)",
                  path=f"{_HOME}/wan22/Wan2.2-TI2V-5B-Diffusers", env="SULPHUR_WAN_TI2V",
                  repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers"),
    ) + family.real_support_files(_HOME),
    draft_size=(640, 352), refine_size=(640, 352), steps=50, guidance_scale=5.0,
    frame_multiple=4, size_multiple=32, audio=False,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "max_sequence_length": 512, "native_size": (1280, 704), "native_frames": 121, "native_fps": 24},
))

I2V_A14B = register(Preset(
    name="wan22-i2v-a14b-gguf",
    family="wan",
    description="Wan2.2-I2V-A14B, two GGUF Q4 experts (image-to-video only; 720p via leaf-level group offload). "
                "No audio.",
    files=(
        ModelFile("diffusers", "Wan2.2-I2V-A14B Diffusers folder: VAE, umT5-XXL, tokenizer, scheduler, "
                  "transformer/ + transformer_2/ configs", path=f"{_HOME}/wan22/Wan2.2-I2V-A14B-Diffusers",
                  env="SULPHUR_WAN_A14B", repo="Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
        ModelFile("expert_high", "high-noise expert, GGUF Q4_K_M",
                  path=f"{_HOME}/wan22/Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", env="SULPHUR_WAN_A14B_HIGH",
                  repo="QuantStack/Wan2.2-I2V-A14B-GGUF", filename="HighNoise/Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"),
        ModelFile("expert_low", "low-noise expert, GGUF Q4_K_M",
                  path=f"{_HOME}/wan22/Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf", env="SULPHUR_WAN_A14B_LOW",
                  repo="QuantStack/Wan2.2-I2V-A14B-GGUF", filename="LowNoise/Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf"),
    ) + family.real_support_files(_HOME),
    draft_size=(640, 352), refine_size=(640, 352), steps=40, guidance_scale=3.5,
    frame_multiple=4, size_multiple=16, audio=False,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "max_sequence_length": 512, "needs_anchor": True, "native_size": (1280, 720), "native_frames": 81,
           "native_fps": 16},
))


# --------------------------------------------------------------------------- the family


class Wan(family.Family):
    name = "wan"
    i2v_class = "WanImageToVideoPipeline"
    t2v_class = "WanPipeline"
    text_encoder_class = "UMT5EncoderModel"
    denoisers = ("transformer", "transformer_2")

    def load_pipeline(self, preset: Preset, mode: str, dtype: torch.dtype) -> Any:
        if mode == "t2v" and preset.extra.get("needs_anchor"):
            raise ValueError(f"{preset.name} is image-to-video only: give the first segment an anchor")
        return super().load_pipeline(preset, mode, dtype)

    def extra_components(self, preset: Preset, mode: str, dtype: torch.dtype) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if mode == "i2v":
            extra.update(image_encoder=None, image_processor=None)  # Wan2.2 has no CLIP image branch
        if _is_a14b(preset):
            extra.update(transformer=load_expert(preset, "expert_high", "transformer", dtype),
                         transformer_2=load_expert(preset, "expert_low", "transformer_2", dtype))
        else:
            extra.update(transformer_2=None, expand_timesteps=True)
        return extra

    def encode(self, pipe: Any, prompt: str, negative: str, cfg: bool, max_len: int,
               dtype: torch.dtype) -> dict[str, Any]:
        # diffusers' Wan pipelines clean prompts with ftfy and fail with a NameError without it.
        if importlib.util.find_spec("ftfy") is None:
            raise RuntimeError("Wan prompts need the ftfy package (pip install ftfy)")
        return super().encode(pipe, prompt, negative, cfg, max_len, dtype)

    def call_kwargs(self, preset: Preset, mode: str, **kw: Any) -> dict[str, Any]:
        out = super().call_kwargs(preset, mode, **kw)
        if _is_a14b(preset):
            out["guidance_scale_2"] = kw["guidance"]
        return out


def _is_a14b(preset: Preset) -> bool:
    return any(f.role == "expert_high" for f in preset.files)


def load_expert(preset: Preset, role: str, subfolder: str, dtype: torch.dtype) -> Any:
    """One A14B expert from GGUF, against the Diffusers repo's config for that expert."""
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel

    return WanTransformer3DModel.from_single_file(
        str(family.resolve(preset, role)), config=str(family.resolve(preset, "diffusers")), subfolder=subfolder,
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), dtype=dtype, local_files_only=True)


FAMILY = Wan()
