"""Where Sulphur keeps its own files (one function, imported by the registry and the downloader)."""

from __future__ import annotations

import os
from pathlib import Path


def sulphur_home() -> Path:
    """Sulphur's own cache: built tiny twins and files published outside the Hub.

    ``$SULPHUR_HOME`` wins; else ``$XDG_CACHE_HOME/sulphur`` (``~/.cache/sulphur``), as the
    XDG base-directory spec asks of a cache. Hub weights live in the Hugging Face cache.
    """
    if os.environ.get("SULPHUR_HOME"):
        return Path(os.environ["SULPHUR_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The spec says a relative $XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "sulphur"
