"""Which segments are rendered, and which renders are stale.

A segment is *rendered* when ``renders/<stem>/segments/<id>.mp4`` exists. It is
*stale* when what would be rendered now differs from what was rendered: its own
parameters or those of any segment it chains from (a shot anchored on the previous
shot changes when that shot changes).

What was rendered comes from ``renders/<stem>/manifest.json`` when the runner writes
one (``{"segments": {"<id>": {"digest": "<segment_digest>"}}}``); otherwise from the
digests the TUI saw when it opened the file or when a render finished. All of that
logic is :func:`disk_states` plus :func:`segment_digest`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from pipeline.project import layout
from pipeline.project.storyboard import Storyboard, atomic_write, segment_digest
from pipeline.wire.protocol import FlickerReport
from sulphur_tui.live import Seam


@dataclass(frozen=True)
class DiskRender:
    """What the render folder says about one segment."""

    rendered: bool
    stale: bool = False
    mtime: float | None = None  # when its mp4 was written


def read_manifest(storyboard: Storyboard) -> dict[str, str]:
    """Per-segment digests from the runner's manifest, if it writes one."""
    path = storyboard.renders.manifest
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        segs = data.get("segments", {})
        return {k: str(v.get("digest", "")) for k, v in segs.items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return {}


def disk_states(storyboard: Storyboard, baseline: dict[str, str]) -> dict[str, DiskRender]:
    """Rendered/stale state of every segment.

    ``baseline`` maps segment id → the digest it had when rendered, as the TUI knows
    it; a manifest digest wins over it. A segment with an mp4 and no known digest is
    taken as rendered (we cannot tell, and crying "stale" for every old render would
    teach users to ignore the glyph).
    """
    seg_dir = storyboard.renders.segments
    manifest = read_manifest(storyboard)
    out: dict[str, DiskRender] = {}
    for seg in storyboard.segments:
        mp4 = seg_dir / f"{seg.id}.mp4"
        try:
            mtime = mp4.stat().st_mtime
        except OSError:
            out[seg.id] = DiskRender(rendered=False)
            continue
        known = manifest.get(seg.id) or baseline.get(seg.id)
        stale = bool(known) and known != segment_digest(storyboard, seg.id)
        out[seg.id] = DiskRender(rendered=True, stale=stale, mtime=mtime)
    return out


def _memory_path(storyboard: Storyboard) -> Path:
    return layout.tui_renders(storyboard.path.parent)


def remembered_baseline(storyboard: Storyboard) -> dict[str, str]:
    """Digests of the renders on disk, as remembered across editor sessions.

    The editor notes a segment's digest when it sees the segment finish; the note
    holds while the mp4 is the one it saw (same mtime). A render the editor did not
    see (``sulphur render`` from a shell) is taken as made from the file as it is now.
    """
    try:
        notes = json.loads(_memory_path(storyboard).read_text(encoding="utf-8")).get(storyboard.stem, {})
    except (OSError, ValueError, AttributeError):
        notes = {}
    out: dict[str, str] = {}
    seg_dir = storyboard.renders.segments
    for seg in storyboard.segments:
        try:
            mtime = (seg_dir / f"{seg.id}.mp4").stat().st_mtime
        except OSError:
            continue
        note = notes.get(seg.id)
        if isinstance(note, dict) and note.get("mtime") == mtime and note.get("digest"):
            out[seg.id] = str(note["digest"])
        else:
            out[seg.id] = segment_digest(storyboard, seg.id)
    return out


def remember_render(storyboard: Storyboard, segment_id: str, digest: str) -> None:
    """Note what a finished segment was rendered from (best effort: a read-only
    project just forgets between sessions)."""
    try:
        mtime = storyboard.renders.segment(segment_id).stat().st_mtime
    except OSError:
        return

    def change(data: dict) -> None:
        data.setdefault(storyboard.stem, {})[segment_id] = {"digest": digest, "mtime": mtime}

    _update_memory(storyboard, change)


def _update_memory(storyboard: Storyboard, change: Callable[[dict], object]) -> None:
    """Read-modify-write .sulphur/tui-renders.json atomically; best effort (a UI cache)."""
    path = _memory_path(storyboard)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    change(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1))
    except OSError:
        pass


STAGE_HISTORY = 10


