"""The open storyboard: edits with undo/redo, saving, and noticing changes on disk.

Storyboards are frozen dataclasses, so an undo step is simply the previous value;
no diffing, no command objects. Saving goes through :func:`pipeline.project.storyboard.save`,
which merge-writes with tomlkit so comments and key order survive.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.project.files import read_regular, real_target
from pipeline.project.merging import Merge, merge_storyboards
from pipeline.project.storyboard import (
    MAX_STORYBOARD_BYTES,
    Segment,
    Storyboard,
    StoryboardError,
    atomic_write,
    new_segment_id,
    parse,
    read_source,
    render_toml,
    save,
    segment_id_problem,
)

UNDO_LIMIT = 500
NEW_PROMPT = "Describe the new shot here."


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class DiskState:
    """What the file on disk looked like when we last read or wrote it."""

    mtime_ns: int
    size: int
    digest: str


def _disk_state(path: Path) -> DiskState | None:
    """None when the file is gone. What is no readable storyboard (a FIFO, a folder, a loop of
    links, past 16 MiB) is never opened or read whole: it hashes as empty, and parsing says why."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError:
        return DiskState(0, -1, "")
    try:
        data = read_regular(path, MAX_STORYBOARD_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = b""
    return DiskState(st.st_mtime_ns, st.st_size, _digest(data))


def _read_with_state(path: Path) -> tuple[str, DiskState]:
    """The file's text and its state on disk, from one read (stat first: a write landing after
    the read still reads as a change)."""
    st = path.stat()
    text = read_source(path)
    return text, DiskState(st.st_mtime_ns, st.st_size, _digest(text.encode("utf-8")))


class _FileView(NamedTuple):
    """What the document knows of its file: the version last read or written (and its text and
    state on disk), and the base a merge after "keep mine" over a broken file starts from."""

    saved: Storyboard
    disk: DiskState | None
    good_text: str
    merge_base: Storyboard | None


class Document:
    """One storyboard file being edited."""

    def __init__(self, path: Path) -> None:
        self.path = real_target(path)  # resolve() raises RuntimeError on a loop of links
        text = read_source(self.path)  # a FIFO or /dev/zero would hang the editor before its first frame
        self.storyboard: Storyboard = parse(text, self.path)  # raises StoryboardError for a broken file
        self._good_text = text  # last text known to parse: the merge base if the disk copy breaks
        self.saved: Storyboard = self.storyboard
        self._merge_base: Storyboard | None = None  # what we last read or wrote, while "saved" says otherwise
        self.disk = _disk_state(self.path)
        # (storyboard, label, what we knew of the file then): the last is set on either side of
        # a merge only, so undoing one also forgets the file version it took in (the disk reads
        # as changed again, and the question comes back), and redoing it takes it in again.
        self._undo: list[tuple[Storyboard, str, _FileView | None]] = []
        self._redo: list[tuple[Storyboard, str, _FileView | None]] = []
        self._last_key = ""
        # Every rename made in this session (old id, new id), undone ones too: a save maps the
        # file's tables to the shots they became, so a renamed shot keeps its comments.
        self._renames: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ editing
    @property
    def dirty(self) -> bool:
        return self.storyboard != self.saved

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def apply(self, new: Storyboard, label: str, *, coalesce: str = "", view: _FileView | None = None) -> bool:
        """Make ``new`` current. Consecutive edits with the same ``coalesce`` key (typing
        in one field) become one undo step, as in a text editor. Returns False if nothing
        changed. ``view``: what we knew of the file before a merge (a step even if it took
        nothing), restored by its undo."""
        if new == self.storyboard and view is None:
            return False
        if not (coalesce and coalesce == self._last_key and self._undo):
            self._undo.append((self.storyboard, label, view))
            del self._undo[:-UNDO_LIMIT]
        self._redo.clear()
        self._last_key = coalesce
        self.storyboard = new
        return True

    def break_coalescing(self) -> None:
        """The next edit starts a new undo step (focus moved, another field, ...)."""
        self._last_key = ""

    def undo(self) -> str | None:
        if not self._undo:
            return None
        previous, label, view = self._undo.pop()
        self._redo.append((self.storyboard, label, self._file_view() if view else None))
        self.storyboard = previous
        if view:
            self._restore(view)
        self._last_key = ""
        return label

    def redo(self) -> str | None:
        if not self._redo:
            return None
        following, label, view = self._redo.pop()
        self._undo.append((self.storyboard, label, self._file_view() if view else None))
        self.storyboard = following
        if view:
            self._restore(view)
        self._last_key = ""
        return label

    def edit_segment(self, segment_id: str, *, coalesce: str = "", **changes: Any) -> bool:
        segs = tuple(replace(s, **changes) if s.id == segment_id else s for s in self.storyboard.segments)
        label = f"edit {', '.join(changes)} of {segment_id}"
        return self.apply(replace(self.storyboard, segments=segs), label, coalesce=coalesce)

    def add_segment(self, after: str | None) -> str:
        """A new shot after ``after`` (or at the end); returns its id."""
        sb = self.storyboard
        new = Segment(id=new_segment_id(sb), prompt=NEW_PROMPT,
                      frames=sb.segments[-1].frames if sb.segments else None)
        segs = list(sb.segments)
        at = sb.index(after) + 1 if after else len(segs)
        segs.insert(at, new)
        self.apply(replace(sb, segments=tuple(segs)), f"add {new.id}")
        return new.id

    def duplicate_segment(self, segment_id: str) -> str:
        sb = self.storyboard
        src = sb.segment(segment_id)
        base = segment_id if len(segment_id) < 58 else segment_id[:58]
        new_id = new_segment_id(sb, base=base)
        segs = list(sb.segments)
        segs.insert(sb.index(segment_id) + 1, replace(src, id=new_id))
        self.apply(replace(sb, segments=tuple(segs)), f"duplicate {segment_id}")
        return new_id

    def delete_segment(self, segment_id: str) -> str | None:
        """Delete; returns the id to select next, or None if refused (last shot)."""
        sb = self.storyboard
        if len(sb.segments) <= 1:
            return None
        i = sb.index(segment_id)
        segs = [s for s in sb.segments if s.id != segment_id]
        self.apply(replace(sb, segments=tuple(segs)), f"delete {segment_id}")
        return segs[min(i, len(segs) - 1)].id

    def move_segment(self, segment_id: str, delta: int) -> bool:
        sb = self.storyboard
        i = sb.index(segment_id)
        j = i + delta
        if not 0 <= j < len(sb.segments):
            return False
        segs = list(sb.segments)
        segs[i], segs[j] = segs[j], segs[i]
        return self.apply(replace(sb, segments=tuple(segs)), f"move {segment_id}")

    def rename_segment(self, segment_id: str, new_id: str, storyboard: Storyboard | None = None) -> bool:
        """Give a shot a new id (one undo step). ``storyboard``: the document with the rename
        already made and other shots' references updated (see pipeline.project.renaming).
        Raises ValueError with the storyboard's own message for an id it would refuse."""
        problem = segment_id_problem(self.storyboard, new_id, segment_id)
        if problem:
            raise ValueError(problem)
        if storyboard is None:
            segs = tuple(replace(s, id=new_id) if s.id == segment_id else s for s in self.storyboard.segments)
            storyboard = replace(self.storyboard, segments=segs)
        self.break_coalescing()
        if not self.apply(storyboard, f"rename {segment_id} to {new_id}"):
            return False
        self._renames.append((segment_id, new_id))
        return True

    def renames_since_saved(self) -> dict[str, str]:
        """The file's id → the id that shot has now, for every shot renamed (and not back)
        since the file was last read or written, following undo and redo."""
        return self._renames_between(self.saved, self.storyboard)

    def _renames_between(self, then: Storyboard, now_board: Storyboard,
                         more: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
        now = {s.id for s in now_board.segments}
        before = {s.id for s in then.segments}
        edges: dict[str, set[str]] = {}
        for a, b in [*self._renames, *more]:
            edges.setdefault(a, set()).add(b)
            edges.setdefault(b, set()).add(a)
        found: dict[str, str] = {}
        for old in sorted(before - now):
            seen, todo = {old}, [old]
            while todo:  # the ids this one was renamed to, and back, in any order
                for nxt in edges.get(todo.pop(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            match = sorted(i for i in seen if i in now and i not in before and i not in found.values())
            if match:
                found[old] = match[0]
        return found

    def randomise_seed(self, segment_id: str, rng: random.Random | None = None) -> int:
        seed = (rng or random.SystemRandom()).randrange(0, 2**31 - 1)
        self.edit_segment(segment_id, seed=seed)
        return seed

    # ------------------------------------------------------------------ disk
    def disk_changed(self) -> bool:
        """True when someone else changed the file since we last read or wrote it.

        stat first (cheap, every poll); hash only when mtime or size moved, so a touch
        without a content change is not reported.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.disk is not None
        except OSError:  # a loop of links: changed, and read_disk says why
            return True
        if self.disk and (st.st_mtime_ns, st.st_size) == (self.disk.mtime_ns, self.disk.size):
            return False
        now = _disk_state(self.path)
        if now and self.disk and now.digest == self.disk.digest:
            self.disk = now  # touched, same bytes
            return False
        return True

    def read_disk(self) -> Storyboard:
        """Parse the file as it is on disk now (raises StoryboardError)."""
        return parse(read_source(self.path), self.path)

    def reload(self) -> None:
        """Take the disk version; our unsaved edits become an undo step, not lost."""
        text, disk = _read_with_state(self.path)
        fresh = parse(text, self.path)
        self._good_text = text
        if fresh != self.storyboard:
            self.apply(fresh, "reload from disk")
        self.saved = fresh
        self.disk = disk
        self._merge_base = None

    def keep_mine(self) -> None:
        """Accept that the disk differs; the next save writes our version over it."""
        self.disk = _disk_state(self.path)
        # What is on disk is no longer what we saved: mark dirty so the user sees it.
        try:
            self.saved = self.read_disk()
            self._merge_base = None
        except StoryboardError:
            # Over a broken file: "saved" has no shots, so every shot reads as unsaved; a
            # later merge still starts from what we last read or wrote.
            self._merge_base = self._merge_base or self.saved
            self.saved = replace(self.saved, segments=())

    def merge_disk(self) -> Merge:
        """Take the disk's changes to everything we did not edit since the last read or write
        (one undo step); where both changed a field ours stays. Raises StoryboardError when
        the disk copy does not load, or when the merge would not (nothing changes then)."""
        text, disk = _read_with_state(self.path)  # the state of the bytes we merge
        theirs = parse(text, self.path)
        base = self._merge_base or self.saved
        merge = merge_storyboards(base, self.storyboard, theirs, self._renames_between(base, self.storyboard))
        to_file = self._renames_between(theirs, merge.storyboard, merge.links)
        parse(render_toml(merge.storyboard, text, to_file), self.path)  # offered only if it loads
        self.break_coalescing()
        self.apply(merge.storyboard, "merge with the file on disk", view=self._file_view())
        self._renames += merge.links  # the file's name of a shot both sides renamed
        self.saved, self.disk, self._good_text, self._merge_base = theirs, disk, text, None
        return merge

    def _file_view(self) -> _FileView:
        return _FileView(self.saved, self.disk, self._good_text, self._merge_base)

    def _restore(self, view: _FileView) -> None:
        self.saved, self.disk, self._good_text, self._merge_base = view

    def save(self, *, over_broken: bool = False) -> None:
        """Merge-write atomically. Raises StoryboardError if the disk copy is broken or
        our version does not validate; the caller must check :meth:`disk_changed` first.

        ``over_broken``: the user chose to keep their version over a disk copy that no
        longer parses; merge into the last text that did, so its comments survive.
        """
        renames = self.renames_since_saved()
        if over_broken:
            text = render_toml(self.storyboard, self._good_text, renames)
            parse(text, self.path)
            atomic_write(self.path, text)
        else:
            text = save(self.storyboard, self.path, renames)
        self._good_text = text
        self.saved = self.storyboard
        self.disk = _disk_state(self.path)
        self._merge_base = None
        self.break_coalescing()

    def adopt_external(self, fresh: Storyboard) -> None:
        """Take a disk change that does not conflict with us (e.g. the worker wrote an
        enhanced prompt while we had no unsaved edits): no undo step, not dirty."""
        self.storyboard = self.saved = fresh
        self._good_text, self.disk = _read_with_state(self.path)


def only_enhanced_prompts_differ(a: Storyboard, b: Storyboard) -> bool:
    """True if ``b`` is ``a`` with some enhanced prompts rewritten (what the worker does)."""
    if a.project != b.project or [s.id for s in a.segments] != [s.id for s in b.segments]:
        return False
    return all(replace(x, enhanced_prompt="") == replace(y, enhanced_prompt="")
               for x, y in zip(a.segments, b.segments, strict=True))


__all__ = ["Document", "DiskState", "only_enhanced_prompts_differ", "UNDO_LIMIT"]
