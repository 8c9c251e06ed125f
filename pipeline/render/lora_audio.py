"""The checks a shot's ``loras`` and ``audio`` get before any stage runs.

Families other than LTX-2 cannot honour them (no audio stream, no LTX-2 LoRA layout), so
a storyboard that asks is refused in one line naming the shot. A Hub LoRA that was never
pulled, or a LoRA whose tensors do not fit the model, is refused the same way, before a
model is loaded (the file check builds the model on the meta device).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pipeline.models import user_loras
from pipeline.models.published import WeightsMismatch
from pipeline.render.errors import RenderError

if TYPE_CHECKING:
    from pipeline.models.registry import Preset
    from pipeline.project.storyboard import Project, Storyboard
    from pipeline.stages.base import SegmentJob

#: The model family whose pipelines take a shot's LoRAs and given sound.
FAMILY = "ltx2"


def refuse_unsupported(sb: Storyboard, project: Project, presets: Mapping[str, Preset]) -> None:
    """A shot with ``loras`` or ``audio`` on a preset of another family: one line, before any stage."""
    for seg in sb.segments:
        preset = presets[seg.preset or project.preset]
        if preset.family == FAMILY:
            continue
        used = [k for k, v in (("loras", seg.loras), ("audio", seg.audio)) if v]
        if used:
            raise RenderError("unsupported_key", f"segment {seg.id}: {' and '.join(used)} need an LTX-2 preset; "
                              f"{preset.name} ({preset.family}) cannot honour {'them' if len(used) > 1 else 'it'}",
                              segment=seg.id)


def check_loras(jobs: Sequence[SegmentJob]) -> None:
    """Every LoRA of the shots to render is on this machine and fits its model, else one line naming it."""
    checked: set[tuple[str, str]] = set()
    for job in jobs:
        for ref, lora in zip(job.segment.loras, user_loras.resolve(job.storyboard, job.segment), strict=True):
            if lora.path is None:
                board = job.storyboard.path.name
                hint = (f"`sulphur models pull {board}` fetches it" if lora.hub
                        else f"put it at {job.storyboard.resolve(ref.path)}")
                raise RenderError("missing_models", f"segment {job.segment.id}: LoRA {lora.label} is not on this "
                                  f"machine: {hint}", segment=job.segment.id)
            if (job.preset.name, lora.digest) in checked:
                continue
            try:
                user_loras.check(job.preset, lora.path)
            except (WeightsMismatch, user_loras.LoraUnreadable) as exc:
                raise RenderError("bad_lora", f"segment {job.segment.id}: LoRA does not fit {job.preset.name}: "
                                  f"{exc}", segment=job.segment.id) from None
            checked.add((job.preset.name, lora.digest))
