"""``sulphur extend CLIP --prompt …``: continue a video clip with an image-to-video model."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from pipeline.cli.output import ProgressPrinter, json_printer, os_error_line, run_job
from pipeline.project.storyboard import MAX_FRAMES, MAX_SEED, MAX_STEPS
from pipeline.render.errors import RenderError
from pipeline.render.extend import DEFAULT_PRESET, extend, out_problem, probe


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``sulphur extend`` flags (pipeline/cli/main.py mounts them as a subcommand)."""
    p.add_argument("clip", type=Path, help="video to continue (its last frame is the anchor)")
    p.add_argument("--prompt", required=True, help="what happens next (ignored by presets without a prompt, e.g. SVD)")
    p.add_argument("--model", default=DEFAULT_PRESET, metavar="PRESET", help=f"model preset (default {DEFAULT_PRESET})")
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="frames to generate, rounded to the model's rule (default: 2 s at the clip's fps)")
    p.add_argument("--out", type=Path, default=None, metavar="PATH", help="output video (default CLIP-extended.mp4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's)")
    p.add_argument("--enhance", action="store_true", help="rewrite the prompt with the enhancer LLM first")
    p.add_argument("--json", action="store_true", help="print one JSON event per line")
    return p


def _flag_problem(args: argparse.Namespace) -> str:
    """A flag the storyboard would refuse, named as the flag (checked here, the error named the
    storyboard extend writes, a file the user never made), or an --out that cannot be written
    (found only after the whole render, or its missing folders were made)."""
    if not args.prompt.strip():
        return "--prompt: must not be empty"
    for flag, value, low, high in (("--frames", args.frames, 1, MAX_FRAMES), ("--steps", args.steps, 1, MAX_STEPS),
                                   ("--seed", args.seed, 0, MAX_SEED)):
        if value is not None and not low <= value <= high:
            return f"{flag} {value}: must be between {low} and {high}"
    return out_problem(args.clip, args.out)


def main(args: argparse.Namespace) -> int:
    problem = _flag_problem(args)
    if problem:
        print(f"sulphur extend: {problem}", file=sys.stderr)
        return 2
    try:
        probe(args.clip)  # torch-free: a FIFO, an empty or a broken clip is refused in words, at once
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    emit = json_printer if args.json else ProgressPrinter()

    def work(cancel: threading.Event) -> Path:
        try:
            return extend(args.clip, args.prompt, preset=args.model, frames=args.frames, out=args.out,
                          seed=args.seed, steps=args.steps, enhance=args.enhance, emit=emit, cancel=cancel)
        except OSError as exc:  # an unwritable --out folder: its errno in words, not "error: 30"
            raise RenderError("extend", os_error_line(exc)) from None
        except (ValueError, KeyError) as exc:  # unreadable clip, unknown preset, …
            raise RenderError("extend", str(exc.args[0] if exc.args else exc)) from None

    code, out = run_job(work, json_events=args.json, emit=emit)
    if code == 0 and not args.json:
        print(out)
    return code
