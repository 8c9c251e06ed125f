"""``sulphur models``: what each preset needs and where it is found; ``pull`` fetches it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.models.download import (
    PullError,
    folder_root,
    human,
    pull,
    pulled_files,
    pulled_path,
    where_found,
)
from pipeline.models.registry import Preset, all_presets, get_preset
from pipeline.models.user_loras import hub_file
from pipeline.models.verify import verify
from pipeline.project.storyboard import load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print every preset's files as JSON (for scripts)")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    pull = sub.add_parser("pull", help="download a preset's files (or a storyboard's Hub LoRAs: pull board.toml) "
                          "into the Hugging Face cache (resumable)")
    pull.add_argument("preset", metavar="PRESET|STORYBOARD")
    pull.add_argument("--dry-run", action="store_true", help="list the files and sizes; download nothing")
    verify = sub.add_parser("verify", help="load every component of a preset from its files (no render)")
    verify.add_argument("preset", metavar="PRESET")


def main(args: argparse.Namespace) -> int:
    if getattr(args, "models_command", None) == "pull":
        return main_pull(args)
    if getattr(args, "models_command", None) == "verify":
        return main_verify(args)
    return main_list(args)


def main_verify(args: argparse.Namespace) -> int:
    try:
        checks = verify(get_preset(args.preset))
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    for c in checks:
        print(c.line(), file=sys.stdout if c.ok else sys.stderr)
    return 0 if all(c.ok for c in checks) else 1


def main_pull(args: argparse.Namespace) -> int:
    try:
        preset = storyboard_loras(args.preset) if args.preset.endswith(".toml") else get_preset(args.preset)
    except ValueError as exc:  # a storyboard that does not load: its one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if preset.builder is not None:
        print(f"{preset.name} is built on this machine on first use; nothing to pull", file=sys.stderr)
        return 0
    try:
        paths = pull(preset, dry_run=args.dry_run)
    except PullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.dry_run:
        total = sum(p.stat().st_size for p in paths if p.is_file())
        nxt = f"sulphur render {args.preset}" if preset.family == "loras" else f"sulphur models verify {preset.name}"
        print(f"{preset.name}: {len(paths)} file(s) ready, {human(total)}; next: {nxt}", file=sys.stderr)
    return 0


def storyboard_loras(path: str) -> Preset:
    """The Hub LoRAs a storyboard's shots name (``loras = [{ repo = …, path = … }]``), as a preset
    of files, so the preset downloader fetches them the same way (resumable, into the HF cache)."""
    sb = load(path)
    files = {ref.label: hub_file(ref) for seg in sb.segments for ref in seg.loras if ref.repo}
    return Preset(name=sb.path.name, family="loras", description="the storyboard's Hub LoRAs",
                  files=tuple(files.values()))


def _file_row(f: Any) -> dict[str, Any]:
    path = f.local_path()
    parts = _parts(f, path)
    size = f.size
    if size is None and path is not None:  # what is on disk: a file, or a folder's files
        size = path.stat().st_size if path.is_file() else sum(q["size"] for q in parts or ())
    filename = list(f.filename) if isinstance(f.filename, tuple) else f.filename or None
    row: dict[str, Any] = {"role": f.role, "description": f.description, "repo": f.repo or None,
            "filename": filename, "revision": f.revision if f.repo else None,
            "url": f.url or None, "size": size, "sha256": f.sha256 or None, "env": f.env or None,
            "found": where_found(f), "path": str(path) if path else None}
    if parts is not None and f.repo:
        row["parts"] = parts
    return row


def _parts(f: Any, path: Path | None) -> list[dict[str, Any]] | None:
    """A folder's files as repo paths with sizes: what `pull` fetched, else what is in the folder."""
    if path is None or not path.is_dir():
        return None
    pulled = pulled_files(f) if f.repo and path == pulled_path(f) else None
    if pulled is not None:  # this spec's files only: a snapshot root also holds other specs' files
        return [{"filename": rel, "size": q.stat().st_size} for rel, q in pulled.items()]
    root = folder_root(f) if f.repo else ""
    return [{"filename": "/".join(filter(None, (root, q.relative_to(path).as_posix()))),
             "size": q.stat().st_size} for q in sorted(path.rglob("*")) if q.is_file()]


def main_list(args: argparse.Namespace) -> int:
    presets = all_presets()
    if args.json:
        rows = [{"name": p.name, "family": p.family, "description": p.description,
                 "built_in": p.builder is not None, "files": [_file_row(f) for f in p.files]} for p in presets]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for preset in presets:
        print(f"{preset.name}  ({preset.family}) — {preset.description}")
        if preset.builder is not None:
            print("    built in: random weights built from configs on first use (output is noise)")
        for f in preset.files:
            row = _file_row(f)
            if preset.builder is not None:
                print(f"    {f.role:<18} {f.description}  [{'built' if row['path'] else 'built on first use'}]")
                continue
            source = f.source() or f.description
            size = f"  {human(row['size'])}" if row["size"] is not None else ""
            found = "MISSING" if row["found"] == "missing" else row["found"]
            print(f"    {f.role:<18} {source}{size}  [{found}]")
            if row["path"]:
                print(f"{'':<23}{row['path']}")
            elif not (f.repo or f.url):
                print(f"{'':<23}put it at {f.where()}")
        if preset.builder is None and preset.missing():
            print(f"    get them: sulphur models pull {preset.name}")
        print()
    return 0
