"""A render job: one storyboard plus the request's overrides, resolved once.

The storyboard stays as it was read from the file; what a flag changes (``--preset``,
a Ray actor's memory share) lives in :attr:`RenderJob.project`, the settings the
render actually uses. Every preset the storyboard names is looked up here and nowhere
else, and each segment's settings (:class:`SegmentJob`) are derived from this object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from pipeline.models.registry import Preset, get_preset
from pipeline.project.keyframes import unsupported
from pipeline.project.selection import select_segments
from pipeline.project.storyboard import Project, Storyboard, error_at
from pipeline.render.errors import RenderError
from pipeline.render.lora_audio import refuse_unsupported
from pipeline.stages.base import SegmentJob


@dataclass(frozen=True)
class Overrides:
    """What a request changes for this render only (None: the storyboard's own value)."""

    preset: str | None = None
    vram_budget_gb: float | None = None
    ram_budget_gb: float | None = None


@dataclass
class RenderJob:
    """A storyboard + overrides: the project settings, presets and segments of one render."""

    storyboard: Storyboard
    project: Project                  # the storyboard's [project] with the overrides applied
    presets: dict[str, Preset]        # every preset this render uses, the project's first
    selected: list[str] = field(default_factory=list)

    @classmethod
    def resolve(cls, sb: Storyboard, overrides: Overrides | None = None, *,
                segments: Sequence[str] | None = None, from_segment: str | None = None) -> RenderJob:
        """Select the segments, apply the overrides, look up every preset (unknown ones refused)."""
        selected = select_segments(sb, segments, from_segment)
        o = overrides or Overrides()
        changes = {k: v for k, v in (("preset", o.preset), ("vram_budget_gb", o.vram_budget_gb),
                                     ("ram_budget_gb", o.ram_budget_gb)) if v}
        project = replace(sb.project, **changes)
        presets = {project.preset: _resolve_preset(sb, project.preset, flag=bool(o.preset))}
        for i, seg in enumerate(sb.segments):
            if seg.preset and seg.preset not in presets:
                presets[seg.preset] = _resolve_preset(sb, seg.preset, i)
        _refuse_unsupported(sb, project, presets)
        refuse_unsupported(sb, project, presets)
        _refuse_sizes(sb, project, presets)
        at = {seg.id: i for i, seg in enumerate(sb.segments)}
        _refuse_shots(sb, project, presets, max((at[s] for s in selected), default=len(sb.segments) - 1))
        return cls(sb, project, presets, selected)

    @property
    def preset(self) -> Preset:
        """The project's preset (after ``--preset``)."""
        return self.presets[self.project.preset]

    def preset_for(self, index: int) -> Preset:
        """The segment's own preset (``preset`` key of a [[segment]]), else the project's."""
        return self.presets[self.storyboard.segments[index].preset or self.project.preset]

    def segment_job(self, index: int) -> SegmentJob:
        """Everything resolved about segment ``index`` before its stages run."""
        seg = self.storyboard.segments[index]
        p = self.project
        preset = self.preset_for(index)
        draft = preset.round_size(p.draft_size or preset.draft_size)
        # LTX-2 refines through a ×2 latent upsampler; families without one keep their
        # native pixels for ESRGAN (refine_scale 1) instead of a blurry pixel ×2.
        scale = int(preset.extra.get("refine_scale", 2))
        refine = p.refine_size or (draft[0] * scale, draft[1] * scale)
        return SegmentJob(
            storyboard=self.storyboard, segment=seg, index=index, preset=preset,
            frames=preset.round_frames(seg.frame_count(p.fps)),
            seed=seg.seed if seg.seed is not None else p.seed + index,
            fps=p.fps, draft_size=draft, refine_size=tuple(refine), output_size=p.output_size,
            steps=seg.steps or p.steps or preset.steps,
            refine_sigmas=seg.refine_sigmas or p.refine_sigmas or preset.refine_sigmas,
            lora_strength=seg.lora_strength if seg.lora_strength is not None else (
                p.lora_strength if p.lora_strength is not None else preset.lora_strength),
            audio=p.audio and preset.audio,
        )

    def segment_jobs(self, ids: Sequence[str]) -> list[SegmentJob]:
        """The segment jobs of ``ids``, in storyboard order."""
        return [self.segment_job(i) for i, s in enumerate(self.storyboard.segments) if s.id in ids]


def rounded_lengths(jobs: Iterable[SegmentJob]) -> list[str]:
    """A line for each shot whose length the model rounds up (LTX-2 generates 8k+1 frames):
    without it, `frames = 10` rendered 17 frames with no word of why."""
    lines = []
    for job in jobs:
        asked = job.segment.frame_count(job.fps)
        if asked != job.frames:
            lines.append(f"{job.segment.id}: {asked} frames asked, {job.frames} rendered "
                         f"({job.preset.name} generates {job.preset.frame_multiple}k+1 frames)")
    return lines


def _refuse_unsupported(sb: Storyboard, project: Project, presets: dict[str, Preset]) -> None:
    """A shot key its model family cannot honour (keyframes, retake) fails the job before any stage,
    in the storyboard's one-line form (file:line:col: segment[i].key: ...)."""
    for i, seg in enumerate(sb.segments):
        preset = presets[seg.preset or project.preset]
        key = unsupported(seg, preset.family)
        if not key:
            continue
        where = _located(sb, f"preset {preset.name} ({preset.family}) cannot honour {key}; "
                         f"use an LTX-2 preset for this shot", "segment", i, key)
        raise RenderError("unsupported_key", where, segment=seg.id)


def _refuse_shots(sb: Storyboard, project: Project, presets: dict[str, Preset], last: int) -> None:
    """A shot its preset cannot render as written fails the job before any stage (it failed
    only once the shots before it had rendered): a ``keep`` past the shot's (rounded) frames, or
    no picture to start from for an image-to-video-only model (``needs_anchor``: SVD, Wan I2V).
    Shots 0..``last`` (the last selected) are looked at: those the job drafts, as their anchors'
    files are (a half-written shot after them does not hold up F6 on an earlier one)."""
    for i, seg in enumerate(sb.segments[:last + 1]):
        preset = presets[seg.preset or project.preset]
        frames = preset.round_frames(seg.frame_count(project.fps))
        if seg.keep is not None and seg.keep > frames:
            where = _located(sb, f"keep = {seg.keep} is more than the {frames} frames segment {seg.id} has",
                             "segment", i, "keep")
            raise RenderError("bad_keep", where, segment=seg.id)
        anchorless = seg.anchor.kind == "none" or (seg.anchor.kind == "previous" and i == 0)
        if preset.extra.get("needs_anchor") and anchorless:
            where = _located(sb, f"preset {preset.name} generates only from a picture: give this shot an "
                             "anchor (an image, a video, or a shot before it)", "segment", i, "anchor")
            raise RenderError("needs_anchor", where, segment=seg.id)


def _refuse_sizes(sb: Storyboard, project: Project, presets: dict[str, Preset]) -> None:
    """A draft or refine size a strict-size preset (``extra["strict_sizes"]``: LTX-2.5, /64) cannot take
    fails the job in the storyboard's one-line form. Refused, not rounded: rounding 288 to 256 or 320
    would change the picture's shape without a word, and the refine size must stay twice the draft."""
    for preset in presets.values():
        if not preset.extra.get("strict_sizes"):
            continue
        m = preset.size_multiple
        for key in ("draft_size", "refine_size"):
            size = getattr(project, key)
            if size is None or all(v % m == 0 for v in size):
                continue
            width, height = size
            where = _located(sb, f"{width}x{height} is not valid for preset {preset.name}: width and "
                             f"height must be multiples of {m} (its default is "
                             f"{preset.draft_size[0]}x{preset.draft_size[1]})", "project", None, key)
            raise RenderError("invalid_size", where)


def _resolve_preset(sb: Storyboard, name: str, index: int | None = None, *, flag: bool = False) -> Preset:
    """The preset called ``name``; an unknown one fails the job naming where it was asked for:
    ``--preset``, else the storyboard's file:line:col of ``project.preset`` or ``segment[i].preset``."""
    try:
        return get_preset(name)
    except KeyError as exc:
        message = str(exc.args[0])
    if flag:
        raise RenderError("unknown_preset", f"--preset: {message}")
    where = _located(sb, message, "project" if index is None else "segment", index, "preset")
    raise RenderError("unknown_preset", where, segment=sb.segments[index].id if index is not None else "")


def _located(sb: Storyboard, message: str, table: str, index: int | None, key: str) -> str:
    """``message`` in the storyboard's one-line form, ``file:line:col: table[index].key: message``."""
    return str(error_at(sb.path, message, table, index, key))
