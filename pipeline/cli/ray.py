"""``sulphur render FILE --engine ray``: the headless render, its stages pipelined over Ray."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from pipeline.cli.output import ProgressPrinter, json_printer, run_job
from pipeline.render.engines.ray_engine import render_ray
from pipeline.render.errors import RenderError
from pipeline.wire import protocol
from pipeline.wire.protocol import Event


def main(args: argparse.Namespace) -> int:
    """``sulphur render FILE --engine ray [--address …]``: the headless render, over Ray."""
    finishers = getattr(args, "finishers", None)
    if finishers is not None and finishers < 0:  # was taken as none, after starting Ray
        print(f"sulphur render: --finishers {finishers}: must be 0 or more", file=sys.stderr)
        return 2
    printer = ProgressPrinter()

    def human(event: Event) -> None:
        if isinstance(event, protocol.StageStarted) and event.actor:
            print(f"{event.segment or 'film':>12} {event.stage:<8} started on {event.actor}", file=printer.stream)
        else:
            printer(event)

    emit = json_printer if args.json else human
    address = getattr(args, "address", None)

    def work(cancel: threading.Event) -> Path:
        try:
            return render_ray(args.storyboard, segments=args.segment, from_segment=args.from_, preset=args.preset,
                              emit=emit, cancel=cancel, address=address, finishers=getattr(args, "finishers", None))
        except ConnectionError as exc:
            raise RenderError("ray_unreachable", f"cannot reach the Ray cluster at {address}: {exc}") from None

    code, final = run_job(work, json_events=args.json, emit=emit)
    if code == 0 and not args.json:
        print(final)
    return code
