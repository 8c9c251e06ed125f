"""LTX-Video 0.9.x (2B): fast, prompt-guided text- or image-to-video, no audio.

The brief's pick for quick, directed extensions (768×512, ~3 min a clip on 12 GB). Its
T5-XXL encoder is the same 11 GB trap as Wan's, so the prompt is encoded on the CPU and
the transformer runs under sequential offload (see recipes.py). Needs ``sentencepiece``
for the real T5 tokenizer.

The tiny twin keeps the real compression (VAE 8× in space and time, so frames are 8k+1
and sizes multiples of 32, which the pipeline checks) with a one-layer transformer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models import family
from pipeline.models.registry import ModelFile, Preset, register, sulphur_home

if TYPE_CHECKING:
    import torch

# Deferred imports: torch, diffusers — the presets are read without them; they load with the model

BUILDER_VERSION = 1
FOLDER = f"tiny-ltxv-v{BUILDER_VERSION}"

TRANSFORMER: dict[str, Any] = {
    "in_channels": 8, "out_channels": 8, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 2,
    "attention_head_dim": 16, "cross_attention_dim": 32, "num_layers": 1, "caption_channels": 32,
}
VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 8, "block_out_channels": [8, 8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8, 8], "layers_per_block": [1, 1, 1, 1, 1],
    "decoder_layers_per_block": [1, 1, 1, 1, 1], "spatio_temporal_scaling": [True, True, True, False],
    "decoder_spatio_temporal_scaling": [True, True, True, False], "decoder_inject_noise": [False] * 5,
    "upsample_residual": [False] * 4, "upsample_factor": [1, 1, 1, 1], "timestep_conditioning": False,
    "patch_size": 1, "patch_size_t": 1, "encoder_causal": True, "decoder_causal": False,
}


def _digest() -> str:
    return family.config_digest({"v": BUILDER_VERSION, "transformer": TRANSFORMER, "vae": VAE,
                                 "words": family.WORDS})


def build_tiny() -> Path:
    return family.build_once(family.tiny_root(FOLDER), _build, _digest())


def _build(root: Path) -> None:

    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    d = root / "diffusers"
    family.save_t5(d, "t5", 32, seed=0)
    torch.manual_seed(1)
    transformer = LTXVideoTransformer3DModel(**TRANSFORMER)
    torch.manual_seed(2)
    vae = AutoencoderKLLTXVideo(**VAE)
    LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                transformer=transformer).save_pretrained(d)
    family.patch_model_index(d, text_encoder=["transformers", "T5EncoderModel"])
    family.build_shared_tiny_parts(root)


_HOME = str(sulphur_home())

TINY = register(Preset(
    name="tiny-ltxv",
    family="ltxv",
    description="Random-weight LTX-Video 0.9 twin: text- or image-to-video, no audio.",
    files=family.tiny_files(FOLDER, (
        ModelFile("diffusers", "LTX-Video twin: transformer, VAE, T5, tokenizer, scheduler", path="diffusers"),
    )),
    draft_size=(64, 32), refine_size=(64, 32), steps=2, guidance_scale=3.0,
    frame_multiple=8, size_multiple=32, audio=False, builder=build_tiny,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "recipe": "ltxv-0.9", "max_sequence_length": 16, "tiny_digest": _digest(), "native_size": (64, 32),
           "native_frames": 9, "decode_timestep": 0.0, "decode_noise_scale": None},
))

REAL = register(Preset(
    name="ltxv-0.9",
    family="ltxv",
    description="LTX-Video 0.9.5 2B: fast, directed motion at 768×512 (best for short extensions). No audio.",
    files=(
        ModelFile("diffusers", "LTX-Video 0.9.5 Diffusers folder (transformer, VAE, T5-XXL, tokenizer)",
                  path=f"{_HOME}/ltxv/LTX-Video-0.9.5", env="SULPHUR_LTXV", repo="Lightricks/LTX-Video-0.9.5"),
    ) + family.real_support_files(_HOME),
    draft_size=(768, 512), refine_size=(768, 512), steps=40, guidance_scale=3.0,
    frame_multiple=8, size_multiple=32, audio=False,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "max_sequence_length": 128, "native_size": (768, 512), "native_frames": 121, "native_fps": 24,
           "decode_timestep": 0.05, "decode_noise_scale": 0.025},
))


class LTXVideo(family.Family):
    name = "ltxv"
    i2v_class = "LTXImageToVideoPipeline"
    t2v_class = "LTXPipeline"
    text_encoder_class = "T5EncoderModel"
    denoisers = ("transformer",)

    def encode(self, pipe: Any, prompt: str, negative: str, cfg: bool, max_len: int,
               dtype: torch.dtype) -> dict[str, Any]:
        import torch

        pos, pos_mask, neg, neg_mask = pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=cfg, max_sequence_length=max_len,
            device=torch.device("cpu"), dtype=torch.float32)
        out = {"prompt_embeds": pos.to(dtype), "prompt_attention_mask": pos_mask}
        if cfg:
            out.update(negative_prompt_embeds=neg.to(dtype), negative_prompt_attention_mask=neg_mask)
        return out

    def call_kwargs(self, preset: Preset, mode: str, *, width: int, height: int, frames: int, fps: int,
                    steps: int, guidance: float) -> dict[str, Any]:
        return {"width": width, "height": height, "num_frames": frames, "frame_rate": fps,
                "num_inference_steps": steps, "guidance_scale": guidance,
                "decode_timestep": float(preset.extra.get("decode_timestep", 0.0)),
                "decode_noise_scale": preset.extra.get("decode_noise_scale"),
                "max_sequence_length": int(preset.extra.get("max_sequence_length", 128))}


FAMILY = LTXVideo()