def remembered_stage_times(storyboard: Storyboard) -> dict[str, list[float]]:
    """Seconds of the last runs of each stage in this project (for ETAs before the
    current render has finished a stage of its own)."""
    try:
        data = json.loads(_memory_path(storyboard).read_text(encoding="utf-8")).get("_stage_seconds", {})
        return {k: [float(x) for x in v][-STAGE_HISTORY:] for k, v in data.items() if isinstance(v, list)}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def remember_stage_time(storyboard: Storyboard, stage: str, seconds: float) -> None:
    def change(data: dict) -> None:
        runs = data.setdefault("_stage_seconds", {}).setdefault(stage, [])
        runs.append(round(seconds, 3))
        del runs[:-STAGE_HISTORY]

    _update_memory(storyboard, change)


def remembered_outcome(storyboard: Storyboard) -> str:
    """How the last job this project's editor followed ended (the status line's news), so an
    editor opened later still says it, as the README promises; "" when none is remembered."""
    try:
        news = json.loads(_memory_path(storyboard).read_text(encoding="utf-8")).get(_outcome_key(storyboard), "")
    except (OSError, ValueError, AttributeError):
        return ""
    return news if isinstance(news, str) else ""


def remember_outcome(storyboard: Storyboard, news: str) -> None:
    _update_memory(storyboard, lambda data: data.__setitem__(_outcome_key(storyboard), news))


def _outcome_key(storyboard: Storyboard) -> str:
    """One per storyboard: the memory file is the folder's, and b.toml's editor must not report
    a.toml's film."""
    return f"_last_outcome:{storyboard.path.name}"


def remember_flicker(storyboard: Storyboard, report: FlickerReport, seam: Seam | None) -> None:
    """Keep the flicker of a segment's encoded video with its mp4's mtime, so an editor opened
    later draws the panel for the renders on disk (best effort, like the other notes)."""
    try:
        mtime = storyboard.renders.segment(report.segment).stat().st_mtime
    except OSError:
        return

    def change(data: dict) -> None:
        notes = data.setdefault(_flicker_key(storyboard), {})
        notes[report.segment] = {"mtime": mtime, "report": msgspec.to_builtins(report),
                                 "seam": dataclasses.astuple(seam) if seam else None}

    _update_memory(storyboard, change)


def remembered_flicker(storyboard: Storyboard) -> dict[str, tuple[FlickerReport, Seam | None]]:
    """The flicker noted for each segment whose mp4 is still the one measured."""
    try:
        notes = json.loads(_memory_path(storyboard).read_text(encoding="utf-8")).get(_flicker_key(storyboard), {})
    except (OSError, ValueError, AttributeError):
        return {}
    out: dict[str, tuple[FlickerReport, Seam | None]] = {}
    for seg in storyboard.segments:
        note = notes.get(seg.id) if isinstance(notes, dict) else None
        try:
            if note["mtime"] != storyboard.renders.segment(seg.id).stat().st_mtime:
                continue
            seam = note.get("seam")
            out[seg.id] = (msgspec.convert(note["report"], FlickerReport),
                           Seam(str(seam[0]), float(seam[1]), float(seam[2])) if seam else None)
        except (OSError, TypeError, KeyError, IndexError, ValueError, msgspec.ValidationError):
            continue  # no mp4 now, or a note this version cannot read: the panel waits for a render
    return out


def rename_flicker(storyboard: Storyboard, old: str, new: str) -> None:
    """A shot renamed with its files keeps its flicker note (the mp4 moved, its mtime with it)."""

    def change(data: dict) -> None:
        notes = data.get(_flicker_key(storyboard))
        if isinstance(notes, dict) and isinstance(notes.get(old), dict):
            notes[new] = notes.pop(old)
            if isinstance(notes[new].get("report"), dict):
                notes[new]["report"]["segment"] = new

    _update_memory(storyboard, change)


def _flicker_key(storyboard: Storyboard) -> str:
    return f"_flicker:{storyboard.path.name}"


def output_path(storyboard: Storyboard, segment_id: str | None = None) -> Path:
    """The segment's mp4 or the film; the render folder if neither exists yet."""
    rd = storyboard.render_dir()
    candidates = [storyboard.renders.segment(segment_id)] if segment_id else []
    candidates += [storyboard.renders.final, rd]
    for c in candidates:
        if c.exists():
            return c
    return rd


__all__ = ["segment_digest", "disk_states", "DiskRender", "read_manifest", "output_path", "remembered_baseline",
           "remember_render", "remembered_stage_times", "remember_stage_time", "remember_flicker", "remembered_flicker",
           "rename_flicker"]
