"""Headless commands: ``sulphur render`` (in-process), ``sulphur demo``."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pipeline.cli.output import ProgressPrinter, json_printer, run_job

EXAMPLE = Path(__file__).resolve().parents[2] / "storyboards" / "example.toml"


def render_with_cli_output(storyboard: Path, *, json_events: bool, segments: list[str] | None = None,
                           from_segment: str | None = None, preset: str | None = None) -> int:
    from pipeline.render.runner import render

    emit = json_printer if json_events else ProgressPrinter()
    code, final = run_job(lambda cancel: render(storyboard, segments=segments, from_segment=from_segment,
                                                preset=preset, emit=emit, cancel=cancel),
                          json_events=json_events, emit=emit)
    if code == 0 and not json_events:
        print(final)
    return code


def main_render(args: argparse.Namespace) -> int:
    return render_with_cli_output(args.storyboard, json_events=args.json, segments=args.segment,
                                  from_segment=args.from_, preset=args.preset)


def main_demo(args: argparse.Namespace) -> int:
    """Copy the example storyboard into a folder of the user's and render it there."""
    folder = (args.out or Path("sulphur-demo")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / EXAMPLE.name
    if not target.exists():
        shutil.copyfile(EXAMPLE, target)
    print(f"rendering {target}", file=sys.stderr)
    return render_with_cli_output(target, json_events=args.json)
