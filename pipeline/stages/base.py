"""The one small interface every stage implements.

A stage turns input artifacts (cache entries of upstream stages) plus parameters into
files written into a fresh output folder. The runner owns caching, events, memory
plans and retries; a stage only declares what determines its output (``params``) and
does the work (``run``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.wire.protocol import Event, LatentPreview, StepProgress

if TYPE_CHECKING:
    import numpy as np

    from pipeline.memory.loaded import LoadedModels
    from pipeline.memory.plan import StagePlan
    from pipeline.models.registry import Preset
    from pipeline.project.storyboard import Project, Segment, Storyboard


class Cancelled(Exception):
    """Raised inside a stage when the user cancelled; the stage leaves no cache entry."""


@dataclass(frozen=True)
class Artifact:
    """A finished stage output (a cache entry): a folder of files plus the metadata the stage stored."""

    stage: str
    key: str
    path: Path
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass
class SegmentJob:
    """Everything resolved about one segment before its stages run."""

    storyboard: Storyboard
    segment: Segment
    index: int
    preset: Preset
    frames: int                       # after the preset's frame rule (e.g. 8k+1)
    seed: int
    fps: int
    draft_size: tuple[int, int]       # (width, height)
    refine_size: tuple[int, int]
    output_size: tuple[int, int]
    steps: int
    refine_sigmas: tuple[float, ...]
    lora_strength: float
    audio: bool
    prompt: str = ""                  # the prompt the draft uses (enhanced or raw)
    anchor: np.ndarray | None = None  # H×W×3 uint8 first-frame condition, or None for T2V
    anchor_digest: str = ""           # sha256 of the anchor bytes, part of the draft key
    reference: np.ndarray | None = None  # the film's colour reference (drift guard), H×W×3 uint8

    @property
    def drift_guard(self) -> str:
        return self.segment.drift_guard or self.storyboard.project.drift_guard

    @property
    def kept(self) -> int:
        """Frames of this segment the film keeps (``keep``): the next segment chains from the last."""
        return min(self.segment.keep or self.frames, self.frames)

    @property
    def project(self) -> Project:
        return self.storyboard.project


@dataclass
class StageContext:
    """What the runner lends a stage while it runs."""

    emit: Callable[[Event], None]
    cancel: threading.Event
    models: LoadedModels
    plan: StagePlan
    job_id: str = ""
    segment_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def progress(self, stage: str, step: int, total: int) -> None:
        self.emit(StepProgress(job_id=self.job_id, segment=self.segment_id, stage=stage, step=step, total=total))
        if self.cancel.is_set():
            raise Cancelled(stage)

    def latent_preview(self, previewer: Any, stage: str, step: int | None, latents: Any = None) -> None:
        """Send the small pictures of the latents that are ready (pipeline/stages/latent_preview.py):
        called from a sampler's ``callback_on_step_end`` with the step's latents (on a GPU the
        previous step's picture is sent), and with ``step`` None after sampling (the last one)."""
        ready = previewer.flush() if step is None else previewer.submit(step, latents)
        for done, (w, h, rgb) in ready:
            self.emit(LatentPreview(job_id=self.job_id, segment=self.segment_id, stage=stage, step=done,
                                    width=w, height=h, rgb=rgb))


class Stage(ABC):
    """One step of the pipeline. Subclasses are stateless; models live in ``ctx.models``."""

    name: ClassVar[str]
    #: Bump when the meaning of the output changes, so old cache entries are not reused.
    version: ClassVar[int] = 1
    #: Names of upstream stages whose artifacts ``run`` receives.
    inputs: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def params(self, job: SegmentJob) -> dict[str, Any]:
        """JSON-able values that, with the input artifacts' keys, determine the output."""

    @abstractmethod
    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any] | None:
        """Write the stage's files into ``out`` (an empty folder); return the artifact's meta dict."""

    def total_steps(self, job: SegmentJob) -> int:
        return 0
