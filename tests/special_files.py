"""Paths that are not regular files, as hostile input: what a storyboard, model or
reference path may turn out to be on a user's disk."""

from __future__ import annotations

import os
from pathlib import Path

KINDS = ("fifo", "directory", "devzero", "loop", "oversized", "unreadable")


def make_special(path: Path, kind: str) -> Path:
    """``path`` made into ``kind`` (one of :data:`KINDS`); it must not exist yet."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "oversized":
        path.write_bytes(b"# " + b"x" * (17 << 20) + b"\n")
    elif kind == "unreadable":
        path.write_text('[[segment]]\nid = "a"\nprompt = "x"\n')
        os.chmod(path, 0)
    else:
        raise ValueError(kind)
    return path
