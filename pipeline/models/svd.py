"""Stable Video Diffusion img2vid-xt: image-to-video with no text prompt.

SVD conditions on a CLIP image embedding of the anchor frame and on motion / fps
"micro-conditions" only, so its motion is ambient (drift, breeze) rather than directed;
the preset says ``takes_prompt=False`` and the UI shows that the prompt is ignored.
Memory (the brief): model offload + ``unet.enable_forward_chunking()`` at 1024×576, decoding a
few frames at a time.

The tiny twin keeps the real layout: spatio-temporal UNet, temporal-decoder VAE with
8× spatial compression, CLIP vision tower with projection, Euler v-prediction (Karras)
scheduler.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models import family
from pipeline.models.registry import ModelFile, Preset, register, sulphur_home

if TYPE_CHECKING:
    import torch

# Deferred imports: torch, diffusers, transformers — the presets are read without them; they load with the model

BUILDER_VERSION = 1
FOLDER = f"tiny-svd-v{BUILDER_VERSION}"

UNET: dict[str, Any] = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 32, "in_channels": 8,
    "out_channels": 4, "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"], "cross_attention_dim": 32,
    "num_attention_heads": [2, 4], "projection_class_embeddings_input_dim": 96, "addition_time_embed_dim": 32,
}
VAE: dict[str, Any] = {
    # Four blocks → 8× spatial like the real VAE (GroupNorm wants multiples of 32 channels).
    "block_out_channels": [32, 32, 32, 32], "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "latent_channels": 4, "layers_per_block": 1,
}
IMAGE_ENCODER: dict[str, Any] = {
    # The pipeline resizes the anchor to 224² before CLIP, as for the real ViT-H/14.
    "hidden_size": 32, "projection_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "image_size": 224, "intermediate_size": 37, "patch_size": 32,
}
SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "sigma_max": 700.0, "sigma_min": 0.002,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous", "use_karras_sigmas": True,
}


def _digest() -> str:
    return family.config_digest({"v": BUILDER_VERSION, "unet": UNET, "vae": VAE, "clip": IMAGE_ENCODER,
                                 "scheduler": SCHEDULER})


def build_tiny() -> Path:
    return family.build_once(family.tiny_root(FOLDER), _build, _digest())


def _build(root: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(**UNET)
    torch.manual_seed(1)
    vae = AutoencoderKLTemporalDecoder(**VAE)
    torch.manual_seed(2)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER)).eval()
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                        scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                        feature_extractor=CLIPImageProcessor(crop_size=224, size=224))
    pipe.save_pretrained(root / "diffusers")
    family.build_shared_tiny_parts(root)


_HOME = str(sulphur_home())
_NO_PROMPT = "No text prompt: the prompt is ignored, motion is ambient (camera drift, wind). No audio."

TINY = register(Preset(
    name="tiny-svd",
    family="svd",
    description=f"Random-weight Stable Video Diffusion twin, image-to-video only. {_NO_PROMPT}",
    files=family.tiny_files(FOLDER, (
        ModelFile("diffusers", "SVD twin: UNet, temporal VAE, CLIP vision, scheduler", path="diffusers"),
    )),
    draft_size=(64, 32), refine_size=(64, 32), steps=2, guidance_scale=2.5,
    frame_multiple=1, size_multiple=16, audio=False, takes_prompt=False, builder=build_tiny,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "recipe": "svd-xt", "needs_anchor": True, "tiny_digest": _digest(), "native_size": (64, 32),
           "native_frames": 5, "svd_fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02},
))

REAL = register(Preset(
    name="svd-xt",
    family="svd",
    description=f"Stable Video Diffusion img2vid-xt (1024×576, 25 frames), image-to-video only. {_NO_PROMPT}",
    files=(
        ModelFile("diffusers", "SVD img2vid-xt Diffusers folder (unet, vae, image_encoder, scheduler, "
                  "feature_extractor)", path=f"{_HOME}/svd/stable-video-diffusion-img2vid-xt", env="SULPHUR_SVD",
                  repo="stabilityai/stable-video-diffusion-img2vid-xt"),
    ) + family.real_support_files(_HOME),
    draft_size=(1024, 576), refine_size=(1024, 576), steps=25, guidance_scale=3.0,
    frame_multiple=1, size_multiple=64, audio=False, takes_prompt=False,
    extra={"refine_scale": 1,  # see pipeline/models/family.py
           "needs_anchor": True, "native_size": (1024, 576), "native_frames": 25, "svd_fps": 7,
           "motion_bucket_id": 127, "noise_aug_strength": 0.02},
))


class SVD(family.Family):
    name = "svd"
    decode_chunks = True
    i2v_class = "StableVideoDiffusionPipeline"
    t2v_class = None
    text_encoder_class = None
    denoisers = ("unet",)

    def load_pipeline(self, preset: Preset, mode: str, dtype: torch.dtype) -> Any:
        import diffusers

        # fp16 weights ship as the "fp16" variant in the real repo; the tiny twin has one set.
        folder = family.resolve(preset, "diffusers")
        variant = "fp16" if any(folder.glob("unet/*.fp16.safetensors")) and str(dtype).endswith("float16") else None
        return diffusers.StableVideoDiffusionPipeline.from_pretrained(str(folder), dtype=dtype, variant=variant)

    def call_kwargs(self, preset: Preset, mode: str, *, width: int, height: int, frames: int, fps: int,
                    steps: int, guidance: float) -> dict[str, Any]:
        x = preset.extra
        return {"width": width, "height": height, "num_frames": frames, "num_inference_steps": steps,
                "min_guidance_scale": 1.0, "max_guidance_scale": guidance, "fps": int(x.get("svd_fps", 7)),
                "motion_bucket_id": int(x.get("motion_bucket_id", 127)),
                "noise_aug_strength": float(x.get("noise_aug_strength", 0.02))}


FAMILY = SVD()
