"""The ``sulphur`` command.

Every subcommand imports what it needs inside its handler, so ``sulphur --help`` and
``sulphur edit`` never pay for torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.cli.cache_cmd import add_arguments as cache_arguments
from pipeline.cli.extend import add_arguments as extend_arguments
from pipeline.cli.models import add_arguments as models_arguments
from pipeline.cli.takes import add_arguments as takes_arguments

# Deferred imports: pipeline.cli.*, sulphur_tui.app — each command loads only its own module: `sulphur --help`
#   starts in well under a second


def _at_least(low: float, kind: type = float):  # noqa: ANN202 - an argparse type
    """An argparse type: a number of ``kind`` no smaller than ``low`` (``--idle-timeout -5``
    made the worker exit at once; ``--worst -1`` was taken without a word)."""

    def convert(text: str) -> float:
        value = kind(text)
        if not value >= low:  # nan too
            raise argparse.ArgumentTypeError(f"{text}: must be {low:g} or more")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in "invalid float value: ..."
    return convert


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sulphur", description="Local AI video studio: storyboard → 1920×1080 MP4.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="render storyboards/example.toml (built-in tiny model unless weights are set)")
    demo.add_argument("--json", action="store_true", help="print one JSON event per line")
    demo.add_argument("--out", type=Path, default=None, help="folder to copy the example into (default: ./sulphur-demo)")

    r = sub.add_parser("render", help="render a storyboard headlessly")
    r.add_argument("storyboard", type=Path)
    which = r.add_mutually_exclusive_group()  # both: the headless render took --segment alone, silently
    which.add_argument("--segment", action="append", metavar="ID", help="render only this segment (repeatable)")
    which.add_argument("--from", dest="from_", metavar="ID", help="render this segment and every one after it")
    r.add_argument("--preset", metavar="NAME", help="model preset (overrides [project] preset)")
    r.add_argument("--json", action="store_true", help="print one JSON event per line")
    r.add_argument("--attach", action="store_true", help="submit to the background worker and follow the job")
    r.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: pipeline the stages over every GPU of a Ray cluster")
    r.add_argument("--address", metavar="ADDR", default=None,
                   help="with --engine ray: auto (a running cluster), ray://HOST:10001; default: start one here")
    r.add_argument("--finishers", type=int, default=None, metavar="N",
                   help="with --engine ray: finish actors beside the draft actor (default: "
                        "$SULPHUR_RAY_FINISHERS, else one per other GPU, one beside it on a single GPU)")


    takes_arguments(sub.add_parser("takes", help="several seeds of one segment in parallel (Ray); --pick one"))


    models_arguments(sub.add_parser("models", help="list model presets and where their files are; "
                                                   "pull PRESET downloads them"))

    e = sub.add_parser("edit", help="open the storyboard editor (TUI)")
    e.add_argument("storyboard", type=Path)
    e.add_argument("--serve", action="store_true", help="serve the TUI in a browser (needs textual-serve); "
                   "prints a URL with this launch's token")
    e.add_argument("--host", default=None, help="with --serve: address to listen on (default localhost)")
    e.add_argument("--port", default=None, help="with --serve: TCP port (default 8000)")

    w = sub.add_parser("worker", help="run or stop the background render worker of a project")
    w.add_argument("--project", type=Path, default=None, help="project folder (default: current folder)")
    w.add_argument("--stop", action="store_true", help="ask the running worker to stop cleanly")
    w.add_argument("--idle-timeout", type=_at_least(0.1), default=None, help="seconds idle before the worker exits")
    w.add_argument("--foreground", action="store_true", help="run in this terminal instead of detaching")

    s = sub.add_parser("status", help="print the worker's status snapshot")
    s.add_argument("--project", type=Path, default=None)
    s.add_argument("--json", action="store_true")


    cache_arguments(sub.add_parser("cache", help="cache size per storyboard; --prune what none uses"))

    f = sub.add_parser("flicker", help="per-frame PSNR-Y flicker report of a video")
    f.add_argument("video", type=Path)
    f.add_argument("--json", action="store_true")
    f.add_argument("--worst", type=_at_least(0, int), default=5, metavar="N")
    f.add_argument("--seams", type=Path, default=None, metavar="DIR", help="renders/<story>/ folder: seam PSNR")


    extend_arguments(sub.add_parser("extend", help="continue a video clip with an image-to-video model"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `sulphur story.toml` is short for `sulphur edit story.toml`.
    if argv and argv[0].endswith(".toml") and not argv[0].startswith("-"):
        argv.insert(0, "edit")
    # Before anything touches CUDA: offloaded renders allocate blocks, tiles and activations
    # of every size, and expandable segments keep that from fragmenting the budget
    # (a 19B refine measured 2.7 GiB reserved-but-unallocated without it). A user's own
    # setting wins; processes started from here (worker, Ray) inherit it.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `sulphur models | head`: the reader left, which is not an error. Point stdout at
        # devnull so the interpreter's final flush does not raise again (Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # The last net: a file-system error no command words itself (a read-only folder, a
        # vanished disk) is still one line with the path and the reason, never a traceback.
        if os.environ.get("SULPHUR_DEBUG"):
            raise
        from pipeline.cli.output import os_error_line

        print(f"sulphur {args.command}: {os_error_line(exc)}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "edit" and args.serve:
        from pipeline.cli.serve import main as serve_main

        return serve_main(args)
    if args.command == "edit":
        from sulphur_tui.app import main as tui_main

        return tui_main(args)
    if args.command == "render":
        if args.attach:
            from pipeline.cli.attach import main_render_attach

            return main_render_attach(args)
        if args.engine == "ray":
            from pipeline.cli.ray import main as ray_main

            return ray_main(args)
        from pipeline.cli.headless import main_render

        return main_render(args)
    if args.command == "demo":
        from pipeline.cli.headless import main_demo

        return main_demo(args)
    if args.command == "models":
        from pipeline.cli.models import main as models_main

        return models_main(args)
    if args.command == "worker":
        from pipeline.cli.worker import main as worker_main

        return worker_main(args)
    if args.command == "status":
        from pipeline.cli.attach import main_status

        return main_status(args)
    if args.command == "cache":
        from pipeline.cli.cache_cmd import main as cache_main

        return cache_main(args)
    if args.command == "takes":
        from pipeline.cli.takes import main as takes_main

        return takes_main(args)
    if args.command == "extend":
        from pipeline.cli.extend import main as extend_main

        return extend_main(args)
    if args.command == "flicker":
        from pipeline.cli.flicker import main as flicker_main

        return flicker_main(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
