"""Frame conditions for LTX-2's condition pipeline: keyframes, the anchor, a retake's kept frames.

Everything here is handed to diffusers' ``LTX2ConditionPipeline`` as ``LTX2VideoCondition``
items, so the conditioning is the library's (and Lightricks'): a condition at latent
index 0 replaces the first latent frame (as the image-to-video anchor does), one at any
later index is appended as guide tokens (keyframe interpolation), positioned at its own
pixel frame (:mod:`pipeline.models.ltx2_condition`). Condition indices are *latent*
frames: pixel frame ``f`` > 0 lies in latent ``(f - 1) // 8 + 1`` (LTX-2's causal VAE
keeps frame 0 in a latent of its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.models.ltx2 import fit_image

if TYPE_CHECKING:
    from pipeline.stages.base import SegmentJob

# Deferred imports: PIL, pipeline.models.ltx2_condition (diffusers) — the runner reads cache keys through the
#   draft stage without them; they load when a draft with conditions runs

#: LTX-2's VAE compresses 8 frames into one latent frame, in every preset (frames are 8k + 1).
TEMPORAL_RATIO = 8


def latent_index(frame: int, ratio: int) -> int:
    """The latent frame that decodes to pixel ``frame`` (``ratio``: the VAE's temporal compression)."""
    return 0 if frame == 0 else (frame - 1) // ratio + 1


def latent_count(frames: int, ratio: int) -> int:
    return (frames - 1) // ratio + 1


def read_still(path: Any, size: tuple[int, int]) -> np.ndarray:
    """A still as the draft takes it: RGB uint8, covered and centre-cropped to ``size`` (w, h)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(fit_image(np.asarray(im.convert("RGB")), size))


def keyframe_conditions(job: SegmentJob, ratio: int, size: tuple[int, int] | None = None) -> list[Any]:
    """The anchor (frame 0) and the shot's keyframes, in that order: a keyframe at frame 0 is
    applied after the anchor, so the user's own still wins over the chained one. Stills are
    read at ``size`` (w, h; the draft size unless given): refine conditions on them again at
    its own size, as Lightricks' two-stage pipelines condition stage 2."""
    from pipeline.models.ltx2_condition import FrameCondition

    if not job.segment.keyframes:
        return []
    out = []
    if job.anchor is not None:
        out.append(FrameCondition(frames=np.ascontiguousarray(job.anchor), index=0, strength=1.0, frame=0))
    for kf in job.segment.keyframes:
        still = read_still(job.storyboard.resolve(kf.image), size or job.draft_size)
        frame = kf.index(job.frames)
        out.append(FrameCondition(frames=still, index=latent_index(frame, ratio), strength=kf.strength,
                                  frame=frame))
    return out


def retake_conditions(original: np.ndarray, span: tuple[int, int], ratio: int) -> list[Any]:
    """The original draft's frames around ``span`` as video conditions: those before it at latent
    0, those after it from the first latent frame wholly past the span (the library trims each
    to whole latent frames). Frames inside the span are left to the model."""
    from pipeline.models.ltx2_condition import FrameCondition

    a, b = span
    frames = len(original)
    out = []
    if a > 0:
        out.append(FrameCondition(frames=np.ascontiguousarray(original[:a]), index=0, strength=1.0, frame=0))
    after = -(-b // ratio) + 1  # first latent whose pixels (after-1)*ratio+1.. all lie past b
    start = (after - 1) * ratio + 1
    if after < latent_count(frames, ratio) and start < frames:
        out.append(FrameCondition(frames=np.ascontiguousarray(original[start:]), index=after, strength=1.0,
                                  frame=start))
    return out


__all__ = ["TEMPORAL_RATIO", "keyframe_conditions", "latent_count", "latent_index", "read_still", "retake_conditions"]
