"""Draft for the I2V families (Wan2.2, SVD, LTX-Video 0.9, CogVideoX): video only, no audio.

Same artifact contract as the LTX-2 draft: ``frames.npy`` uint8 (T, H, W, 3) at
``job.draft_size``; no ``audio.npy`` (the film gets silence for these segments). What
differs per model lives in the family object (``pipeline/models/<family>.py``) and the
memory recipe (``pipeline/memory/recipes.py``); this stage runs them the same way:

1. Encode the prompt on the CPU in fp32 with the family's T5 / umT5, cast the
   embeddings to the run dtype, evict the encoder (the brief's fix for the 11 GB
   encoder that OOMs a 12 GB card before the video model even starts).
2. Load (or reuse from ``ctx.models``) the pipeline without its text encoder, placed
   by the recipe: model / leaf-level group offload with streams / sequential, VAE
   tiling, UNet forward chunking.
3. Run image-to-video from ``job.anchor`` (text-to-video when there is none and the
   family can), reporting every denoising step.
4. Write the frames.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.memory import recipes
from pipeline.models.family import apply_recipe, identity, torch_dtype
from pipeline.stages.base import SegmentJob, Stage, StageContext

if TYPE_CHECKING:
    from pipeline.models.family import Family
    from pipeline.models.registry import Preset
    from pipeline.stages.base import Artifact

# Deferred imports: torch, diffusers, PIL — the runner reads the stage's cache key without them; they load when it
#   runs

#: family name → module that defines ``FAMILY`` (and registers the presets).
FAMILY_MODULES = {
    "wan": "pipeline.models.wan",
    "svd": "pipeline.models.svd",
    "ltxv": "pipeline.models.ltxv",
    "cogvideox": "pipeline.models.cogvideox",
}
_KEY_PREFIX = "family-pipe:"


def family_of(preset: Preset) -> Family:
    try:
        module = FAMILY_MODULES[preset.family]
    except KeyError:
        raise ValueError(f"preset {preset.name!r}: family {preset.family!r} has no family draft") from None
    return importlib.import_module(module).FAMILY


def _roles(preset: Preset) -> list[str]:
    return [f.role for f in preset.files if f.role not in ("enhancer", "upscaler")]


class FamilyDraftStage(Stage):
    name = "draft"
    version = 1
    inputs = ()

    def params(self, job: SegmentJob) -> dict[str, Any]:
        preset = job.preset
        return {
            "preset": preset.name,
            "model": identity(preset, _roles(preset)),
            "prompt": job.prompt if preset.takes_prompt else "",
            "negative": str(preset.extra.get("negative_prompt", "")) if preset.takes_prompt else "",
            "seed": job.seed,
            "frames": job.frames,
            "size": list(job.draft_size),
            "steps": job.steps,
            "guidance": preset.guidance_scale,
            "fps": job.fps,
            "anchor": job.anchor_digest,
        }

    def total_steps(self, job: SegmentJob) -> int:
        return job.steps

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        import torch
        from PIL import Image


        preset = job.preset
        fam = family_of(preset)
        recipe = recipes.resolve(preset, ctx.plan)
        dtype = torch_dtype(recipe.dtype)
        mode = "i2v" if job.anchor is not None else "t2v"
        if mode == "t2v" and (fam.t2v_class is None or preset.extra.get("needs_anchor")):
            raise ValueError(f"{preset.name} generates only from an image: give segment '{job.segment.id}' "
                             "an anchor (image, video, or the previous segment)")
        width, height = job.draft_size
        guidance = float(preset.guidance_scale)

        # 1. The prompt, on the CPU in fp32; the encoder is gone before the video model loads.
        call: dict[str, Any] = {}
        if fam.text_encoder_class is not None and preset.takes_prompt:
            call.update(_encode_prompt(ctx, fam, preset, mode, job.prompt, guidance, dtype))

        # 2. The pipeline, reused across segments while preset, mode and recipe stay the same.
        key = f"{_KEY_PREFIX}{preset.name}:{mode}:{recipe.name}:{ctx.plan.device}"
        stale = [n for n in ctx.models.names() if n.startswith(_KEY_PREFIX) and n != key]
        if stale:
            ctx.models.make_room(drop=stale, reason="another pipeline of this family")

        def load() -> Any:
            pipe = fam.load_pipeline(preset, mode, dtype)
            apply_recipe(pipe, recipe, ctx.plan.device, fam.denoisers)
            pipe.set_progress_bar_config(disable=True)
            return pipe

        pipe = ctx.models.get(key, load)
        # The embeddings were made on the CPU; the denoiser wants them where it computes
        # (the offload hooks report that as the execution device).
        device = pipe._execution_device
        call = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in call.items()}

        # 3. Denoise, one progress event per step (a cancel raises out of the callback).
        def on_step(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            ctx.progress(self.name, i + 1, job.steps)
            return kwargs

        call.update(fam.call_kwargs(preset, mode, width=width, height=height, frames=job.frames, fps=job.fps,
                                    steps=job.steps, guidance=guidance))
        if fam.decode_chunks and recipe.decode_chunk_size:
            call["decode_chunk_size"] = recipe.decode_chunk_size
        if mode == "i2v":
            call["image"] = Image.fromarray(np.ascontiguousarray(job.anchor))
        ctx.progress(self.name, 0, job.steps)
        with torch.inference_mode():
            result = pipe(**call, generator=torch.Generator("cpu").manual_seed(job.seed), output_type="np",
                          callback_on_step_end=on_step)

        # 4. Frames as uint8 (T, H, W, 3) at the draft size.
        video = np.asarray(result.frames[0], dtype=np.float32)
        frames = (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if frames.shape[1:3] != (height, width):
            raise RuntimeError(f"{preset.name} returned {frames.shape[2]}×{frames.shape[1]} frames, "
                               f"expected {width}×{height}")
        np.save(out / "frames.npy", frames)
        return {"frames": int(len(frames)), "size": [width, height], "mode": mode, "recipe": recipe.name,
                "preset": preset.name}


def _encode_prompt(ctx: StageContext, fam: Family, preset: Preset, mode: str, prompt: str, guidance: float,
                   dtype: Any) -> dict[str, Any]:
    """Prompt embeddings as pipeline arguments; the text encoder is evicted before returning."""
    import diffusers
    import torch

    key = f"family-text:{preset.name}"
    tokenizer, encoder = ctx.models.get(key, lambda: fam.load_text_encoder(preset))
    try:
        # A pipeline object holding only tokenizer + encoder, so the family's own
        # encode_prompt (cleaning, padding, masks, CFG negatives) runs unchanged.
        cls = getattr(diffusers, fam.i2v_class if mode == "i2v" else str(fam.t2v_class))
        blank = {name: None for name, p in inspect.signature(cls.__init__).parameters.items()
                 if name != "self" and p.default is inspect.Parameter.empty}
        text_pipe = cls(**dict(blank, tokenizer=tokenizer, text_encoder=encoder))
        max_len = int(preset.extra.get("max_sequence_length", 226))
        with torch.inference_mode():
            return fam.encode(text_pipe, prompt, str(preset.extra.get("negative_prompt", "")),
                              fam.uses_cfg(guidance), max_len, dtype)
    finally:
        ctx.models.make_room(drop=[key], reason="the prompt is encoded")
