"""``sulphur takes FILE SEGMENT``: several seeds of one segment in parallel, then pick one.

Rendering the takes needs Ray (:func:`pipeline.render.engines.ray_engine.render_takes`); picking
one does not: it writes the take's seed and its prompt (locked) into the storyboard, so
the next render finds every stage of that take in the cache and the chain continues from
its last frame. Nothing here imports Ray or torch until takes are rendered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.project.selection import segment_index
from pipeline.project.storyboard import StoryboardError, load, save, with_segment


def seeds_for(storyboard_path: str | os.PathLike[str], segment: str, count: int) -> list[int]:
    """``count`` seeds starting at the segment's current one (so take 1 is what a render makes)."""
    sb = load(storyboard_path)
    index = segment_index(sb, segment)
    seg = sb.segments[index]
    base = seg.seed if seg.seed is not None else sb.project.seed + index
    return [base + i for i in range(max(1, count))]


def pick_take(storyboard_path: str | os.PathLike[str], segment: str, seed: int) -> str:
    """Make take ``seed`` the segment's (seed + locked prompt into the storyboard); returns its MP4."""
    sb = load(storyboard_path)
    manifest = sb.render_dir() / "takes" / segment / "takes.json"
    takes = json.loads(manifest.read_text()).get("takes", {}) if manifest.exists() else {}
    if str(seed) not in takes:
        raise StoryboardError(sb.path, f"segment '{segment}' has no take with seed {seed} "
                              f"(takes: {', '.join(sorted(takes)) or 'none'})")
    save(with_segment(sb, segment, seed=seed, enhanced_prompt=takes[str(seed)]["prompt"], enhance_lock=True))
    return takes[str(seed)]["path"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("storyboard", type=Path)
    p.add_argument("segment", metavar="SEGMENT", help="id of the segment to take again")
    p.add_argument("--seeds", type=int, default=4, metavar="N", help="how many takes (default 4)")
    p.add_argument("--seed", type=int, action="append", metavar="S", help="take exactly these seeds (repeatable)")
    p.add_argument("--pick", type=int, metavar="S", help="make take S the segment's; renders nothing")
    p.add_argument("--preset", metavar="NAME")
    p.add_argument("--address", metavar="ADDR", default=None, help="Ray address (default: start one here)")
    p.add_argument("--json", action="store_true", help="print one JSON event per line")


def main(args: argparse.Namespace) -> int:
    try:
        if args.pick is not None:
            path = pick_take(args.storyboard, args.segment, args.pick)
            print(f"{args.segment} now uses seed {args.pick} ({path}); `sulphur render` continues from it")
            return 0
        seeds = args.seed or seeds_for(args.storyboard, args.segment, args.seeds)
    except StoryboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        from pipeline.render.engines.ray_engine import render_takes
    except ImportError as exc:
        print(f"error: takes render in parallel through Ray: pip install 'sulphur[ray]' ({exc})", file=sys.stderr)
        return 1
    from pipeline.cli.headless import ProgressPrinter, json_printer, run_job

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
