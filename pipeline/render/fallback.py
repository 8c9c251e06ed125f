"""The one memory-fallback loop: a stage runs down its ladder of memory plans.

An out-of-memory error returns what the failed attempt held and tries the next, leaner
plan; any other error is the stage's failure. Every stage of every engine goes through
:func:`run_down_ladder`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from pipeline.memory import planner as memory
from pipeline.memory.loaded import LoadedModels
from pipeline.memory.plan import StagePlan
from pipeline.project.files import describe_os_error
from pipeline.render.errors import RenderError
from pipeline.stages.base import Cancelled
from pipeline.wire import protocol
from pipeline.wire.protocol import Event

T = TypeVar("T")


def run_down_ladder(stage: str, segment: str, plans: Sequence[StagePlan], attempt: Callable[[StagePlan], T], *,
                    models: LoadedModels, cancel: threading.Event, emit: Callable[[Event], None]) -> T:
    """``attempt(plan)`` for each plan in turn until one does not run out of memory.

    Between attempts nothing of the failed attempt is kept (not even its exception), every
    loaded model is evicted (see :func:`release_after_oom`) and a ``PlanFallback`` event names both plans. Cancellation propagates; when every plan ran
    out of memory the render fails with kind ``oom``.
    """
    last_error = ""
    for i, plan in enumerate(plans):
        if cancel.is_set():
            raise Cancelled(stage)
        try:
            return attempt(plan)
        except Cancelled:
            raise
        except BaseException as exc:
            kind = memory.oom_kind(exc)
            if kind is None:
                raise RenderError("stage_failed", f"{stage} failed: {_in_words(exc)}", stage, segment) from exc
            last_error = str(exc)  # not the exception: its traceback pins the failed attempt's tensors
        nxt = plans[i + 1] if i + 1 < len(plans) else None
        release_after_oom(models, kind, nxt)
        if nxt is not None:
            emit(protocol.PlanFallback(segment=segment, stage=stage, failed_plan=plan.describe(),
                                       next_plan=nxt.describe(), reason=last_error))
    tried = ", ".join(p.describe() for p in plans)
    raise RenderError("oom", f"{stage} ran out of memory with every plan ({tried}): {last_error}. "
                      "Lower draft_size/frames or raise vram_budget_gb/ram_budget_gb.", stage, segment)


def _in_words(exc: BaseException) -> str:
    """What went wrong in a stage, for the one-line error: an ``OSError`` as its file and reason
    (``.sulphur/cache: Not a directory``, not ``NotADirectoryError: [Errno 20] ...``), else the
    exception's type and message."""
    if isinstance(exc, OSError) and exc.strerror:
        return describe_os_error(exc.filename, exc)
    return f"{type(exc).__name__}: {exc}"


def release_after_oom(models: LoadedModels, kind: str, nxt: StagePlan | None) -> None:
    """Return every byte before the leaner attempt, except a transformer under Sulphur's
    streamer when the GPU ran out and the next plan streams too: it is re-streamed in place
    (its resident blocks go back to the host), which costs seconds where a reload costs a
    full load and a second host copy."""
    restream = (kind == "cuda" and nxt is not None
                and nxt.options.get("streamer") == "sulphur")
    if restream:
        # offload pulls in torch and diffusers hooks: only needed once a streamed plan ran out
        from pipeline.memory.offload import streamer_of

        models.make_room(keep=lambda name, obj: streamer_of(obj) is not None, reason="out of memory; re-stream")
    else:
        models.make_room(reason="out of memory")
