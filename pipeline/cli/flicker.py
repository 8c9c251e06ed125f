"""``sulphur flicker VIDEO``: the per-frame PSNR-Y flicker report of a video (and its seams)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pipeline.quality.flicker import (
    FlickerError,
    FlickerStats,
    _json_db,
    analyze_seams,
    analyze_video,
    format_report,
    format_seams,
)


def main(args: argparse.Namespace) -> int:
    """``sulphur flicker VIDEO [--json] [--worst N] [--seams DIR]``; 2 on unusable input."""
    worst = max(0, int(getattr(args, "worst", 5) or 0))
    try:
        stats = analyze_video(args.video, worst=worst)
        seams = analyze_seams(args.seams, worst=worst) if getattr(args, "seams", None) else None
    except FlickerError as exc:
        print(f"sulphur flicker: {exc}", file=sys.stderr)
        return 2
    if seams is not None and seams["segments"] and \
            stats.frames == seams["segments"][-1]["offset"] + seams["segments"][-1]["frames"] \
            - int(seams["segments"][-1]["skip_first"]):
        # Where the film is the concatenation of the segments, show what the viewer sees
        # at each seam in the film itself too.
        for seam, d in zip(seams["_seams"], seams["seams"], strict=True):
            i = seam.frame - 1
            d["film_psnr"] = _json_db(stats.psnr[i]) if 0 <= i < len(stats.psnr) else None
    try:
        _print_report(stats, seams, as_json=bool(getattr(args, "json", False)))
    except BrokenPipeError:
        # `sulphur flicker x.mp4 --json | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print_report(stats: FlickerStats, seams: dict[str, Any] | None, as_json: bool) -> None:
    if as_json:
        out: dict[str, Any] = {"video": stats.to_dict(), "inf": "null means identical frames (PSNR +inf)"}
        if seams is not None:
            out["seams"] = {k: v for k, v in seams.items() if not k.startswith("_")}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_report(stats))
        if seams is not None:
            print(format_seams(seams))
