"""The runner: storyboard → per-segment stages → segment MP4s → final film.

Data flows one way: TOML → Storyboard → SegmentJob → stages → cached artifacts →
events. Every stage output is a content-addressed cache entry, so a re-render after an
edit (or after a crash) runs only what changed: segment k's draft depends on segment
k-1's last draft frame through ``anchor_digest``, which is how an edit propagates
downstream and nowhere else.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.memory import planner as memory
from pipeline.memory.loaded import LoadedModels
from pipeline.memory.plan import set_context_cost
from pipeline.models.registry import PRESETS, Preset
from pipeline.project import layout
from pipeline.project.media import open_media
from pipeline.project.references import check_references
from pipeline.project.storyboard import (
    Storyboard,
    atomic_write,
    load,
    segment_digest,
)
from pipeline.project.writeback import PINNED, set_enhanced_prompt
from pipeline.quality import drift, flicker
from pipeline.render.cache import Artifact, StageCache, digest, stage_key
from pipeline.render.errors import RenderError
from pipeline.render.fallback import run_down_ladder
from pipeline.render.film import CachedSegment, assemble_film
from pipeline.render.job import Overrides, RenderJob, rounded_lengths
from pipeline.render.lora_audio import check_loras
from pipeline.render.outputs import (
    OutputLock,
    atomic_copy,
    publishing,
    refuse_blocked_folders,
    sweep_temporaries,
)
from pipeline.render.overlap import Behind, LinkedCancel
from pipeline.render.usage import after_render
from pipeline.stages.base import Cancelled, SegmentJob, Stage, StageContext
from pipeline.stages.encode import EncodeStage
from pipeline.stages.enhance import EnhanceStage
from pipeline.stages.grade import GradeStage
from pipeline.stages.upscale import UpscaleStage
from pipeline.telemetry.gpu import context_bytes, process_gpu_bytes
from pipeline.wire import protocol
from pipeline.wire.protocol import Event

# Deferred imports: pipeline.stages.*, huggingface_hub, transformers — a family's stages load only for that
#   family; a fully cached render loads no model library

Emit = Callable[[Event], None]


# ----------------------------------------------------------------- test-only faults


class _Faults:
    """Fault injection read from the environment at each stage start (tests only)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    def at_stage_start(self, stage: str, cancel: threading.Event) -> None:
        self.attempts[stage] = self.attempts.get(stage, 0) + 1
        spec = os.environ.get("SULPHUR_FAULT_OOM", "")
        for item in filter(None, spec.split(",")):
            name, _, count = item.partition(":")
            if name == stage and (count == "all" or self.attempts[stage] <= int(count or 1)):
                raise _injected_oom(stage)
        spec = os.environ.get("SULPHUR_FAULT_SLOW", "")
        for item in filter(None, spec.split(",")):
            name, _, seconds = item.partition(":")
            if name == stage and cancel.wait(float(seconds or 1)):
                raise Cancelled(stage)


def _injected_oom(stage: str) -> BaseException:
    import torch  # deferred: importing the runner stays torch-free (tests only reach this)

    return torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by SULPHUR_FAULT_OOM at {stage})")


# --------------------------------------------------------------------- the runner


def _stages(preset: Preset) -> dict[str, Stage]:
    # The stage modules import torch and diffusers: loaded when a render builds its stages.

    if preset.family == "ltx2":
        from pipeline.stages.draft import DraftStage
        from pipeline.stages.refine import RefineStage
        from pipeline.stages.retake import RetakeDraftStage, RetakeStage

        draft, refine = DraftStage(), RefineStage()
        retakes: tuple[Stage, ...] = (RetakeDraftStage(), RetakeStage())  # keyframes/retake
    else:
        # I2V families (Wan2.2, SVD, LTX-Video 0.9, CogVideoX): video-only draft, and no
        # latent upsampler, so refine is an antialiased resize to refine_size.
        from pipeline.stages.family_draft import FamilyDraftStage
        from pipeline.stages.resize_refine import ResizeRefineStage

        draft, refine = FamilyDraftStage(), ResizeRefineStage()
        retakes = ()
    return {s.name: s for s in (EnhanceStage(), draft, refine, UpscaleStage(), GradeStage(), EncodeStage(),
                                *retakes)}


