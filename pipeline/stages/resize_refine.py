"""Refine for families without a latent upsampler: an antialiased pixel resize.

Wan2.2, SVD, LTX-Video 0.9 and CogVideoX have no latent ×2 upsampler + refine pass in
Sulphur, so their "refine" only brings the draft frames to ``job.refine_size`` (same
contract as the LTX-2 refine: ``frames.npy`` uint8 (T, H, W, 3)), and the ESRGAN upscale
stage does the real detail work after it. Lanczos filters over the whole source
footprint when shrinking (antialiased) and stays sharp when enlarging.

The output is streamed into a ``.npy`` memmap one frame at a time, so host memory stays
at one frame whatever the clip length.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.stages.base import SegmentJob, Stage, StageContext

if TYPE_CHECKING:
    from pipeline.stages.base import Artifact

# Deferred imports: PIL — only running the stage needs it


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One uint8 H×W×3 frame resized to ``size`` = (width, height) with Lanczos."""
    from PIL import Image

    if (frame.shape[1], frame.shape[0]) == tuple(size):
        return np.ascontiguousarray(frame)
    img = Image.fromarray(np.ascontiguousarray(frame)).resize(tuple(size), Image.Resampling.LANCZOS)
    return np.asarray(img)


class ResizeRefineStage(Stage):
    name = "refine"
    version = 1
    inputs = ("draft",)

    def params(self, job: SegmentJob) -> dict[str, Any]:
        return {"size": list(job.refine_size), "method": "lanczos"}

    def total_steps(self, job: SegmentJob) -> int:
        return job.frames

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        src = np.load(inputs["draft"].file("frames.npy"), mmap_mode="r")
        width, height = job.refine_size
        total = len(src)
        dst = np.lib.format.open_memmap(out / "frames.npy", mode="w+", dtype=np.uint8,
                                        shape=(total, height, width, 3))
        for i in range(total):
            dst[i] = resize_frame(src[i], (width, height))
            ctx.progress(self.name, i + 1, total)
        dst.flush()
        del dst
        return {"frames": int(total), "size": [width, height]}
