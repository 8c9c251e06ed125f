"""Draft: the LTX-2 first pass, video + audio together, at the draft size.

Text-to-video when the segment has no anchor, image-to-video from ``job.anchor``
(the previous segment's last frame or a user image) otherwise; LTX-2's condition
pipeline when other frames are conditioned too (``keyframes``; a retake's kept frames,
pipeline/stages/retake.py), with the anchor as the condition on frame 0. The pipeline returns
latents (``output_type="latent"``); this stage decodes them itself so it can keep both
the latents (for refine) and the frames/waveform (for preview, anchors and audio).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.models import ltx2, ltx2_audio, user_loras
from pipeline.models.ltx2 import model_identity
from pipeline.models.prefetch import prefetch, spare_memory
from pipeline.models.sigmas import draft_sigmas
from pipeline.project.files import file_digest
from pipeline.project.keyframes import keyframe_params
from pipeline.stages.base import SegmentJob, Stage, StageContext
from pipeline.stages.conditions import TEMPORAL_RATIO, keyframe_conditions
from pipeline.stages.encode import repeats_anchor
from pipeline.stages.frame_files import SaveInBackground
from pipeline.stages.latent_preview import LatentPreviewer, latent_grid
from pipeline.stages.phase_peaks import PhasePeaks
from pipeline.stages.prompt_embeds import prompt_embeds
from pipeline.wire.protocol import Log

if TYPE_CHECKING:
    from pipeline.models.ltx2 import PromptEmbeds
    from pipeline.stages.base import Artifact

# Deferred imports: torch, diffusers, safetensors, pipeline.memory.cuda_graphs (torch) — the runner reads every
#   stage's cache key without them; they load only when the stage runs

#: Adapter name of the distilled LoRA inside the held transformer.
LORA_ADAPTER = "distilled"


def _latent_tokens(pipe: Any, job: SegmentJob) -> int:
    """Video latent tokens of the draft (frames × height × width after VAE compression), as LTXVScheduler counts them."""
    w, h = job.draft_size
    frames = (job.frames - 1) // pipe.vae_temporal_compression_ratio + 1
    ratio = pipe.vae_spatial_compression_ratio
    return frames * (h // ratio) * (w // ratio)


def _steps(job: SegmentJob) -> int:
    """Denoising steps: a fixed published array sets its own count; otherwise the job's."""
    schedule = job.preset.extra.get("draft_schedule")
    if schedule and schedule[0] == "fixed":
        return len(draft_sigmas(schedule, job.steps, 0) or ())
    return job.steps