#: Stages planned (memory) as another: a retake's draft is a draft; its splice moves frames only.
_PLANNED_AS = {"retake-draft": "draft", "retake": "encode"}


@dataclass
class _Chain:
    """What drafting segment k+1 needs from segment k."""

    prev_last: np.ndarray | None = None  # the previous draft's last frame the film keeps: the anchor
    reference: np.ndarray | None = None


class Renderer:
    """One render of one job. Use :func:`render`; engines drive the per-segment methods."""

    def __init__(self, job: RenderJob, emit: Emit, cancel: threading.Event, job_id: str,
                 models: LoadedModels) -> None:
        self.job = job
        self._emit = emit
        self.cancel = cancel
        self.job_id = job_id
        self.models = models
        self.cache = StageCache(layout.cache_dir(job.storyboard.folder))
        self._stage_sets: dict[str, dict[str, Stage]] = {}
        self.faults = _Faults()
        self._emit_lock = threading.Lock()
        self.renders = job.storyboard.renders
        self.upscale_frames = 0  # frames this job upscales (set by preflight; decides compiling)
        self.chain = _Chain(reference=self._reference_image())

    @property
    def sb(self) -> Storyboard:
        """The storyboard as read from its file (overrides live in ``job.project``)."""
        return self.job.storyboard

    @property
    def preset(self) -> Preset:
        return self.job.preset

    @classmethod
    def create(cls, job: RenderJob, *, emit: Emit, cancel: threading.Event, job_id: str,
               models: LoadedModels) -> Renderer:
        """Refuse missing model files, build tiny ones, and hold the allocator to the budget."""
        used = job.presets
        for preset in used.values():
            missing = preset.missing()
            if missing:
                lines = "; ".join(f"{m.role}: {m.description} → {m.where()}" for m in missing)
                raise RenderError("missing_models", f"preset {preset.name} is missing {len(missing)} file(s) "
                                  f"on {socket.gethostname()}: {lines}")
        quiet_libraries()
        for preset in used.values():
            if preset.builder is not None:
                preset.builder()
            unreadable = [f"{m.role}: {why}" for m in preset.files if (why := m.unreadable())]
            if unreadable:  # a FIFO as a model file ($SULPHUR_…): loading it would wait forever
                raise RenderError("missing_models", f"preset {preset.name}: {'; '.join(unreadable)}")
        # A worker keeps models between jobs; those of presets this storyboard does not use
        # would only hold memory (a kept text encoder is 24 GB).
        names = {p.name for p in used.values()}
        stale = [n for n in models.names() if n.partition(":")[0] in PRESETS and n.partition(":")[0] not in names]
        if stale:
            models.make_room(drop=stale, reason="presets this job does not use")
        if memory.detect_device() == "cuda":
            # The plans were made for this budget: hold the allocator to it, so a plan that
            # underestimates fails with an OOM (and steps down the ladder) instead of spilling;
            # without one, lift a cap an earlier job of this worker may have set.
            from pipeline.memory.offload import enforce_vram_budget  # torch + diffusers hooks: CUDA only

            measure_context_cost()
            enforce_vram_budget(job.project.vram_budget_gb)
        return cls(job, emit, cancel, job_id, models)

    def emit(self, event: Event) -> None:
        # The local engine encodes segment k on a thread while segment k+1 drafts: one event at a time.
        with self._emit_lock:
            event.job_id = self.job_id
            self._emit(event)

    # ------------------------------------------------------------------ a job

    def preset_for(self, index: int) -> Preset:
        """The segment's own preset (``preset`` key of a [[segment]]), else the project's."""
        return self.job.preset_for(index)

    def stages_for(self, preset: Preset) -> dict[str, Stage]:
        if preset.family not in self._stage_sets:
            self._stage_sets[preset.family] = _stages(preset)
        return self._stage_sets[preset.family]

    def job_for(self, index: int) -> SegmentJob:
        return self.job.segment_job(index)

    def key_for(self, name: str, job: SegmentJob, inputs: dict[str, Artifact]) -> str:
        stage = self.stages_for(job.preset)[name]
        return stage_key(name, stage.version, stage.params(job), {k: a.key for k, a in inputs.items()})

    def frames_chain(self, job: SegmentJob) -> list[tuple[str, str]]:
        """(stage, its input stage) from the draft to the frames that get encoded."""
        chain = [("refine", "draft"), ("upscale", "refine")]
        if job.drift_guard == "anchor+output" and job.index > 0:
            chain.append(("grade", "upscale"))
        return chain

    def plans(self, stage: str, frames: int, segment: str = "", preset: Preset | None = None
              ) -> list[memory.StagePlan]:
        try:
            plans = memory.plan_ladder(_PLANNED_AS.get(stage, stage), preset or self.preset, self.job.project,
                                       frames=frames)
        except memory.PlanError as exc:
            raise RenderError("plan", str(exc), stage, segment) from None
        if stage == "upscale":
            # This job upscales upscale_frames frames with one held model: compile it if that pays.
            plans = [replace(p, options={**p.options,
                                         "esrgan_compile": memory.esrgan_compile_pays(self.upscale_frames, p)})
                     for p in plans]
        return plans

    def preflight(self, selected: Sequence[str]) -> None:
        """Refuse, before any model is loaded, a render no memory plan can fit."""
        jobs = self.job.segment_jobs(selected)  # a keep past a shot's end: refused as the job resolved
        check_loras([job for job in jobs if job.segment.loras])
        self.upscale_frames = sum(job.frames for job in jobs)
        for preset in {job.preset.name: job.preset for job in jobs}.values():
            longest = max(job.frames for job in jobs if job.preset is preset)
            for stage in self.stages_for(preset):
                self.plans(stage, longest, preset=preset)

    def run_stage(self, name: str, job: SegmentJob, inputs: dict[str, Artifact], *, behind: bool = False) -> Artifact:
        """A stage's cache entry: looked up, else built down its memory-plan ladder.

        ``behind``: the stage runs on the local engine's thread beside the GPU stages (the encode):
        it gets an empty model holder, so neither it nor an out-of-memory fallback frees the models
        the GPU stage in front is using."""
        key = self.key_for(name, job, inputs)
        hit = self.cache.get(name, key)
        if hit is not None:
            self.emit(protocol.StageCached(segment=job.segment.id, stage=name, cache_key=key))
            return hit
        plans = self.plans(name, job.frames, job.segment.id, job.preset)
        if name == "upscale":
            # the upscaler uses none of the held models: fit it beside them rather than evict
            plans = memory.beside_held(plans, memory.vram_room(self.job.project))
        models = LoadedModels() if behind else self.models
        return run_down_ladder(name, job.segment.id, plans,
                               lambda plan: self._attempt(name, job, inputs, key, plan, models),
                               models=models, cancel=self.cancel, emit=self.emit)

    def _attempt(self, name: str, job: SegmentJob, inputs: dict[str, Artifact], key: str,
                 plan: memory.StagePlan, models: LoadedModels) -> Artifact:
        """One run of a stage under one memory plan, into its cache entry."""
        stage = self.stages_for(job.preset)[name]
        ctx = StageContext(emit=self.emit, cancel=self.cancel, models=models, plan=plan,
                           job_id=self.job_id, segment_id=job.segment.id)
        self.emit(protocol.StageStarted(segment=job.segment.id, stage=name, plan=plan.describe(),
                                        total_steps=stage.total_steps(job)))
        gpu = plan.device != "cpu"  # a CPU stage (the encode) may run beside a GPU one: its peaks are not its own
        if gpu:
            _reset_peaks()
        t0 = time.perf_counter()
        with self.cache.build(name, key, stage.params(job)) as building:
            self.faults.at_stage_start(name, self.cancel)
            if name == "draft" and job.anchor is not None:
                # Kept beside the draft so chaining and the drift guard can be audited.
                np.save(building.path / "anchor.npy", job.anchor)
            meta = stage.run(ctx, job, inputs, building.path)
            building.meta.update(meta or {})
        allocated, reserved = _peaks() if gpu else (0, 0)
        self.emit(protocol.StageFinished(segment=job.segment.id, stage=name,
                                         seconds=time.perf_counter() - t0, peak_allocated=allocated,
                                         peak_reserved=reserved, peak_host_rss=_host_peak(),
                                         plan=plan.describe(), cache_key=key))
        if plan.options.get("evict_between_stages"):
            models.make_room(reason="the plan evicts between stages")
        artifact = self.cache.get(name, key)
        assert artifact is not None
        return artifact

    # ---------------------------------------------------------- per segment

    def prompt_for(self, job: SegmentJob) -> str:
        seg = job.segment
        if seg.enhance_lock and seg.enhanced_prompt.strip():
            return seg.enhanced_prompt
        if not self.sb.project.enhance or not job.preset.takes_prompt:
            return seg.prompt
        art = self.run_stage("enhance", job, {})
        text = art.file("prompt.txt").read_text(encoding="utf-8")
        if art.meta.get("fallback"):
            # The enhancer gave nothing usable: draft from the user's words, and leave the
            # storyboard's enhanced_prompt alone rather than caching a non-result in it
            # (the stage logged why when it ran).
            return seg.prompt
        if text != seg.enhanced_prompt:
            self._write_enhanced(seg.id, text)
        return text

    def _write_enhanced(self, segment_id: str, text: str) -> None:
        """Cache the enhanced prompt in the storyboard (pipeline.project.writeback owns the write);
        a file that cannot take it is a warning, never the render's failure."""
        why = set_enhanced_prompt(self.sb.path, segment_id, text)
        if why == PINNED:
            return
        if why:
            self.emit(protocol.Log(level="warning", message=f"enhanced prompt of {segment_id} not saved in the "
                                   f"storyboard ({why}); it stays in the cache"))
        self.emit(protocol.PromptEnhanced(segment=segment_id, enhanced_prompt=text))

    def anchor_for(self, job: SegmentJob, previous_last: np.ndarray | None,
                   reference: np.ndarray | None) -> np.ndarray | None:
        anchor = job.segment.anchor
        w, h = job.draft_size
        if anchor.kind == "none" or (anchor.kind == "previous" and previous_last is None):
            return None
        if anchor.kind == "previous":
            assert previous_last is not None
            frame = previous_last
        elif anchor.kind == "image":
            frame = _read_image(self.sb.resolve(anchor.path))
        else:
            frame = last_video_frame(self.sb.resolve(anchor.path))
        frame = _fit(frame, w, h)
        if job.drift_guard != "off" and reference is not None and anchor.kind == "previous":
            frame = drift.match_colors(frame, _fit(reference, w, h), self.sb.project.drift_strength)
        return frame

    # ---------------------------------------------------------------- the film

    def draft_segment(self, index: int) -> tuple[SegmentJob, Artifact]:
        """Enhance + draft one segment, chaining from the previous ``draft_segment`` call.

        Drafts must run in storyboard order: segment k's anchor is segment k-1's last
        draft frame. Everything after the draft only depends on that segment's draft.
        """
        chain = self.chain
        job = self.job_for(index)
        # The anchor first: an enhancer with a vision projector looks at it (I2V enhancement).
        job.anchor = self.anchor_for(job, chain.prev_last, chain.reference)
        job.anchor_digest = digest(job.anchor.tobytes()) if job.anchor is not None else ""
        job.prompt = self.prompt_for(job)
        draft = self.run_stage("draft", job, {})
        frames = np.load(draft.file("frames.npy"), mmap_mode="r")[:job.kept]  # what the film shows of it
        if chain.reference is None and self.sb.project.drift_reference == "first":
            chain.reference = np.ascontiguousarray(frames[-1])
        job.reference = chain.reference
        self._quality(job, "draft", frames, chain.prev_last, chain.reference)
        chain.prev_last = np.ascontiguousarray(frames[-1])
        return job, draft

    def finish_stages(self, job: SegmentJob, draft: Artifact, *, preview: bool = True) -> Artifact:
        """Refine → upscale (→ grade) → encode of one drafted segment; returns the encode entry.

        ``preview``: publish the shot's preview PNG (a take must not replace the shot's own)."""
        return self.encode_stage(job, draft, self.frame_stages(job, draft), preview=preview)

    def frame_stages(self, job: SegmentJob, draft: Artifact, behind: Behind | None = None) -> Artifact:
        """Refine → upscale (→ grade, → retake) of one drafted segment: the GPU part of finishing it;
        returns the entry of the frames that get encoded. The refined frames' flicker is measured
        ``behind`` the GPU stages when given (1.1 s for 121 frames at 960×544 on this CPU)."""
        arts = {"draft": draft}
        for name, source in self.frames_chain(job):
            arts[name] = self.run_stage(name, job, {source: arts[source]})
            if name == "refine":
                if behind is None:
                    self._refine_quality(job, arts[name])
                else:
                    behind.submit(lambda art=arts[name]: self._refine_quality(job, art), lane="analysis")
        frames = arts[self.frames_chain(job)[-1][0]]
        if job.segment.retake is not None:  # keyframes/retake
            frames = self.retake(job, draft, frames, self.run_stage)
        return frames

    def _refine_quality(self, job: SegmentJob, refine: Artifact) -> None:
        refined = np.load(refine.file("frames.npy"), mmap_mode="r")[:job.kept]  # what the film shows
        self._quality(job, "refine", refined, None, None)

    def encode_stage(self, job: SegmentJob, draft: Artifact, frames: Artifact, *, preview: bool = True,
                     behind: bool = False) -> Artifact:
        """The shot's preview PNG and its encode (CPU only: the local engine runs it ``behind`` the next draft)."""
        if preview:
            self._preview(job, frames)
        return self.run_stage("encode", job, {"upscale": frames, "draft": draft}, behind=behind)

    def retake(self, job: SegmentJob, draft: Artifact, original: Artifact,
               stage: Callable[[str, SegmentJob, dict[str, Artifact]], Artifact | None]) -> Artifact | None:
        """The shot's frames with its ``retake`` span drafted again and spliced in (pipeline/stages/retake.py);
        ``stage`` runs a stage (rendering) or only looks its entry up (assembling the film: None if missing)."""
        arts: dict[str, Artifact | None] = {"draft": stage("retake-draft", job, {"draft": draft})}
        for name, source in self.frames_chain(job):
            given = arts[source]
            arts[name] = None if given is None else stage(name, job, {source: given})
        take = arts[self.frames_chain(job)[-1][0]]
        return None if take is None else stage("retake", job, {"upscale": original, "take": take})

    def _lookup(self, name: str, job: SegmentJob, inputs: dict[str, Artifact]) -> Artifact | None:
        return self.cache.get(name, self.key_for(name, job, inputs))

    def finish_segment(self, job: SegmentJob, draft: Artifact) -> Path:
        """Finish one drafted segment and publish it as renders/<stem>/segments/<id>.mp4."""
        t_seg = time.perf_counter()
        return self.publish(job, self.finish_stages(job, draft), t_seg)

    def publish(self, job: SegmentJob, encode: Artifact, t_seg: float, behind: Behind | None = None) -> Path:
        """renders/<stem>/segments/<id>.mp4 from the segment's encode entry, its manifest line, the
        encoded video's flicker and ``SegmentDone`` (``seconds``: since ``t_seg``, its refine's start).
        ``behind``: the flicker is measured on its analysis lane, after ``SegmentDone``."""
        seg_id = job.segment.id
        target = self.renders.segment(seg_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = encode.file("segment.mp4")
        atomic_copy(source, target)
        # dated when it was encoded: a shot taken from the cache read "rendered now" in the editor
        os.utime(target, ns=(time.time_ns(), source.stat().st_mtime_ns))
        self._record_rendered(seg_id, encode)
        if behind is None:
            self._quality_video(job, target)
        self.emit(protocol.SegmentDone(segment=seg_id, path=str(target), frames=int(encode.meta["frames"]),
                                       seconds=time.perf_counter() - t_seg))
        if behind is not None:
            behind.submit(lambda: self._quality_video(job, target), lane="analysis")
        return target

    def _record_rendered(self, seg_id: str, encode: Artifact) -> None:
        """renders/<stem>/manifest.json: what each segment MP4 was made from, so any
        client (the TUI after a CLI render, say) can tell rendered from stale."""
        path = self.renders.manifest
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        segments = data.setdefault("segments", {})
        before = segments.get(seg_id) if isinstance(segments.get(seg_id), dict) else {}
        same = before.get("encode_key") == encode.key and isinstance(before.get("rendered_at"), int | float)
        segments[seg_id] = {"digest": segment_digest(self.sb, seg_id), "encode_key": encode.key,
                            "rendered_at": before["rendered_at"] if same else time.time()}
        atomic_write(path, json.dumps(data, indent=1))

    def run(self, selected: Sequence[str]) -> Path:
        t_job = time.perf_counter()
        ids = [s.id for s in self.sb.segments]
        last_needed = max(ids.index(s) for s in selected)
        self.emit(protocol.JobStarted(storyboard=str(self.sb.path), segments=list(selected)))
        for line in rounded_lengths(self.job.segment_jobs(selected)):
            self.emit(protocol.Log(message=line))
        drafts = self._render_segments(selected, last_needed)
        final = self.assemble(drafts)
        self.emit(protocol.JobFinished(path=str(final), seconds=time.perf_counter() - t_job))
        return final

    def _render_segments(self, selected: Sequence[str], last_needed: int) -> dict[str, Artifact]:
        """Draft every segment up to the last one needed, finish the selected ones; each segment's
        encode and publishing run behind the next segment's GPU stages (pipeline/render/overlap.py)."""
        user_cancel = self.cancel
        self.cancel = LinkedCancel(user_cancel)  # abandoning the work behind must not cancel the caller's job
        behind = Behind(self.cancel, inline=os.environ.get("SULPHUR_BEHIND") == "inline")
        drafts: dict[str, Artifact] = {}
        try:
            for index in range(last_needed + 1):
                behind.check()
                job, draft = self.draft_segment(index)
                drafts[job.segment.id] = draft
                if job.segment.id in selected:
                    t_seg = time.perf_counter()
                    frames = self.frame_stages(job, draft, behind)
                    behind.submit(lambda job=job, frames=frames: self._preview(job, frames), lane="analysis")
                    behind.submit(lambda job=job, draft=draft, frames=frames, t_seg=t_seg:
                                  self._encode_and_publish(job, draft, frames, t_seg, behind))
            behind.drain()
        except BaseException:
            behind.abandon()
            raise
        finally:
            self.cancel = user_cancel
        return drafts

    def _encode_and_publish(self, job: SegmentJob, draft: Artifact, frames: Artifact, t_seg: float,
                            behind: Behind) -> None:
        self.publish(job, self.encode_stage(job, draft, frames, preview=False, behind=True), t_seg, behind)

    def _reference_image(self) -> np.ndarray | None:
        ref = self.sb.project.drift_reference
        if ref == "first" or self.sb.project.drift_guard == "off":
            return None
        return _read_image(self.sb.resolve(ref))

    def _quality(self, job: SegmentJob, stage: str, frames: np.ndarray, prev_last: np.ndarray | None,
                 reference: np.ndarray | None) -> None:
        """Flicker (and, for drafts, colour drift) of a stage's frames, as events."""
        seam = None
        if prev_last is not None and job.segment.anchor.kind == "previous" and len(frames):
            after = np.ascontiguousarray(frames[min(1, len(frames) - 1)])
            # Shots from different presets draft at different sizes: compare as the anchor was handed over.
            seam = flicker.seam_psnr(_fit(prev_last, after.shape[1], after.shape[0]), after)
        stats = flicker.analyze_frames(frames, fps=job.fps)
        self.emit(stats.to_event(job.segment.id, stage, self.job_id, seam_psnr=seam))
        if stage != "draft":
            return
        first, last = np.asarray(frames[0]), np.asarray(frames[-1])
        ref = drift.frame_stats(reference if reference is not None else first)
        self.emit(drift.drift_event(job.segment.id, first, last, ref, job.drift_guard, self.job_id))

    def _quality_video(self, job: SegmentJob, path: Path) -> None:
        """Flicker of the encoded segment as a viewer will decode it."""
        self.emit(flicker.analyze_video(path).to_event(job.segment.id, "encode", self.job_id))

    def _preview(self, job: SegmentJob, upscale: Artifact) -> None:
        from PIL import Image  # deferred: keeps importing the runner light

        frames = np.load(upscale.file("frames.npy"), mmap_mode="r")[:job.kept]
        path = self.renders.preview(job.segment.id)
        try:
            with publishing(path, "preview") as tmp:  # a unique temporary: two renders never share one
                Image.fromarray(np.ascontiguousarray(frames[-1])).save(tmp)
        except RenderError as exc:  # a preview is a convenience: the render goes on without it
            self.emit(protocol.Log(level="warning", message=exc.message))
            return
        self.emit(protocol.Preview(segment=job.segment.id, stage="upscale", path=str(path)))

    def assemble(self, drafts: dict[str, Artifact]) -> Path:
        """final.mp4 from every segment's cached stages, when all of them exist."""
        undrafted = [s.id for s in self.sb.segments if s.id not in drafts]
        if undrafted:  # a selection that ends early: later shots' cache keys hang on drafts not made
            self.emit(protocol.Log(message=f"final film not assembled: this render stopped before shot "
                                           f"{undrafted[0]}; render every shot (or --from {undrafted[0]}) "
                                           "to assemble it"))
            return self.renders.root
        return assemble_film(self.job, lambda index: self._cached_segment(index, drafts), self.renders, self.emit)

    def _cached_segment(self, index: int, drafts: dict[str, Artifact]) -> CachedSegment | None:
        """Look up (without running) a segment's encoded-frames entry, its draft and its
        encode (None when only the frames are cached)."""
        seg = self.sb.segments[index]
        draft = drafts.get(seg.id)
        if draft is None:
            return None
        job = self.job_for(index)
        job.reference = self.chain.reference
        arts: dict[str, Artifact] = {"draft": draft}
        for name, source in self.frames_chain(job):
            art = self.cache.get(name, self.key_for(name, job, {source: arts[source]}))
            if art is None:
                return None
            arts[name] = art
        frames = arts[self.frames_chain(job)[-1][0]]
        if job.segment.retake is not None:  # keyframes/retake: the film shows the retake
            retaken = self.retake(job, draft, frames, self._lookup)
            if retaken is None:
                return None
            frames = retaken
        encode = self.cache.get("encode", self.key_for("encode", job, {"upscale": frames, "draft": draft}))
        return CachedSegment(frames=frames, draft=draft, encode=encode, kept=job.kept)


def render(storyboard_path: str | os.PathLike[str], *, segments: Sequence[str] | None = None,
           from_segment: str | None = None, preset: str | None = None, emit: Emit = lambda e: None,
           cancel: threading.Event | None = None, job_id: str = "",
           models: LoadedModels | None = None) -> Path:
    """Render a storyboard; returns ``final.mp4`` (or the render folder if not every segment exists)."""
    job = RenderJob.resolve(load(storyboard_path), Overrides(preset=preset), segments=segments,
                            from_segment=from_segment)
    sb = job.storyboard
    last = max(sb.index(s) for s in job.selected)  # shots 0..last are drafted: their anchors must be usable
    check_references(sb, {s.id for s in sb.segments[:last + 1]})
    refuse_blocked_folders(sb.path)
    renderer = Renderer.create(job, emit=emit, cancel=cancel or threading.Event(),
                               job_id=job_id or uuid.uuid4().hex[:12], models=models or LoadedModels())
    with OutputLock.for_storyboard(sb, emit, renderer.cancel) as lock:  # one render per output folder
        renderer.cache.sweep_partials()
        sweep_temporaries(renderer.renders.root)
        renderer.preflight(job.selected)
        complete = False
        try:
            final = renderer.run(job.selected)
            # only a whole film replaces the record: a render of some shots looks up no stage of
            # the others, whose entries the film still needs
            complete = len(job.selected) == len(sb.segments)
            return final
        finally:
            after_render(sb, renderer.cache.used, complete, emit, lock)


# ------------------------------------------------------------------- helpers


def quiet_libraries() -> None:
    """Progress is reported through events; the libraries' own tqdm bars would garble it."""
    import diffusers  # deferred: heavy, and only a render that loads models needs them quiet
    import huggingface_hub.utils
    import transformers

    # The API, not the environment: child processes (a `models pull`) keep their own bars.
    huggingface_hub.utils.disable_progress_bars()

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()


def _reset_peaks() -> None:
    import torch  # deferred: importing the runner stays torch-free
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peaks() -> tuple[int, int]:
    import torch  # deferred: importing the runner stays torch-free

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    return 0, 0


def _host_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image  # deferred: only image anchors need it

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise RenderError("bad_anchor", f"cannot read anchor image {path}: {exc}") from None


def last_video_frame(path: Path) -> np.ndarray:
    """The last decoded frame of a video (RGB), or a RenderError naming the file."""
    import av  # deferred: only video anchors need it

    last = None
    try:
        with open_media(path) as container:
            if not container.streams.video:  # decode(video=0) would be an IndexError traceback
                raise RenderError("bad_anchor", f"anchor video {path} has no video stream (a sound file?)")
            for frame in container.decode(video=0):
                last = frame
    except (OSError, av.error.FFmpegError, ValueError) as exc:  # noqa: B014 - PyAV's errors are OSError too
        reason = getattr(exc, "strerror", None) or str(exc)  # FFmpeg's reason, not its errno
        raise RenderError("bad_anchor", f"cannot read anchor video {path}: {reason}") from None
    if last is None:
        raise RenderError("bad_anchor", f"anchor video {path} has no frames")
    return last.to_ndarray(format="rgb24")


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop to the target aspect, then resize (the anchor must match the draft size)."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return np.ascontiguousarray(frame)
    from PIL import Image  # deferred: only a resize needs it

    target = width / height
    if w / h > target:
        cw = round(h * target)
        x0 = (w - cw) // 2
        frame = frame[:, x0:x0 + cw]
    else:
        ch = round(w / target)
        y0 = (h - ch) // 2
        frame = frame[y0:y0 + ch]
    img = Image.fromarray(np.ascontiguousarray(frame)).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img)


__all__ = ["render", "RenderError", "Renderer"]


def measure_context_cost() -> int | None:
    """What this process holds on the GPU outside torch's allocator (CUDA context, cuBLAS/cuDNN
    handles, loaded kernels), measured through NVML after warming those libraries, at each
    job's start (it only grows); the planner and the allocator cap then keep the whole process
    within ``vram_budget_gb``. None without NVML (the estimate stays)."""
    from pipeline.memory.offload import warm_cuda_libraries  # torch: CUDA only

    reserved = warm_cuda_libraries()
    used = process_gpu_bytes()
    cost = None if used is None else context_bytes(used, reserved)
    set_context_cost(cost)
    return cost
