"""Refine: latent ×2 upsample of the draft, then a short distilled denoise at the refine size.

Follows diffusers' LTX-2 two-stage recipe: ``LTX2LatentUpsamplePipeline`` on the
draft's (denormalized) video latents, a scheduler without dynamic shifting so the
manual sigmas are used as given, re-noising to the first sigma (``noise_scale``), and
the draft's audio latents passed along so the joint model sees both modalities.
Segments drafted from an anchor are refined with the image-to-video pipeline, whose
conditioning mask keeps the first latent frame (the upsampled anchor) clean. A shot with
``keyframes`` is refined through the condition pipeline on the same stills (and the anchor
on frame 0), read again at the refine size, as Lightricks' two-stage pipelines condition
their second stage; without keyframes nothing changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.models import ltx2
from pipeline.models.ltx2 import model_identity
from pipeline.project.keyframes import keyframe_params
from pipeline.stages.base import SegmentJob, Stage, StageContext
from pipeline.stages.conditions import TEMPORAL_RATIO, keyframe_conditions
from pipeline.stages.draft import (
    LORA_ADAPTER,
    assemble,
    denoise,
    say_loaded,
    shot_control_params,
    shot_controls,
)
from pipeline.stages.frame_files import SaveInBackground
from pipeline.stages.latent_preview import LatentPreviewer, latent_grid
from pipeline.stages.phase_peaks import PhasePeaks
from pipeline.stages.prompt_embeds import prompt_embeds

if TYPE_CHECKING:
    from pipeline.models.registry import Preset
    from pipeline.stages.base import Artifact

# Deferred imports: torch, diffusers, safetensors, PIL — the runner reads the stage's cache key without them; they
#   load when it runs


def refine_sigmas(job: SegmentJob) -> list[float]:
    """The manual sigmas as the scheduler takes them: it appends the terminal 0 itself."""
    sigmas = [float(s) for s in job.refine_sigmas]
    if len(sigmas) > 1 and sigmas[-1] == 0.0:
        sigmas = sigmas[:-1]
    return sigmas


class RefineStage(Stage):
    name = "refine"
    version = 1
    inputs = ("draft",)

    def params(self, job: SegmentJob) -> dict[str, Any]:
        return {
            "size": list(job.refine_size),
            "sigmas": [float(s) for s in job.refine_sigmas],
            "seed": job.seed,
            "lora_strength": job.lora_strength,
            "guidance_scale": job.preset.guidance_scale,
            "fps": job.fps,
            # Prompt and anchor reach refine through the draft (its key covers them).
            "model": model_identity(job.preset),
            # Keyframes condition refine too (read at its size); only shots with them carry the key.
            **({"keyframes": keyframe_params(job.segment.keyframes, job.frames, job.storyboard.resolve)}
               if job.segment.keyframes else {}),
            **shot_control_params(job),
        }

    def total_steps(self, job: SegmentJob) -> int:
        return len(refine_sigmas(job))

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler
        from safetensors.torch import load_file

        preset, plan = job.preset, ctx.plan
        sigmas = refine_sigmas(job)
        n = len(sigmas)
        ctx.progress(self.name, 0, n)
        ltx2.evict_for_plan(ctx.models, preset, plan)
        device, dtype = torch.device(plan.device), ltx2.torch_dtype(plan)
        peaks = PhasePeaks(self.name, plan.device)

        # 1. The draft's latents (and its prompt embeddings, so no second text-encoder load).
        draft = load_file(str(inputs["draft"].file("latents.safetensors")))
        if "prompt_embeds" in draft:
            embeds = draft["prompt_embeds"].to(device, dtype)
            mask = draft["prompt_attention_mask"].to(device)
        else:
            enc = prompt_embeds(ctx, job)
            embeds, mask = enc.embeds, enc.mask
        peaks.mark("inputs")

        # 2. Latent ×2 upsample (the upsampler works on denormalized latents).
        #    Keyframes (and the anchor with them) go through the condition pipeline, at the refine size.
        i2v = bool(inputs["draft"].meta.get("image_to_video", job.anchor is not None))
        pipe = assemble(ctx, self.name, preset, image_to_video=i2v, conditions=bool(job.segment.keyframes))
        video = _upsample(ctx, preset, pipe, draft["video"].to(device))
        peaks.mark("upsample")
        _, _, _, lh, lw = video.shape
        scale = pipe.vae_spatial_compression_ratio
        conditions = keyframe_conditions(job, TEMPORAL_RATIO, (lw * scale, lh * scale))
        extra = {"conditions": conditions} if conditions else {}

        # 3. Distilled refine: manual sigmas as given (no dynamic shift), re-noised to sigmas[0].
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            pipe.scheduler.config, use_dynamic_shifting=False, shift_terminal=None)
        if plan.offload == "model" and plan.device != "cpu":
            pipe.enable_model_cpu_offload(device=plan.device)  # the upsample pipeline re-hooked the VAE
        ltx2.set_lora_strength(pipe.transformer, job.lora_strength, LORA_ADAPTER,
                               connectors=pipe.connectors)
        generator = torch.Generator(device="cpu").manual_seed(int(job.seed))

        previewer = LatentPreviewer(*latent_grid(pipe, job.frames, lw * scale, lh * scale))

        def on_step(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if i == 0:
                peaks.mark("step 1")
            ctx.progress(self.name, i + 1, n)
            ctx.latent_preview(previewer, self.name, i + 1, kwargs.get("latents"))
            return kwargs

        # The shot's own LoRAs again, and an audio-driven draft's sound held fixed (not re-noised).
        # The denoise returns latents and the VAE decode below makes the frames: output_type="np"
        # would also decode (and drop) the audio, and do the float32 postprocess on the CPU.
        fixed = draft["audio"].to(device) if inputs["draft"].meta.get("audio_driven") else None
        with torch.no_grad(), shot_controls(pipe, job, None, fixed, device=plan.device):
            peaks.mark("ready")
            latents, _audio = denoise(
                ctx, self.name, pipe, previewer, prompt_embeds=embeds, prompt_attention_mask=mask, latents=video,
                audio_latents=draft["audio"].to(device), width=lw * scale, height=lh * scale,
                num_frames=job.frames, frame_rate=float(job.fps), num_inference_steps=n, sigmas=sigmas,
                noise_scale=sigmas[0], generator=generator, output_type="latent", return_dict=False,
                callback_on_step_end=on_step, **ltx2.guidance_kwargs(preset), **extra)
            del _audio, video, draft
            peaks.mark("denoise")

            # 4. Frames at the refine size (the upsampler gives exactly 2× the draft; a storyboard
            #    may ask for another refine size, which is a resize here, not a model change).
            frames = ltx2.decode_video(pipe, latents, generator)
        del latents
        peaks.mark("decode")
        peaks.emit(ctx.emit)
        w, h = job.refine_size
        if frames.shape[1:3] != (h, w):
            frames = _resize(frames, (w, h))
        with SaveInBackground(out / "frames.npy", frames):
            pipe.maybe_free_model_hooks()  # under model offload, models go back to the host meanwhile
        return {"frames": int(frames.shape[0]), "size": [w, h]}


def _upsample(ctx: StageContext, preset: Preset, pipe: Any, latents: Any) -> Any:
    """The draft's latents ×2 in space through the held upsampler. It stays held for the next
    refine: the draft's plans count it among what they hold (planner: held_*_bytes), and
    dropping it meant loading and pinning it again every segment."""
    import torch
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplePipeline

    plan = ctx.plan
    timings: ltx2.Timings = {}
    upsampler = ltx2.component(ctx.models, preset, "upsampler", plan, timings)
    say_loaded(ctx, "refine", timings)
    up_pipe = ltx2.finish_pipeline(LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler), plan)
    with torch.no_grad():
        video = up_pipe(latents=latents, output_type="latent", return_dict=False)[0]
    return video


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames])
