"""Renaming a shot's id: the files it names and the anchors that point at them.

A shot's id names its outputs (``renders/<stem>/segments/<id>.mp4``, ``previews/<id>.png``,
``takes/<id>/``; see :mod:`pipeline.project.layout`) and its entries in ``manifest.json``
(rendered vs stale) and ``takes.json``. Renaming the id without them orphans the renders
(the next render makes them again under the new name); :func:`rename_outputs` moves them
and rewrites those entries, :func:`retarget_anchors` points another shot's ``anchor =
{ video = … }`` / ``{ image = … }`` at the moved file. Nothing in the stage cache depends
on the id, so a renamed shot's next render is all cache hits. Torch- and Textual-free.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.project.layout import RenderFolder
from pipeline.project.storyboard import Storyboard, atomic_write


@dataclass(frozen=True)
class Move:
    """One file or folder a rename moves."""

    source: Path
    target: Path


def planned_moves(renders: RenderFolder, old: str, new: str) -> list[Move]:
    """The existing outputs named by ``old`` and where they go under ``new``."""
    pairs = [(renders.segment(old), renders.segment(new)), (renders.preview(old), renders.preview(new)),
             (renders.takes(old), renders.takes(new))]
    return [Move(a, b) for a, b in pairs if a.exists()]


def rename_outputs(renders: RenderFolder, old: str, new: str) -> list[Move]:
    """Move ``old``'s outputs to ``new``'s names and rewrite the manifests that name them.

    Refuses (``FileExistsError``, nothing moved) when a target exists: it would be
    overwritten. Returns the moves made.
    """
    moves = planned_moves(renders, old, new)
    clash = [m.target for m in moves if m.target.exists()]
    if clash:
        raise FileExistsError(f"{clash[0]} already exists; nothing was renamed")
    done: list[Move] = []
    try:
        for m in moves:
            os.rename(m.source, m.target)
            done.append(m)
    except OSError:
        for m in reversed(done):  # all or nothing
            os.rename(m.target, m.source)
        raise
    _rekey_manifest(renders.manifest, old, new)
    _rewrite_takes(renders, old, new)
    return done


def _rekey_manifest(path: Path, old: str, new: str) -> None:
    """manifest.json: what ``old``'s MP4 was made from is now ``new``'s."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    segments = data.get("segments") if isinstance(data, dict) else None
    if isinstance(segments, dict) and old in segments:
        segments[new] = segments.pop(old)
        atomic_write(path, json.dumps(data, indent=1))


def _rewrite_takes(renders: RenderFolder, old: str, new: str) -> None:
    """takes.json of the moved folder: its segment and every clip's path under the new folder."""
    manifest = renders.takes_manifest(new)
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict):
        return
    data["segment"] = new
    for entry in (data.get("takes") or {}).values():
        if isinstance(entry, dict) and "path" in entry:
            entry["path"] = str(manifest.parent / Path(str(entry["path"])).name)
    atomic_write(manifest, json.dumps(data, indent=1))


def retarget_anchors(sb: Storyboard, moves: list[Move]) -> tuple[Storyboard, list[str]]:
    """``sb`` with every image/video anchor (and the drift reference) that named a moved file
    naming its new place (relative paths stay relative to the storyboard's folder); and the
    ids of those shots (``drift_reference`` for the reference)."""
    where: dict[Path, Path] = {}
    for m in moves:
        where[m.source.resolve()] = m.target
        if m.source.is_dir() or m.target.is_dir():  # a takes folder: every clip in it
            for child in m.target.iterdir():
                where[(m.source / child.name).resolve()] = child
    def moved(path: str) -> str | None:
        """``path`` (as the file has it) naming where its file went, or None if it did not move."""
        target = where.get(sb.resolve(path).resolve())
        if target is None:
            return None
        text = str(target) if Path(path).expanduser().is_absolute() else os.path.relpath(target, sb.folder)
        return Path(text).as_posix()

    changed, segments = [], []
    for seg in sb.segments:
        anchor = seg.anchor
        path = moved(anchor.path) if anchor.kind in ("image", "video") else None
        if path is not None:
            seg = replace(seg, anchor=replace(anchor, path=path))
            changed.append(seg.id)
        segments.append(seg)
    project = sb.project
    reference = moved(project.drift_reference) if project.drift_reference != "first" else None
    if reference is not None:  # the drift guard's reference image was a moved preview
        project = replace(project, drift_reference=reference)
        changed.append("drift_reference")
    return replace(sb, project=project, segments=tuple(segments)), changed


__all__ = ["Move", "planned_moves", "rename_outputs", "retarget_anchors"]
