"""Three-way merge of a storyboard: the editor's unsaved edits on top of another program's.

When the file changes on disk while the editor holds unsaved edits, "merge" keeps both: every
field the editor changed since it last read or wrote the file (the *base*) comes from the
editor, every other field from the disk. It is git's merge at the grain of a storyboard's
fields, not lines, so two edits in one shot's table do not clash unless they touch one key.
Where both sides changed the same field the editor's value wins and the field is reported.
Fields a load checks against each other (a shot's length and the frames inside it) merge as
one. The caller still parses the result: a merge is offered only when it loads.
Torch- and Textual-free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from pipeline.project.storyboard import Segment, Storyboard

_T = TypeVar("_T")

#: Fields a load checks together: frames or seconds, and the retake and keyframes inside them.
_TOGETHER = (("frames", "seconds", "retake", "keyframes"),)
_MAX_ID = 64


@dataclass(frozen=True)
class Merge:
    """What a merge made, and what the user should be told about it."""

    storyboard: Storyboard
    #: (file id, our id) pairs the editor should remember as renames: a shot both sides renamed
    #: (ours kept). The next save and the next merge match shots by them. (A shot of ours that
    #: yields its id to one the file added is not linked: the file's id names the file's shot.)
    links: tuple[tuple[str, str], ...]
    #: What came from the disk: "shot.field", "project.field", "shot" (a shot it added or
    #: deleted), "shot (theirs: other-id)" for a shot it added under an id already in use here.
    taken: tuple[str, ...]
    #: "shot.field" both sides changed, differently: the editor's value was kept.
    both_changed: tuple[str, ...]


def _groups(obj: Any) -> list[tuple[str, ...]]:
    """The object's fields (not its id), those checked together as one group."""
    names = [f.name for f in fields(obj) if f.name != "id"]
    together = [g for g in _TOGETHER if set(g) <= set(names)]
    grouped = {n for g in together for n in g}
    return together + [(n,) for n in names if n not in grouped]


def _fields(base: _T, mine: _T, theirs: _T, where: str, taken: list[str], both: list[str]) -> _T:
    """Per field (or group): the editor's value where it changed since ``base``, else the disk's."""
    changes: dict[str, Any] = {}
    for group in _groups(base):
        b, m, t = ([getattr(x, n) for n in group] for x in (base, mine, theirs))
        if m == b and t != b:
            changes.update(zip(group, t, strict=True))
            taken.append(_label(where, group, b, t))
        elif m != b and t != b and t != m:
            both.append(_label(where, group, m, t))
    return replace(mine, **changes) if changes else mine


def _label(where: str, group: tuple[str, ...], one: list[Any], other: list[Any]) -> str:
    """``shot.field`` for each field of the group that differs between the two sides."""
    return "/".join(f"{where}.{n}" for n, x, y in zip(group, one, other, strict=True) if x != y)


def _renamed_on_disk(base: Storyboard, theirs: Storyboard) -> dict[str, str]:
    """Base id → disk id for each shot the disk renamed and otherwise left alone: gone from the
    disk under its old id, back under a new one with every other field as it was."""
    disk_ids = {s.id for s in theirs.segments}
    base_ids = {s.id for s in base.segments}
    new = [s for s in theirs.segments if s.id not in base_ids]
    moved: dict[str, str] = {}
    for b in base.segments:
        if b.id in disk_ids:
            continue
        same = [s for s in new if replace(s, id=b.id) == b and s.id not in moved.values()]
        if len(same) == 1:
            moved[b.id] = same[0].id
    return moved


def _fresh_id(wanted: str, used: Iterable[str]) -> str:
    """``wanted``, or ``wanted-2``, ``-3``…: the first not in ``used`` (ids stay 1-64 characters)."""
    used = set(used)
    numbered = re.fullmatch(r"(.+)-(\d{1,6})", wanted)
    stem, n = (numbered[1], int(numbered[2]) + 1) if numbered else (wanted, 2)
    while True:
        suffix = f"-{n}"
        candidate = stem[: _MAX_ID - len(suffix)] + suffix
        if candidate not in used:
            return candidate
        n += 1


