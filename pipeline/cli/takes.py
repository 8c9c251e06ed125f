"""``sulphur takes FILE SEGMENT``: several seeds of one segment in parallel (Ray), or ``--pick`` one.

Nothing here imports Ray or torch until takes are rendered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli.output import ProgressPrinter, json_printer, run_job
from pipeline.project.storyboard import MAX_SEED, StoryboardError
from pipeline.render.takes import pick_take, seeds_for
from pipeline.wire.protocol import MAX_TAKES

# Deferred imports: pipeline.render.engines.ray_engine — ray is optional and loads only for `--engine ray`


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("storyboard", type=Path)
    p.add_argument("segment", metavar="SEGMENT", help="id of the segment to take again")
    p.add_argument("--seeds", type=int, default=4, metavar="N", help=f"how many takes (default 4, at most {MAX_TAKES})")
    p.add_argument("--seed", type=int, action="append", metavar="S", help="take exactly these seeds (repeatable)")
    p.add_argument("--pick", type=int, metavar="S", help="make take S the segment's; renders nothing")
    p.add_argument("--preset", metavar="NAME")
    p.add_argument("--address", metavar="ADDR", default=None, help="Ray address (default: start one here)")
    p.add_argument("--json", action="store_true", help="print one JSON event per line")


def _flag_problem(args: argparse.Namespace) -> str:
    """A flag out of range, named as the flag, before anything renders: --seed -5 rendered a whole
    take that --pick then refused; --seeds 0 rendered one, --seeds 100000 was an endless job."""
    if not 1 <= args.seeds <= MAX_TAKES:  # the worker's and the editor's cap on one takes job
        return f"--seeds {args.seeds}: must be between 1 and {MAX_TAKES}"
    for flag, seed in [("--seed", s) for s in args.seed or ()] + [("--pick", args.pick)]:
        if seed is not None and not 0 <= seed <= MAX_SEED:  # the storyboard's seed range
            return f"{flag} {seed}: must be between 0 and {MAX_SEED}"
    if len(set(args.seed or ())) > MAX_TAKES:
        return f"--seed: at most {MAX_TAKES} takes at once ({len(set(args.seed))} given)"
    return ""


def main(args: argparse.Namespace) -> int:
    problem = _flag_problem(args)
    if problem:
        print(f"sulphur takes: {problem}", file=sys.stderr)
        return 2
    try:
        if args.pick is not None:
            path = pick_take(args.storyboard, args.segment, args.pick)
            print(f"{args.segment} now uses seed {args.pick} ({path}); `sulphur render` continues from it")
            return 0
        seeds = args.seed or seeds_for(args.storyboard, args.segment, args.seeds)
    except StoryboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if seeds[-1] > MAX_SEED:  # counted up from a shot seed near the top of the range
        print(f"sulphur takes: --seeds {args.seeds}: seed {seeds[-1]} would pass {MAX_SEED}", file=sys.stderr)
        return 2
    try:
        from pipeline.render.engines.ray_engine import render_takes
    except ImportError as exc:
        print(f"error: takes render in parallel through Ray: pip install 'sulphur[ray]' ({exc})", file=sys.stderr)
        return 1
    emit = json_printer if args.json else ProgressPrinter()
    code, takes = run_job(lambda cancel: render_takes(args.storyboard, args.segment, seeds, preset=args.preset,
                                                      emit=emit, cancel=cancel, address=args.address),
                          json_events=args.json, emit=emit)
    if code:
        return code
    if not args.json:
        for seed, path in takes.items():
            print(f"seed {seed}: {path}")
        print(f"pick one: sulphur takes {args.storyboard} {args.segment} --pick SEED")
    return 0
