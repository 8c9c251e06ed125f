"""Headless commands: ``sulphur render`` (in-process), ``sulphur demo``."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pipeline.cli.output import ProgressPrinter, json_printer, os_error_line, run_job
from pipeline.project.references import check_references
from pipeline.project.storyboard import StoryboardError, load
from pipeline.wire import protocol

# Deferred imports: pipeline.render.runner — loads the render stack only when a render starts, so `sulphur --help`
#   and errors stay instant

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


def preflight_storyboard(path: Path, json_events: bool, segments: list[str] | None = None) -> int:
    """Exit code 2 with the one-line file:line:col message for a storyboard that cannot render, else 0.

    Torch-free, so a bad file (or a FIFO, or an anchor typo in the last shot) is refused
    in a fraction of a second instead of after the renderer's imports.
    """
    try:
        sb = load(path)
        ids = [s.id for s in sb.segments]
        # Shots up to the last one asked for are drafted (a later shot's anchor is not read).
        last = max((ids.index(s) for s in segments or () if s in ids), default=len(ids) - 1)
        check_references(sb, set(ids[:last + 1]))
    except StoryboardError as exc:
        if json_events:
            json_printer(protocol.ErrorEvent(kind="storyboard", message=str(exc)))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main_render(args: argparse.Namespace) -> int:
    code = preflight_storyboard(args.storyboard, args.json, args.segment)
    if code:
        return code
    return render_with_cli_output(args.storyboard, json_events=args.json, segments=args.segment,
                                  from_segment=args.from_, preset=args.preset)


def main_demo(args: argparse.Namespace) -> int:
    """Copy the example storyboard into a folder of the user's and render it there."""
    folder = (args.out or Path("sulphur-demo")).resolve()
    if folder.exists() and not folder.is_dir():
        print(f"sulphur demo: {folder}: not a folder (--out names the folder to copy the example into)",
              file=sys.stderr)
        return 2
    target = folder / EXAMPLE.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(EXAMPLE, target)
    except OSError as exc:  # the first command a user runs, in a read-only folder: say so, no traceback
        print(f"sulphur demo: {os_error_line(exc)} (run it in a folder you can write, or give --out)",
              file=sys.stderr)
        return 1
    print(f"rendering {target}", file=sys.stderr)
    return render_with_cli_output(target, json_events=args.json)
