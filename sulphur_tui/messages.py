"""Messages that cross widget boundaries: from background threads to the app, and
from the document to every view of it. A widget's own messages live on the widget."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from pipeline.telemetry.host import HostSample
from pipeline.wire.protocol import Event, LatentPreview, StepProgress, VramSample


@dataclass
class WorkerEvent(Message):
    """One protocol event from the worker (or a replay), posted from a thread. ``history``:
    read back from the worker's journal on attaching (drawn, not announced or remembered)."""

    event: Event
    history: bool = False

    def can_replace(self, message: Message) -> bool:
        # High-rate telemetry replaces its own older, unprocessed copy so no backlog
        # builds while the UI is busy; everything else is kept in order.
        if not isinstance(message, WorkerEvent):
            return False
        new, old = self.event, message.event
        if isinstance(new, StepProgress) and isinstance(old, StepProgress):
            return (new.segment, new.stage) == (old.segment, old.stage)
        if isinstance(new, VramSample) and isinstance(old, VramSample):
            return new.gpu == old.gpu
        if isinstance(new, LatentPreview) and isinstance(old, LatentPreview):
            return True  # only the newest picture is worth drawing
        return False


@dataclass
class GpuSamples(Message):
    """A fresh NVML reading of every local GPU (empty list: no GPU)."""

    samples: list[VramSample]
    reason: str = ""  # why there are none (read in the thread: the monitor's lock may be held)
    host: HostSample | None = None  # the host's RAM and CPU at the same time

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GpuSamples)


@dataclass
class WorkerConnection(Message):
    """The link to the worker came up or went down; ``detail`` says why, for the status line.
    ``connected`` is False only when no worker process holds the project: its jobs are over."""

    connected: bool
    detail: str = ""


@dataclass
class DocumentChanged(Message):
    """The storyboard value changed (edit, undo, reload); views redraw from the document."""

    select: str | None = None  # segment id to select after the change
    reason: str = ""


@dataclass
class DiskChanged(Message):
    """The file on disk no longer matches what we read or wrote."""


__all__ = ["WorkerEvent", "GpuSamples", "WorkerConnection", "DocumentChanged", "DiskChanged"]
