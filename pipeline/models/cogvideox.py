"""CogVideoX-5B-I2V: the smoothest long clips of the brief's comparison, and the slowest.

Image-to-video only, at exactly 720×480 (its learned positional embeddings fix the
size), 49 frames at 8 fps natively. Frames are 8k+1: the VAE decodes an odd number of
latent frames (13 → 49) as 1 + 4 per latent, an even number as 4 per latent. On 12 GB
it needs sequential offload + VAE tiling and takes about an hour a clip (seed), so it is
here for quality, not speed.

The tiny twin keeps the structure: 3D-VAE 8× space / 4× time, learned positional
embeddings sized for the twin's own draft size, RoPE, T5 text encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.models import family
from pipeline.models.registry import ModelFile, Preset, register, sulphur_home

# Deferred imports: torch, diffusers — the preset is read by the CLI and storyboard checks without them; they load
#   with the model

BUILDER_VERSION = 1
FOLDER = f"tiny-cogvideox-v{BUILDER_VERSION}"
TINY_SIZE = (64, 32)      # draft (width, height); the learned positional embeddings are made for it
TINY_TEXT_LEN = 16

TRANSFORMER: dict[str, Any] = {
    # heads × head dim = 32 = the tiny T5's width; head dim 16 for the 3D RoPE split.
    "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 8, "out_channels": 4, "time_embed_dim": 2,
    "text_embed_dim": 32, "num_layers": 1, "sample_width": TINY_SIZE[0] // 8, "sample_height": TINY_SIZE[1] // 8,
    "sample_frames": 9, "patch_size": 2, "temporal_compression_ratio": 4, "max_text_seq_length": TINY_TEXT_LEN,
    "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": True,
}
VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["CogVideoXDownBlock3D"] * 4,
    "up_block_types": ["CogVideoXUpBlock3D"] * 4, "block_out_channels": [8, 8, 8, 8], "latent_channels": 4,
    "layers_per_block": 1, "norm_num_groups": 2, "temporal_compression_ratio": 4,
}


def _digest() -> str:
    return family.config_digest({"v": BUILDER_VERSION, "transformer": TRANSFORMER, "vae": VAE,
                                 "words": family.WORDS})


def build_tiny() -> Path:
    return family.build_once(family.tiny_root(FOLDER), _build, _digest())


def _build(root: Path) -> None:

    import torch
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )

    d = root / "diffusers"
    family.save_t5(d, "t5", 32, seed=0)
    torch.manual_seed(1)
    transformer = CogVideoXTransformer3DModel(**TRANSFORMER)
    torch.manual_seed(2)
    vae = AutoencoderKLCogVideoX(**VAE)
    CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                  scheduler=CogVideoXDDIMScheduler()).save_pretrained(d)
    family.patch_model_index(d, text_encoder=["transformers", "T5EncoderModel"])
    family.build_shared_tiny_parts(root)


_HOME = str(sulphur_home())

TINY = register(Preset(
    name="tiny-cogvideox",
    family="cogvideox",
    description="Random-weight CogVideoX-5B-I2V twin: image-to-video only, fixed size, no audio.",
    files=family.tiny_files(FOLDER, (
        ModelFile("diffusers", "CogVideoX twin: transformer, VAE, T5, tokenizer, scheduler", path="diffusers"),
    )),
    draft_size=TINY_SIZE, refine_size=TINY_SIZE, steps=2, guidance_scale=6.0,
    frame_multiple=8, size_multiple=16, audio=False, builder=build_tiny,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "recipe": "cogvideox-5b-i2v", "needs_anchor": True, "fixed_size": TINY_SIZE,
           "max_sequence_length": TINY_TEXT_LEN, "tiny_digest": _digest(), "native_size": TINY_SIZE,
           "native_frames": 9, "dynamic_cfg": False},
))

REAL = register(Preset(
    name="cogvideox-5b-i2v",
    family="cogvideox",
    description="CogVideoX-5B-I2V: 720×480 only, 49 frames, smooth; ~1 h a clip on 12 GB. Image-to-video only, "
                "no audio.",
    files=(
        ModelFile("diffusers", "CogVideoX-5b-I2V Diffusers folder (transformer, VAE, T5-XXL, tokenizer)",
                  path=f"{_HOME}/cogvideox/CogVideoX-5b-I2V", env="SULPHUR_COGVIDEOX", repo="THUDM/CogVideoX-5b-I2V"),
    ) + family.real_support_files(_HOME),
    draft_size=(720, 480), refine_size=(720, 480), steps=50, guidance_scale=6.0,
    frame_multiple=8, size_multiple=16, audio=False,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "needs_anchor": True, "fixed_size": (720, 480), "max_sequence_length": 226, "native_size": (720, 480),
           "native_frames": 49, "native_fps": 8, "dynamic_cfg": True},
))


class CogVideoX(family.Family):
    name = "cogvideox"
    i2v_class = "CogVideoXImageToVideoPipeline"
    t2v_class = None
    text_encoder_class = "T5EncoderModel"
    denoisers = ("transformer",)

    def call_kwargs(self, preset: Preset, mode: str, *, width: int, height: int, frames: int, fps: int,
                    steps: int, guidance: float) -> dict[str, Any]:
        fixed = preset.extra.get("fixed_size")
        if fixed and (width, height) != tuple(fixed):
            raise ValueError(f"{preset.name} generates only at {fixed[0]}×{fixed[1]} (learned positional "
                             f"embeddings); set draft_size = [{fixed[0]}, {fixed[1]}] or leave it unset")
        return {"width": width, "height": height, "num_frames": frames, "num_inference_steps": steps,
                "guidance_scale": guidance, "use_dynamic_cfg": bool(preset.extra.get("dynamic_cfg", False)),
                "max_sequence_length": int(preset.extra.get("max_sequence_length", 226))}


FAMILY = CogVideoX()
