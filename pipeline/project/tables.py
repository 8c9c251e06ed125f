"""Checks shared by the storyboard's inline tables (``keyframes``, ``loras``, ``audio``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def type_name(value: Any) -> str:
    """A TOML value's kind as an error message says it: "an integer", "a table"."""
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def check_keys(where: str, table: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """ValueError naming the first key of ``table`` that is not ``allowed``."""
    unknown = [k for k in table if k not in allowed]
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown key '{unknown[0]}' (allowed: {', '.join(allowed)})")
