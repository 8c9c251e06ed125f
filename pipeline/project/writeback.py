"""The one owner of writes into a user's storyboard file from outside the editor.

The renderer caches an enhanced prompt in the storyboard so the next render (and the
TUI) reuse it. Done naively — load, change, save the whole model — it reverted what
another writer saved in between (3 of 3 times while a 1000-shot file took 4.8 s), turned
a symlinked storyboard into a plain copy and rewrote a 0444 file through the rename.
Here a write:

1. takes an advisory lock (``flock`` on the file's folder), which
   :func:`pipeline.project.storyboard.save` takes too;
2. re-reads the file *inside* the lock and changes only the one key of the one table
   (tomlkit, so comments and order stay), after checking the result still parses;
3. writes through symlinks to the real file, atomically, and never over a file its
   owner made read-only.

A write that cannot happen returns the reason instead of raising: an unwritable
storyboard must never abort a render (the prompt stays in the stage cache).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.project.files import check_writable, read_regular, real_target, storyboard_lock
from pipeline.project.storyboard import (
    MAX_STORYBOARD_BYTES,
    StoryboardError,
    atomic_write,
    keep_newlines,
    parse,
)

# Deferred imports: tomlkit — only a write-back needs the comment-preserving parser

#: What :func:`set_enhanced_prompt` returns for a segment whose user pinned its enhanced prompt.
PINNED = "enhance_lock = true: the user's enhanced prompt is kept"

def set_segment_fields(path: str | os.PathLike[str], segment_id: str, *, respect_lock: bool = False,
                       **changes: Any) -> str:
    """Merge ``changes`` into one segment's table of the file on disk; returns "" or why not.

    With ``respect_lock`` a segment whose ``enhance_lock`` is true is left alone (the
    user pinned its enhanced prompt).
    """
    import tomlkit
    from tomlkit.items import AoT


    target = real_target(path)
    try:
        with storyboard_lock(target):
            source = read_regular(target, MAX_STORYBOARD_BYTES).decode("utf-8")
            current = parse(source, path)  # a broken file is never written
            seg = current.segment(segment_id)
            if respect_lock and seg.enhance_lock:
                return PINNED
            if all(getattr(seg, k) == v for k, v in changes.items()):
                return ""
            doc = tomlkit.parse(source)
            aot = doc.get("segment")
            table = next(t for t in aot.body if t.get("id") == segment_id) if isinstance(aot, AoT) else None
            if table is None:
                return f"segment {segment_id} is not an [[segment]] table of {target.name}"
            for key, value in changes.items():
                table[key] = value
            text = keep_newlines(source, doc.as_string())
            parse(text, path)  # never write what could not be read back
            check_writable(target)
            atomic_write(target, text)
    except KeyError:
        return f"{Path(path).name} has no segment {segment_id!r} any more"
    except StoryboardError as exc:
        return str(exc)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return f"{Path(path)}: {reason}"
    return ""


def set_enhanced_prompt(path: str | os.PathLike[str], segment_id: str, text: str) -> str:
    """Cache an enhanced prompt in the storyboard; returns "" when saved, else why it was not."""
    return set_segment_fields(path, segment_id, respect_lock=True, enhanced_prompt=text)


__all__ = ["PINNED", "check_writable", "real_target", "set_enhanced_prompt", "set_segment_fields", "storyboard_lock"]
