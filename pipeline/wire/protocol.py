"""Typed messages shared by the renderer, the worker, the CLI and the TUI.

Every message is a tagged ``msgspec.Struct``: on the wire it is one JSON object per
line with a ``"type"`` field naming the class. The same classes serve ``sulphur render
--json``, the worker socket and the TUI, so a consumer written against one works
against all of them.

This module must stay import-light (no torch, no textual): the TUI imports it.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

# One line on the wire may not exceed this; larger lines are rejected before decoding
# so a hostile or broken client cannot make the worker buffer without bound.
MAX_LINE_BYTES = 1 << 20

STAGES: tuple[str, ...] = ("enhance", "draft", "refine", "upscale", "encode")


def _now() -> float:
    return time.time()


class Message(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=False):
    """Base of every wire message; ``type`` is the snake-cased class tag."""


# --------------------------------------------------------------------------- events


class Event(Message, kw_only=True):
    """Something that happened during a render. ``ts`` is wall-clock seconds."""

    job_id: str = ""
    ts: float = msgspec.field(default_factory=_now)


class JobQueued(Event, tag="job_queued", kw_only=True):
    storyboard: str
    segments: list[str]
    seeds: list[int] = []  # a takes job: these seeds of segments[0] (see TakeStarted)


class JobStarted(Event, tag="job_started", kw_only=True):
    storyboard: str
    segments: list[str]
    seeds: list[int] = []  # a takes job: these seeds of segments[0]


class StageStarted(Event, tag="stage_started", kw_only=True):
    segment: str
    stage: str
    plan: str = ""
    total_steps: int = 0
    actor: str = ""  # the Ray actor that ran it ("name@host GPU n"); "" = the local engine


class StepProgress(Event, tag="step_progress", kw_only=True):
    """High-rate: consumers keep only the newest per (segment, stage)."""

    segment: str
    stage: str
    step: int
    total: int


class StageFinished(Event, tag="stage_finished", kw_only=True):
    segment: str
    stage: str
    seconds: float
    peak_allocated: int = 0
    peak_reserved: int = 0
    peak_host_rss: int = 0
    plan: str = ""
    cache_key: str = ""
    actor: str = ""  # the Ray actor that ran it ("name@host GPU n"); "" = the local engine


class StageCached(Event, tag="stage_cached", kw_only=True):
    """A stage whose output was already in the cache: nothing ran."""

    segment: str
    stage: str
    cache_key: str
    actor: str = ""  # the Ray actor that ran it ("name@host GPU n"); "" = the local engine


class PlanFallback(Event, tag="plan_fallback", kw_only=True):
    """An out-of-memory error made the stage retry with a leaner memory plan."""

    segment: str
    stage: str
    failed_plan: str
    next_plan: str
    reason: str
    actor: str = ""  # the Ray actor that ran it ("name@host GPU n"); "" = the local engine


class Preview(Event, tag="preview", kw_only=True):
    segment: str
    stage: str
    path: str


class LatentPreview(Event, tag="latent_preview", kw_only=True):
    """The latent being denoised, as a small picture, after a sampling step: a linear map of
    its channels to RGB (no decoder; see pipeline/stages/latent_preview.py). ``rgb`` holds
    ``width`` × ``height`` pixels, 3 bytes each, row by row. High-rate: not journaled."""

    segment: str
    stage: str
    step: int
    width: int
    height: int
    rgb: bytes


class FlickerReport(Event, tag="flicker", kw_only=True):
    segment: str
    stage: str
    psnr: list[float]
    mean: float
    median: float
    minimum: float
    worst: list[int]
    seam_psnr: float | None = None


class DriftReport(Event, tag="drift", kw_only=True):
    segment: str
    first: dict[str, float]
    last: dict[str, float]
    drift: dict[str, float]
    guard: str = "off"


class VramSample(Event, tag="vram", kw_only=True):
    gpu: int
    name: str
    used: int
    total: int
    utilisation: int | None = None
    temperature: int | None = None
    torch_allocated: int = 0
    torch_reserved: int = 0


class SegmentDone(Event, tag="segment_done", kw_only=True):
    segment: str
    path: str
    frames: int
    seconds: float


class TakeStarted(Event, tag="take_started", kw_only=True):
    """One take (seed) of a takes job begins; the stage events that follow from the same
    ``actor`` belong to it until its :class:`TakeFinished`."""

    segment: str
    seed: int
    actor: str = ""  # the Ray actor that ran it ("name@host GPU n"); "" = the local engine


class TakeFinished(Event, tag="take_finished", kw_only=True):
    """A take's MP4 is in ``renders/<stem>/takes/<id>/`` and recorded in its ``takes.json``."""

    segment: str
    seed: int
    path: str
    still: str = ""  # its last frame as a PNG beside it ("" when it could not be written)
    actor: str = ""


