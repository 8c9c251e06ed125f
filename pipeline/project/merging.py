"""Three-way merge of a storyboard: the editor's unsaved edits on top of another program's.

When the file changes on disk while the editor holds unsaved edits, "merge" keeps both: every
field the editor changed since it last read or wrote the file (the *base*) comes from the
editor, every other field from the disk. It is git's merge at the grain of a storyboard's
fields, not lines, so two edits in one shot's table do not clash unless they touch one key.
Where both sides changed the same field the editor's value wins and the field is reported.
Torch- and Textual-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from pipeline.project.storyboard import Segment, Storyboard

_T = TypeVar("_T")


@dataclass(frozen=True)
class Merge:
    """What a merge made, and what the user should be told about it."""

    storyboard: Storyboard
    #: "shot.field" (or "project.field", "shot" for a whole shot) taken from the disk.
    taken: tuple[str, ...]
    #: "shot.field" both sides changed, differently: the editor's value was kept.
    both_changed: tuple[str, ...]


def _fields(base: _T, mine: _T, theirs: _T, where: str, taken: list[str], both: list[str]) -> _T:
    """Per field: the editor's value where it changed since ``base``, else the disk's."""
    changes: dict[str, Any] = {}
    for f in fields(base):  # type: ignore[arg-type]
        if f.name == "id":
            continue  # the editor's id: a rename is the editor's edit, mapped by the caller
        b, m, t = getattr(base, f.name), getattr(mine, f.name), getattr(theirs, f.name)
        if m == b and t != b:
            changes[f.name] = t
            taken.append(f"{where}.{f.name}")
        elif m != b and t != b and t != m:
            both.append(f"{where}.{f.name}")
    return replace(mine, **changes) if changes else mine


def merge_storyboards(base: Storyboard, mine: Storyboard, theirs: Storyboard,
                      renames: Mapping[str, str] | None = None) -> Merge:
    """``mine`` and ``theirs`` both edited ``base``; keep both where they do not clash.

    ``renames`` maps a base id to the id the editor gave that shot (the disk still has the
    old one). Shots: the editor's order; a shot the disk added goes after the shot it follows
    on disk; a shot the disk deleted goes unless the editor changed it; a shot the editor
    deleted stays deleted.
    """
    renames = dict(renames or {})

    def as_mine(seg: Segment) -> Segment:
        return replace(seg, id=renames.get(seg.id, seg.id))

    base_by = {s.id: s for s in map(as_mine, base.segments)}
    theirs_list = [as_mine(s) for s in theirs.segments]
    theirs_by = {s.id: s for s in theirs_list}
    taken: list[str] = []
    both: list[str] = []
    project = _fields(base.project, mine.project, theirs.project, "project", taken, both)
    out: list[Segment] = []
    for seg in mine.segments:
        b, t = base_by.get(seg.id), theirs_by.get(seg.id)
        if b is None or (t is None and seg != b):
            out.append(seg)  # the editor added it, or changed a shot the disk deleted: the editor's
        elif t is not None:
            out.append(_fields(b, seg, t, seg.id, taken, both))
        else:
            taken.append(seg.id)  # deleted on disk, untouched here: deleted
    ids = {s.id for s in out}
    for i, seg in enumerate(theirs_list):
        if seg.id in base_by or seg.id in ids:
            continue  # not new on disk (or the editor added one of that id: the editor's)
        before = next((p.id for p in reversed(theirs_list[:i]) if p.id in ids), None)
        at = 0 if before is None else [s.id for s in out].index(before) + 1
        out.insert(at, seg)
        ids.add(seg.id)
        taken.append(seg.id)
    merged = replace(mine, project=project, segments=tuple(out))
    return Merge(merged, tuple(taken), tuple(both))


__all__ = ["Merge", "merge_storyboards"]