class DraftStage(Stage):
    name = "draft"
    version = 2
    inputs = ()

    def params(self, job: SegmentJob) -> dict[str, Any]:
        w, h = job.draft_size
        return {
            "prompt": job.prompt,
            "anchor": job.anchor_digest if job.anchor is not None else "",
            "seed": job.seed,
            "frames": job.frames,
            "size": [w, h],
            "steps": job.steps,
            "schedule": list(job.preset.extra.get("draft_schedule") or ()),
            "lora_strength": job.lora_strength,
            "guidance_scale": job.preset.guidance_scale,
            "fps": job.fps,
            "audio": job.audio,
            "model": model_identity(job.preset),
            **self.condition_params(job),
            **shot_control_params(job),
        }

    def condition_params(self, job: SegmentJob) -> dict[str, Any]:
        """Keyframes reach the key only when a shot has them, so every other key stays as it was."""
        if not job.segment.keyframes:
            return {}
        return {"keyframes": keyframe_params(job.segment.keyframes, job.frames, job.storyboard.resolve)}

    def conditions(self, job: SegmentJob, inputs: dict[str, Artifact], ratio: int) -> list[Any]:
        """Frame conditions for diffusers' LTX2ConditionPipeline; none: the T2V / I2V pipelines as before."""
        return keyframe_conditions(job, ratio)

    def seed(self, job: SegmentJob) -> int:
        return int(job.seed)

    def total_steps(self, job: SegmentJob) -> int:
        return _steps(job)

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        import torch
        from safetensors.torch import save_file

        preset, plan = job.preset, ctx.plan
        w, h = job.draft_size
        ctx.progress(self.name, 0, _steps(job))
        ltx2.evict_for_plan(ctx.models, preset, plan)
        ltx2.park_for_plan(ctx.models, preset, plan)

        # 1. Prompt → embeddings, the draft's weights read ahead meanwhile; the encoder is evicted before they load.
        peaks = PhasePeaks(self.name, plan.device)
        prompt = text_pass(ctx, job)
        peaks.mark("text")

        # 2. Pipeline from held components, distilled LoRA weighted for this segment; the
        #    condition pipeline when frames other than the anchor are conditioned (keyframes, retake).
        conditions = self.conditions(job, inputs, TEMPORAL_RATIO)
        i2v = job.anchor is not None or any(c.index == 0 for c in conditions)
        pipe = assemble(ctx, self.name, preset, image_to_video=i2v, conditions=bool(conditions))
        assert pipe.vae_temporal_compression_ratio == TEMPORAL_RATIO  # the conditions' latent indices
        ltx2.set_lora_strength(pipe.transformer, job.lora_strength, LORA_ADAPTER,
                               connectors=pipe.connectors)
        track = given_audio(pipe, job)  # an audio-driven shot's sound, encoded (its own LoRAs join in step 3)
        generator = torch.Generator(device="cpu").manual_seed(self.seed(job))

        previewer = LatentPreviewer(*latent_grid(pipe, job.frames, w, h))

        def on_step(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if i == 0:
                peaks.mark("step 1")
            ctx.progress(self.name, i + 1, _steps(job))
            ctx.latent_preview(previewer, self.name, i + 1, kwargs.get("latents"))
            return kwargs

        extra: dict[str, Any] = {}
        if conditions:
            extra["conditions"] = conditions
        elif i2v:
            extra["image"] = ltx2.fit_image(job.anchor, (w, h))
            if "image_crf" in preset.extra:  # diffusers picks the CRF from a text encoder these pipelines lack
                extra["image_crf"] = int(preset.extra["image_crf"])

        # 3. Denoise to latents on the preset's published schedule, used as given (no dynamic shift).
        sigmas = draft_sigmas(preset.extra.get("draft_schedule"), job.steps, _latent_tokens(pipe, job))
        if sigmas is not None:
            from diffusers import FlowMatchEulerDiscreteScheduler

            pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
                pipe.scheduler.config, use_dynamic_shifting=False, shift_terminal=None)
            extra["sigmas"] = sigmas
        with torch.no_grad(), shot_controls(pipe, job, track, device=plan.device):
            peaks.mark("ready")
            video_latents, audio_latents = denoise(
                ctx, self.name, pipe, previewer, prompt_embeds=prompt.embeds, prompt_attention_mask=prompt.mask,
                width=w, height=h, num_frames=job.frames, frame_rate=float(job.fps),
                num_inference_steps=_steps(job), generator=generator, output_type="latent",
                return_dict=False, callback_on_step_end=on_step, **ltx2.guidance_kwargs(preset), **extra)
        if track is not None:
            audio_latents = track.latents  # the given sound, as it conditioned the video
        peaks.mark("denoise")

        # 4. Decode frames (uint8 on the device); they are written while the latents are kept for
        #    refine and the waveform is decoded.
        frames = ltx2.decode_video(pipe, video_latents, generator)
        peaks.mark("decode")
        with SaveInBackground(out / "frames.npy", frames):
            tensors = {"video": video_latents.detach().float().cpu().contiguous(),
                       # (refine reads the prompt's embeddings from their own cache: 0.8 GB each at full size)
                       "audio": audio_latents.detach().float().cpu().contiguous()}
            save_file(tensors, str(out / "latents.safetensors"))
            sample_rate = int(pipe.vocoder.config.output_sampling_rate) if track is None else track.rate
            if job.audio:
                wave = ltx2.decode_audio(pipe, audio_latents) if track is None else track.wave
                np.save(out / "audio.npy", wave)
            pipe.maybe_free_model_hooks()
        peaks.mark("audio")
        peaks.emit(ctx.emit)
        return {"sample_rate": sample_rate, "frames": int(frames.shape[0]), "size": [w, h], "image_to_video": i2v,
                **({"audio_driven": True} if track is not None else {})}


def text_pass(ctx: StageContext, job: SegmentJob) -> PromptEmbeds:
    """The prompt's embeddings, while the kernel reads the draft's weights not yet held into the page
    cache (issue 20 goal 3: a cold start otherwise reads them only after the text pass). The reads
    start once the encoder is loaded, so they take the disk while it computes (not for an encoder
    that reads its layers from disk as it computes), and only when the files fit in the memory
    spare then (else they would evict each other before the load). A failed or cancelled pass
    stops them; no error of theirs reaches the render."""
    stop = threading.Event()

    def start() -> None:
        if ctx.plan.options.get("text_encoder") == "disk":
            return
        try:
            ahead = prefetch(ltx2.draft_files(ctx.models, job.preset), stop=stop,
                             limit_bytes=spare_memory(ctx.plan.host_bytes))
            if ahead.files:
                ctx.emit(Log(job_id=ctx.job_id, level="debug", message=ahead.describe()))
        except Exception:  # noqa: BLE001 - a read ahead is a hint: the loads read the files anyway
            pass

    try:
        return prompt_embeds(ctx, job, on_encoder_loaded=start)
    except BaseException:
        stop.set()
        raise


