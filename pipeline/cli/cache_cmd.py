"""``sulphur cache``: what the stage cache holds per storyboard, and ``--prune``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.render.usage import CacheInUse, human, prune, report


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--project", type=Path, default=None, help="project folder (default: current folder)")
    p.add_argument("--prune", action="store_true",
                   help="remove cache entries that no storyboard of the folder used in its last render")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(args: argparse.Namespace) -> int:
    """Print sizes per storyboard (and what is unreferenced); ``--prune`` removes the latter."""
    project = Path(args.project or Path.cwd()).expanduser().resolve()
    if not project.is_dir():
        print(f"sulphur cache: {project}: not a folder", file=sys.stderr)
        return 2
    removed = freed = 0
    if args.prune:
        try:
            removed, freed = prune(project)
        except CacheInUse as exc:
            print(f"sulphur cache --prune: {exc}", file=sys.stderr)
            return 1
    rep = report(project)
    if args.json:
        print(json.dumps({"project": str(project), "total": rep.total, "storyboards": rep.per_storyboard,
                          "unreferenced": rep.unreferenced_bytes, "pruned": removed, "freed": freed}))
        return 0
    print(f"cache of {project}: {human(rep.total)}")
    for name, size in sorted(rep.per_storyboard.items()):
        print(f"  {name:<32} {human(size):>10}")
    print(f"  {'(used by no storyboard)':<32} {human(rep.unreferenced_bytes):>10}")
    if args.prune:
        print(f"pruned {removed} entries, freed {human(freed)}")
    elif rep.unreferenced:
        print("run `sulphur cache --prune` to remove what no storyboard uses")
    return 0
