"""Build a folder of model files once, atomically, even with several processes racing.

Tiny random-weight presets are built on first use by whichever process gets there first
(the CLI, the worker, parallel tests). A file lock serializes builders, the work happens
in a temp folder beside the target, and a rename publishes it whole; a marker file
records what it was built from, so a changed builder rebuilds it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.models.registry import sulphur_home

# Deferred imports: filelock — only building a tiny twin takes the lock

DONE_MARKER = ".complete"


def is_built(root: Path, marker: dict[str, Any]) -> bool:
    try:
        return json.loads((root / DONE_MARKER).read_text()) == marker
    except (OSError, ValueError):
        return False


def build_once(root: Path, build: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    """Run ``build(tmp)`` unless ``root`` was already built from ``marker``; returns ``root``."""
    from filelock import FileLock


    # Presets name tiny files as "${SULPHUR_HOME}/…" (expanded when looked up), so the
    # default home must be visible to expandvars too.
    os.environ.setdefault("SULPHUR_HOME", str(sulphur_home()))
    if is_built(root, marker):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if is_built(root, marker):  # another process finished while we waited
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
        try:
            build(tmp)
            (tmp / DONE_MARKER).write_text(json.dumps(marker, sort_keys=True))
            if root.exists():  # built from an older config (or half-built by hand): replace it
                shutil.rmtree(root)
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root
