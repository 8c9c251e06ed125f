"""The engine settings read from the environment, in one place for the worker, the CLI and Ray."""

from __future__ import annotations

import os

ENGINES: tuple[str, ...] = ("local", "ray")


def engine_setting() -> tuple[str, str | None]:
    """The engine a worker uses: ``$SULPHUR_ENGINE`` (local|ray) and ``$SULPHUR_RAY_ADDRESS``."""
    engine = os.environ.get("SULPHUR_ENGINE", "").strip().lower() or "local"
    if engine not in ENGINES:
        raise ValueError(f"SULPHUR_ENGINE={engine!r}: expected one of {', '.join(ENGINES)}")
    return engine, os.environ.get("SULPHUR_RAY_ADDRESS") or None


def finishers_setting() -> int | None:
    """``$SULPHUR_RAY_FINISHERS``: finish actors beside the draft actor (the CLI's ``--finishers``)."""
    raw = os.environ.get("SULPHUR_RAY_FINISHERS", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError(f"SULPHUR_RAY_FINISHERS={raw!r}: expected a whole number of actors (0 or more)")
    return int(raw)
