"""The one exception a render raises when it cannot go on."""

from __future__ import annotations

from pipeline.wire import protocol

#: Refusals of what the storyboard asks, placed at its file:line:col before any stage: a CLI
#: exits 2 for them, as for a storyboard that does not load (1 is a render that failed).
STORYBOARD_KINDS = frozenset({"unknown_preset", "unsupported_key", "invalid_size", "bad_keep", "needs_anchor"})


class RenderError(RuntimeError):
    """A render that cannot go on; ``kind`` is machine-readable (oom, missing_models, stage_failed…)."""

    def __init__(self, kind: str, message: str, stage: str = "", segment: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.stage, self.segment = kind, message, stage, segment

    def to_event(self, job_id: str = "") -> protocol.ErrorEvent:
        """The error as the event clients receive."""
        return protocol.ErrorEvent(job_id=job_id, kind=self.kind, message=self.message, stage=self.stage,
                                   segment=self.segment)
