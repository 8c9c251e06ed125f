"""Field text ⇄ storyboard values, spelled the same in every form of the editor."""

from __future__ import annotations

import re
from collections.abc import Sequence

_SIZE = re.compile(r"^\s*(\d+)\s*[x×,\s]\s*(\d+)\s*$")


def parse_size(text: str) -> list[int]:
    """``1920x1080`` (or ``1920×1080``, ``1920, 1080``) → ``[1920, 1080]``, as TOML holds it."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError("expected WIDTHxHEIGHT, e.g. 1920x1080")
    return [int(m.group(1)), int(m.group(2))]


def format_size(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_sigmas(text: str) -> list[float]:
    """``0.85, 0.725, 0.4219, 0`` → floats (commas or spaces); the range is the storyboard's to check."""
    try:
        return [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError:
        raise ValueError("expected numbers separated by commas, e.g. 0.85, 0.725, 0.4219, 0") from None


def format_sigmas(sigmas: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in sigmas)


__all__ = ["format_sigmas", "format_size", "parse_sigmas", "parse_size"]
