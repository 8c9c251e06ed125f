"""Grade: colour-match a segment's output frames to the film's reference (drift guard
"anchor+output"), between upscale and encode. See pipeline/drift.py for the method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache import Artifact, digest
from pipeline.drift import DEFAULT_METHOD, match_colors_frames
from pipeline.stages.base import SegmentJob, Stage, StageContext


class GradeStage(Stage):
    name = "grade"
    version = 1
    inputs = ("upscale",)

    def params(self, job: SegmentJob) -> dict[str, Any]:
        ref = job.reference
        return {"strength": job.storyboard.project.drift_strength, "method": DEFAULT_METHOD,
                "reference": digest(ref.tobytes()) + str(ref.shape) if ref is not None else ""}

    def total_steps(self, job: SegmentJob) -> int:
        return 1

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        frames = np.load(inputs["upscale"].file("frames.npy"), mmap_mode="r")
        if job.reference is None:
            graded = np.asarray(frames)
        else:
            device = "cuda" if ctx.plan.device == "cuda" else None
            graded = match_colors_frames(frames, job.reference, job.storyboard.project.drift_strength,
                                         device=device)
        np.save(out / "frames.npy", graded)
        ctx.progress(self.name, 1, 1)
        return {"frames": int(len(graded))}
