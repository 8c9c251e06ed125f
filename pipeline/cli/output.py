"""How the ``sulphur`` commands show a job: progress lines, ``--json`` events, exit codes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar

from pipeline.project.files import describe_os_error
from pipeline.project.storyboard import StoryboardError
from pipeline.render.errors import STORYBOARD_KINDS, RenderError
from pipeline.stages.base import Cancelled
from pipeline.wire import protocol
from pipeline.wire.protocol import Event

T = TypeVar("T")
Emit = Callable[[Event], None]


class ProgressPrinter:
    """One readable line per lifecycle event; step progress overwrites itself on a TTY."""

    def __init__(self, stream=None) -> None:  # noqa: ANN001 - a text stream
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, event: Event) -> None:
        out = self.stream
        match event:
            case protocol.StageStarted(segment=seg, stage=stage, plan=plan):
                print(f"{seg or 'film':>12} {stage:<8} started  ({plan})" if plan else
                      f"{seg or 'film':>12} {stage:<8} started", file=out)
            case protocol.StepProgress(segment=seg, stage=stage, step=i, total=n) if self.tty:
                print(f"\r{seg:>12} {stage:<8} {i}/{n}", end="", file=out, flush=True)
            case protocol.StageFinished(segment=seg, stage=stage, seconds=s, peak_allocated=pa):
                mem = f", peak {pa / 2**30:.2f} GiB" if pa else ""
                print(f"\r{seg or 'film':>12} {stage:<8} done in {s:.1f}s{mem}", file=out)
            case protocol.StageCached(segment=seg, stage=stage):
                print(f"{seg:>12} {stage:<8} cached", file=out)
            case protocol.PlanFallback(segment=seg, stage=stage, failed_plan=a, next_plan=b):
                print(f"{seg:>12} {stage:<8} out of memory with {a}; retrying with {b}", file=out)
            case protocol.SegmentDone(segment=seg, path=path):
                print(f"{seg:>12} → {path}", file=out)
            case protocol.FlickerReport(segment=seg, stage=stage, mean=m, minimum=lo):
                print(f"{seg:>12} {stage:<8} flicker PSNR-Y mean {m:.2f} dB, worst {lo:.2f} dB", file=out)
            case protocol.Log(level="debug") if not os.environ.get("SULPHUR_DEBUG"):
                pass  # timings for whoever debugs (--json and the editor keep them), not progress lines
            case protocol.Log(level=level, message=msg):
                print(f"{level}: {msg}", file=out)
            case protocol.ErrorEvent(message=msg):
                print(f"error: {msg}", file=out)
            case _:
                pass


def json_printer(event: Event) -> None:
    """``--json``: one event per line on stdout."""
    sys.stdout.buffer.write(protocol.encode(event))
    sys.stdout.flush()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like ctrl+c so every ``finally`` and
    ``except BaseException`` on the way out runs: a stage's partial cache folder is
    removed and an encoder child is killed (the default SIGTERM skips them all)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def terminate_like_ctrl_c() -> None:
    """Install the SIGTERM handler of a CLI render (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def _interrupted(exc: BaseException) -> KeyboardInterrupt | None:
    """The ctrl+c or SIGTERM behind ``exc`` (a stage wraps what it caught in a RenderError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def os_error_line(exc: OSError) -> str:
    """An ``OSError`` a command met outside any stage, in words: ``renders: Read-only file system``
    (never ``[Errno 30]`` or a bare ``30``)."""
    return describe_os_error(exc.filename, exc)


def run_job(work: Callable[[threading.Event], T], *, json_events: bool, emit: Emit) -> tuple[int, T | None]:
    """Run a render-like job for a CLI command; returns (exit code, result).

    One place decides how failures look on a terminal: a bad storyboard is exit 2 with
    its one-line file:line:col message, a failed render exit 1, a cancel exit 130 —
    and with ``--json`` the error is also an ``error`` event on stdout.
    """
    cancel = threading.Event()
    terminate_like_ctrl_c()
    try:
        return 0, work(cancel)
    except StoryboardError as exc:
        code, kind, message = 2, "storyboard", str(exc)
    except RenderError as exc:
        stop = _interrupted(exc)
        if stop is not None:  # ctrl+c inside a stage: an interrupt, not a failure
            cancel.set()
            print("cancelled; finished stages are kept in the cache", file=sys.stderr)
            return (143 if isinstance(stop, Terminated) else 130), None
        code, kind, message = 2 if exc.kind in STORYBOARD_KINDS else 1, exc.kind, exc.message
        if os.environ.get("SULPHUR_DEBUG") and exc.__cause__ is not None:
            # The one-line message is for users; whoever debugs a stage wants the stack.
            traceback.print_exception(exc.__cause__, file=sys.stderr)
    except (KeyboardInterrupt, Cancelled) as exc:
        cancel.set()
        print("cancelled; finished stages are kept in the cache", file=sys.stderr)
        return (143 if isinstance(exc, Terminated) else 130), None
    except BrokenPipeError:
        raise  # `sulphur render --json | head`: the reader left; main() ends quietly
    except OSError as exc:  # outside any stage: a read-only project folder, a vanished disk, ...
        code, kind, message = 1, "os_error", os_error_line(exc)
        if os.environ.get("SULPHUR_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
    if json_events:
        emit(protocol.ErrorEvent(kind=kind, message=message))
    print(f"error: {message}", file=sys.stderr)
    return code, None
