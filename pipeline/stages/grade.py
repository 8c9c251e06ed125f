"""Grade: colour-match a segment's output frames to the film's reference (drift guard
"anchor+output"), between upscale and encode. See pipeline/quality/drift.py for the method."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.quality.drift import DEFAULT_METHOD, match_colors_chunks
from pipeline.stages.base import Artifact, SegmentJob, Stage, StageContext
from pipeline.stages.frame_files import FrameFile, write_frames_header

CHUNK = 8  # frames graded at a time: ~50 MB at 1080p


class GradeStage(Stage):
    name = "grade"
    version = 1
    inputs = ("upscale",)

    def params(self, job: SegmentJob) -> dict[str, Any]:
        ref = job.reference
        return {"strength": job.storyboard.project.drift_strength, "method": DEFAULT_METHOD,
                "reference": hashlib.sha256(ref.tobytes()).hexdigest() + str(ref.shape) if ref is not None else ""}

    def total_steps(self, job: SegmentJob) -> int:
        return job.frames

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        source = FrameFile(inputs["upscale"].file("frames.npy"))
        total = source.count
        chunks = (source.read(i, min(total, i + CHUNK)) for i in range(0, total, CHUNK))
        if job.reference is not None and total:
            device = "cuda" if ctx.plan.device == "cuda" else None
            chunks = match_colors_chunks(chunks, source.read(total - 1, total)[0], total, job.reference,
                                         job.storyboard.project.drift_strength, device=device)
        done = 0
        with open(out / "frames.npy", "wb") as sink:
            write_frames_header(sink, source.shape)
            for block in chunks:
                sink.write(np.ascontiguousarray(block).data)
                done += len(block)
                ctx.progress(self.name, done, total)
        return {"frames": total}