class PromptEnhanced(Event, tag="prompt_enhanced", kw_only=True):
    """The worker wrote a new ``enhanced_prompt`` into the storyboard."""

    segment: str
    enhanced_prompt: str


class JobFinished(Event, tag="job_finished", kw_only=True):
    path: str
    seconds: float


class JobCancelled(Event, tag="job_cancelled", kw_only=True):
    segment: str = ""
    stage: str = ""


class ErrorEvent(Event, tag="error", kw_only=True):
    kind: str
    message: str
    stage: str = ""
    segment: str = ""


class Log(Event, tag="log", kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str


#: The states a job ends in (JobInfo.state): the worker never runs it again.
FINISHED = ("done", "failed", "cancelled")


class JobInfo(msgspec.Struct, kw_only=True):
    job_id: str
    storyboard: str
    segments: list[str]
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    seeds: list[int] = []  # a takes job: these seeds of segments[0]
    segment: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    error: str = ""


class StatusSnapshot(Event, tag="status", kw_only=True):
    """Everything a client needs to draw the current state after attaching."""

    pid: int
    project: str
    jobs: list[JobInfo]
    #: The model presets this worker renders (``sulphur models``): the editor, which holds no
    #: registry, checks the storyboard's against them on attaching. Empty: not told.
    presets: list[str] = []


EventType = (
    JobQueued
    | JobStarted
    | StageStarted
    | StepProgress
    | StageFinished
    | StageCached
    | PlanFallback
    | Preview
    | LatentPreview
    | FlickerReport
    | DriftReport
    | VramSample
    | SegmentDone
    | TakeStarted
    | TakeFinished
    | PromptEnhanced
    | JobFinished
    | JobCancelled
    | ErrorEvent
    | Log
    | StatusSnapshot
)

# ------------------------------------------------------------------------- requests


class Request(Message, kw_only=True):
    """A client → worker message; ``id`` is echoed in the reply."""

    id: str = ""


#: Seeds one takes job may render.
MAX_TAKES = 16


class Submit(Request, tag="submit", kw_only=True):
    """Queue a job. ``mode`` "takes": the one segment in ``segments``, once per seed in ``seeds``
    (into ``renders/<stem>/takes/<id>/``; the storyboard is not changed)."""

    storyboard: str
    mode: Literal["all", "segments", "from", "takes"] = "all"
    segments: list[str] = []
    seeds: list[int] = []
    preset: str = ""


class Cancel(Request, tag="cancel", kw_only=True):
    job_id: str = ""


class GetStatus(Request, tag="get_status", kw_only=True):
    pass


class Subscribe(Request, tag="subscribe", kw_only=True):
    pass


class Shutdown(Request, tag="shutdown", kw_only=True):
    pass


RequestType = Submit | Cancel | GetStatus | Subscribe | Shutdown

# --------------------------------------------------------------------------- replies


class Ack(Message, tag="ack", kw_only=True):
    id: str = ""
    job_id: str = ""


class Reject(Message, tag="reject", kw_only=True):
    """A request the worker could not take; the worker stays up."""

    id: str = ""
    error: str


ReplyType = Ack | Reject

AnyMessage = EventType | RequestType | ReplyType

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(EventType)
_request_decoder = msgspec.json.Decoder(RequestType)
_any_decoder = msgspec.json.Decoder(AnyMessage)


class ProtocolError(ValueError):
    """A line that is not a valid message of the expected kind."""


def encode(message: Message) -> bytes:
    """One JSON line, newline-terminated."""
    return _encoder.encode(message) + b"\n"


def _decode(decoder: msgspec.json.Decoder, line: bytes | str):  # noqa: ANN202
    if isinstance(line, str):
        line = line.encode()
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the {MAX_LINE_BYTES}-byte limit")
    try:
        return decoder.decode(line.strip())
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(str(exc)) from None


def decode_event(line: bytes | str) -> Event:
    return _decode(_event_decoder, line)


def decode_request(line: bytes | str) -> Request:
    return _decode(_request_decoder, line)


def decode(line: bytes | str) -> Message:
    """Any message: event, request or reply."""
    return _decode(_any_decoder, line)


def to_dict(message: Message) -> dict:
    return msgspec.to_builtins(message)