def merge_storyboards(base: Storyboard, mine: Storyboard, theirs: Storyboard,
                      renames: Mapping[str, str] | None = None) -> Merge:
    """``mine`` and ``theirs`` both edited ``base``; keep both where they do not clash.

    ``renames`` maps a base id to the id the editor gave that shot. Shots: the editor's order
    (the disk's if only the disk reordered); a shot the disk added goes after the shot it
    follows on disk and keeps its id (an editor's shot of that id takes a fresh one, so the
    file's ids go on naming the file's shots); a shot the disk deleted goes unless the editor
    changed it; a shot the editor deleted stays deleted; a shot the disk renamed takes its new
    id unless the editor renamed it too.
    """
    renames = dict(renames or {})
    moved = _renamed_on_disk(base, theirs)
    taken: list[str] = []
    both: list[str] = []
    base_by = {renames.get(s.id, s.id): s for s in base.segments}  # by the editor's id
    disk_by_id = {s.id: s for s in theirs.segments}
    theirs_by = {renames.get(b.id, b.id): disk_by_id[moved.get(b.id, b.id)]
                 for b in base.segments if moved.get(b.id, b.id) in disk_by_id}
    mine_ids = {s.id for s in mine.segments}
    where = {t.id: editor_id for editor_id, t in theirs_by.items()}  # disk id → the editor's id
    disk_new = {s.id: s for s in theirs.segments if s.id not in where}  # shots the disk added
    used_ids = mine_ids | set(disk_by_id)
    links: list[tuple[str, str]] = []
    project = _fields(base.project, mine.project, theirs.project, "project", taken, both)
    out: list[Segment] = []
    disk_of: dict[str, str] = {}  # id in ``out`` → the disk's id of that shot
    for seg in mine.segments:
        b, t = base_by.get(seg.id), theirs_by.get(seg.id)
        clash = disk_new.get(seg.id)
        if clash is not None and clash != seg:  # the file added a shot under this id: it keeps it
            new_id = _fresh_id(seg.id, used_ids)
            used_ids.add(new_id)
            taken.append(f"{seg.id} (theirs; yours is {new_id} now)")
            seg = replace(seg, id=new_id)
        if b is None or (t is None and seg != replace(b, id=seg.id)):
            out.append(seg)  # the editor added it, or changed a shot the disk deleted: the editor's
        elif t is not None:
            merged = _fields(b, seg, t, seg.id, taken, both)
            out.append(_take_disk_rename(merged, b.id, t.id, renames, mine_ids, taken, both, links))
            disk_of[out[-1].id] = t.id
        else:
            taken.append(seg.id)  # deleted on disk, untouched here: deleted
    both += [f"{i} (deleted here, changed there)" for i, b in base_by.items()
             if i not in mine_ids and i in theirs_by and replace(theirs_by[i], id=b.id) != b]
    added_here = {s.id for s in out if s.id not in disk_of}
    disk_of.update({new: d for d, new in _add_disk_shots(out, theirs, where, added_here, taken).items()})
    kept_order = [s.id for s in mine.segments if s.id in base_by] == [i for i in base_by if i in mine_ids]
    if kept_order:  # the editor did not reorder: the disk's order (if it moved shots) stands
        disk_rank = {s.id: i for i, s in enumerate(theirs.segments)}
        out = _in_disk_order(out, {m: disk_rank[d] for m, d in disk_of.items()}, taken)
    merged_board = replace(mine, project=project, segments=tuple(out))
    return Merge(merged_board, tuple(links), tuple(taken), tuple(both))


def _in_disk_order(out: list[Segment], rank: dict[str, int], taken: list[str]) -> list[Segment]:
    """``out`` with the disk's shots in the disk's order; each of the editor's own shots stays
    after the shot it followed."""
    result = sorted((s for s in out if s.id in rank), key=lambda s: rank[s.id])
    for i, seg in enumerate(out):
        if seg.id in rank:
            continue
        prev = next((p.id for p in reversed(out[:i]) if p.id in rank), None)
        at = 0 if prev is None else [s.id for s in result].index(prev) + 1
        while at < len(result) and result[at].id not in rank:
            at += 1
        result.insert(at, seg)
    if [s.id for s in result] != [s.id for s in out]:
        taken.append("the order of the shots")
    return result


def _take_disk_rename(seg: Segment, base_id: str, disk_id: str, renames: Mapping[str, str], mine_ids: set[str],
                      taken: list[str], both: list[str], links: list[tuple[str, str]]) -> Segment:
    """The disk renamed this shot: take its id unless the editor renamed it too (or uses the id)."""
    if disk_id == base_id:
        return seg
    if base_id in renames or disk_id in mine_ids:
        if renames.get(base_id) != disk_id:
            both.append(f"{seg.id}.id")
            links.append((disk_id, seg.id))  # the file's shot of that id is ours of this one
        return seg
    taken.append(f"{disk_id}.id")
    return replace(seg, id=disk_id)


def _add_disk_shots(out: list[Segment], theirs: Storyboard, where: dict[str, str], added_here: set[str],
                    taken: list[str]) -> dict[str, str]:
    """The shots the disk added, each after the shot it follows there (and after the editor's
    own new shots that follow it); one whose id is taken here gets a fresh id (two editors
    adding a shot both call it ``shot-4``). ``where``: the editor's id of each disk shot the
    base has (the disk's own id if the merge took it). Returns disk id → id in ``out`` of the
    shots it placed."""
    placed: dict[str, str] = {}

    def in_out(disk_id: str) -> str | None:
        return next((i for i in (placed.get(disk_id), where.get(disk_id), disk_id) if i in ids), None)

    ids = {s.id for s in out}
    for i, seg in enumerate(theirs.segments):
        if seg.id in where:
            continue
        same = next((s for s in out if s == seg), None)
        if same is not None:
            placed[seg.id] = same.id  # the same shot added on both sides: once
            continue
        new_id = seg.id if seg.id not in ids else _fresh_id(seg.id, ids | {s.id for s in theirs.segments})
        before = next((in_out(p.id) for p in reversed(theirs.segments[:i]) if in_out(p.id)), None)
        at = 0 if before is None else [s.id for s in out].index(before) + 1
        while at < len(out) and out[at].id in added_here:
            at += 1
        out.insert(at, replace(seg, id=new_id))
        ids.add(new_id)
        placed[seg.id] = new_id
        taken.append(new_id if new_id == seg.id else f"{new_id} (theirs: {seg.id})")
    return placed


__all__ = ["Merge", "merge_storyboards"]
