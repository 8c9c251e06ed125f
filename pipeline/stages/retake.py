"""Retake a span: regenerate frames a..b of a rendered shot, keep every other frame as it was.

Two stages. ``retake-draft`` drafts the shot again through LTX-2's condition pipeline,
conditioned on the original draft's frames around the span (the same conditioning as
keyframes, :mod:`pipeline.stages.conditions`), with noise of its own; it is refined and
upscaled like any draft. ``retake`` then splices frames a..b of that take into the
original's finished frames, so everything outside the span is the original's bytes by
construction. Both are cache entries of their own, keyed on the original draft's key,
the span and the take's seed: the original's entries stay, and removing ``retake`` from
the storyboard finds them again without rendering anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.project.keyframes import retake_seed
from pipeline.stages.base import SegmentJob, Stage, StageContext
from pipeline.stages.conditions import keyframe_conditions, retake_conditions
from pipeline.stages.draft import DraftStage

if TYPE_CHECKING:
    from pipeline.stages.base import Artifact


def span(job: SegmentJob) -> tuple[int, int]:
    """The retaken frames (inclusive); the storyboard checked them against the shot's length."""
    assert job.segment.retake is not None
    return job.segment.retake


class RetakeDraftStage(DraftStage):
    """The shot drafted again around its kept frames; input: the original draft."""

    name = "retake-draft"
    version = 1
    inputs = ("draft",)

    def params(self, job: SegmentJob) -> dict[str, Any]:
        # Prompt, anchor, keyframes, size, steps... reach it through the original draft's key (its input).
        if job.segment.retake is None:
            return {"retake": None}
        return {"retake": list(span(job)), "retake_seed": self.seed(job)}

    def conditions(self, job: SegmentJob, inputs: dict[str, Artifact], ratio: int) -> list[Any]:
        original = np.load(inputs["draft"].file("frames.npy"))  # writable: torch takes the frames as they are
        return keyframe_conditions(job, ratio) + retake_conditions(original, span(job), ratio)

    def seed(self, job: SegmentJob) -> int:
        return retake_seed(int(job.seed), span(job)) if job.segment.retake is not None else int(job.seed)


class RetakeStage(Stage):
    """Frames a..b of the take, spliced into the original's finished frames."""

    name = "retake"
    version = 1
    inputs = ("upscale", "take")

    def params(self, job: SegmentJob) -> dict[str, Any]:
        return {"span": list(span(job)) if job.segment.retake is not None else None}

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        a, b = span(job)
        frames = np.load(inputs["upscale"].file("frames.npy"))  # a copy: the original entry stays as it is
        take = np.load(inputs["take"].file("frames.npy"), mmap_mode="r")
        if take.shape != frames.shape:
            raise ValueError(f"the take has frames {take.shape}, the original {frames.shape}")
        frames[a:b + 1] = take[a:b + 1]
        np.save(out / "frames.npy", frames)
        h, w = frames.shape[1:3]
        return {"frames": int(frames.shape[0]), "size": [int(w), int(h)], "span": [a, b]}


__all__ = ["RetakeDraftStage", "RetakeStage"]