def assemble(ctx: StageContext, stage: str, preset: Any, *, image_to_video: bool, conditions: bool) -> Any:
    """The stage's LTX-2 pipeline (:func:`ltx2.assemble`), and a line on what loading and placing each
    component cost, when anything was loaded: where a cold start's seconds after the text pass went."""
    timings: ltx2.Timings = {}
    pipe = ltx2.assemble(ctx.models, preset, ctx.plan,
                         image_to_video=image_to_video, conditions=conditions, timings=timings)
    say_loaded(ctx, stage, timings)
    return pipe


def say_loaded(ctx: StageContext, stage: str, timings: ltx2.Timings) -> None:
    """``<stage>: loaded transformer 6.6+5.8 s, vae held+0.5 s`` (debug), when anything was loaded."""
    if any(load is not None for load, _ in timings.values()):
        ctx.emit(Log(job_id=ctx.job_id, level="debug", message=f"{stage}: loaded {ltx2.describe_timings(timings)}"))


def denoise(ctx: StageContext, stage: str, pipe: Any, previewer: LatentPreviewer, **call: Any) -> Any:
    """``pipe(**call)`` with the transformer's steps replayed as a CUDA graph where the plan allows
    (pipeline/memory/cuda_graphs.py; the graph's memory is released on return, before a decode),
    then the last latent preview and the stage's line on how the steps ran: a recording refused
    is a warning (the steps ran, slower); graphs the plan allowed but the module cannot take
    (offload hooks) a debug line."""
    from pipeline.memory.cuda_graphs import graphed_steps

    with graphed_steps(pipe.transformer, ctx.plan) as report:
        out = pipe(**call)
    ctx.latent_preview(previewer, stage, None)
    if report is not None:
        ctx.emit(Log(job_id=ctx.job_id, level="warning" if report.failure else "debug",
                     message=f"{stage}: {report.describe()}"))
    return out


@dataclass
class GivenAudio:
    """An audio-driven shot's sound: the samples the film keeps and the latents the video follows."""

    wave: np.ndarray          # (2, n) float32 at ``rate``, from the shot's first frame
    rate: int
    latents: Any              # [1, C, L, M] denormalized, as the pipeline returns audio latents


def shot_control_params(job: SegmentJob) -> dict[str, Any]:
    """What the shot's own LoRAs and given sound add to a draft or refine key (nothing when unused,
    so a storyboard without them keeps its keys)."""

    out: dict[str, Any] = {}
    if job.segment.loras:
        out["loras"] = user_loras.key_params(job.storyboard, job.segment)
    if job.segment.audio is not None:
        track = job.segment.audio
        path = job.storyboard.resolve(track.path)
        out["audio_track"] = [file_digest(path) if path.is_file() else f"missing:{track.path}", track.start,
                              repeats_anchor(job.index, job.segment)]  # chained: the track starts at frame 1
    return out


def given_audio(pipe: Any, job: SegmentJob) -> GivenAudio | None:
    """The shot's ``audio`` track, read and encoded; None when the shot makes its own sound.

    A chained shot's frame 0 repeats the previous shot's last frame and the film leaves it
    out, so the track starts at frame 1: the sound begins exactly where the shot appears."""

    track = job.segment.audio
    if track is None:
        return None
    lead = 1 if repeats_anchor(job.index, job.segment) else 0

    def samples(rate: int) -> int:
        return round(job.frames * rate / job.fps) - round(lead * rate / job.fps)

    wave, rate = ltx2_audio.read_track(job.storyboard.resolve(track.path), track.start, samples)
    wave = np.pad(wave, ((0, 0), (round(lead * rate / job.fps), 0)))
    latents = ltx2_audio.encode(pipe, wave, rate, ltx2_audio.latent_frames(pipe, job.frames, job.fps))
    return GivenAudio(wave=wave, rate=rate, latents=latents)


@contextmanager
def shot_controls(pipe: Any, job: SegmentJob, track: GivenAudio | None,
                  audio_latents: Any = None, device: str = "cpu") -> Iterator[None]:
    """The shot's own LoRAs applied (their layers on ``device``), and its given sound held fixed,
    for one denoise."""

    with ExitStack() as stack:
        if job.segment.loras:
            stack.enter_context(user_loras.applied(pipe, user_loras.resolve(job.storyboard, job.segment),
                                                   job.lora_strength, LORA_ADAPTER, device))
        fixed = track.latents if track is not None else audio_latents
        if fixed is not None:
            stack.enter_context(ltx2_audio.held_fixed(pipe.transformer, ltx2_audio.packed(pipe, fixed)))
        yield
