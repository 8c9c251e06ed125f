"""Opening a user's audio or video file with PyAV, whatever encoding its tags are in."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

# Deferred imports: av — the TUI imports this layer and need not load FFmpeg to start


@functools.cache
def _strict_tags() -> bool:
    """PyAV before 19 decodes tags as strict UTF-8 unless ``av.open`` is given
    ``metadata_errors``; 19 dropped that argument and decodes with surrogateescape itself."""
    import av

    return int(av.__version__.split(".")[0]) < 19


def open_media(path: Path | str) -> Any:
    """``av.open(path)`` for reading: a clip whose tags are not UTF-8 opens on every PyAV."""
    import av

    if _strict_tags():
        return av.open(str(path), metadata_errors="ignore")
    return av.open(str(path))
