"""LTX-2's condition pipeline with guides placed on their own frame.

diffusers' ``LTX2ConditionPipeline`` takes a condition's position as a *latent* index
and places a guide (a condition past latent 0, appended as extra tokens) at that
latent's first pixel frame, so a keyframe on a shot's last frame would be told it sits
up to 7 frames earlier. Lightricks' reference (``VideoConditionByKeyframeIndex`` in
ltx-core, used by ltx-pipelines' keyframe interpolation) places it at its own pixel
frame. The one hand-written part here is that offset: a condition may carry ``frame``,
and its guide's positions start there; everything else is the library's.

Imports diffusers at the top: only a draft with frame conditions imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers import LTX2ConditionPipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition


@dataclass
class FrameCondition(LTX2VideoCondition):
    """An ``LTX2VideoCondition`` that knows the pixel frame it stands for (None: the library's placement)."""

    frame: int | None = None


class FrameExactConditionPipeline(LTX2ConditionPipeline):
    """``LTX2ConditionPipeline`` whose guides start at their condition's ``frame``."""

    def prepare_latents(self, conditions: Any = None, *args: Any, **kwargs: Any) -> Any:
        items = conditions if isinstance(conditions, list) else [conditions] if conditions is not None else []
        # Guides are built in condition order, skipping those on latent 0 (those replace latent 0 instead).
        self._guide_frames = [getattr(c, "frame", None) for c in items if c.index != 0]
        try:
            return super().prepare_latents(conditions, *args, **kwargs)
        finally:
            self._guide_frames = []

    def _prepare_keyframe_coords(self, *, pixel_frame_idx: int, **kwargs: Any) -> Any:
        frame = self._guide_frames.pop(0) if getattr(self, "_guide_frames", None) else None
        return super()._prepare_keyframe_coords(pixel_frame_idx=pixel_frame_idx if frame is None else frame,
                                                **kwargs)


__all__ = ["FrameCondition", "FrameExactConditionPipeline"]
