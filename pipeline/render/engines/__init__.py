"""Render engines: who runs the stages of :mod:`pipeline.render.runner`.

``local`` (the default) is the single in-process runner, :func:`pipeline.render.runner.render`.
``ray`` (:mod:`pipeline.render.engines.ray_engine`) pipelines the same per-segment methods over
Ray actors, one GPU drafting while others refine, upscale and encode. Both share the
stage cache, so either can resume the other's render.

This module imports neither Ray nor torch: the engine's module is imported only when
that engine is asked for (the TUI and ``sulphur --help`` never pay for Ray).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.render.engines.settings import ENGINES, engine_setting, finishers_setting

if TYPE_CHECKING:
    from pipeline.wire.protocol import Event

# Deferred imports: pipeline.render.runner, pipeline.render.engines.ray_engine — the engine chosen loads; ray is
#   optional

def render(storyboard_path: str | os.PathLike[str], *, engine: str | None = None, address: str | None = None,
           emit: Callable[[Event], None] = lambda e: None, **kwargs: Any) -> Path:
    """:func:`pipeline.render.runner.render` through the chosen engine (default: the environment's).

    Same keyword arguments, return value and exceptions as the local runner; ``address``
    is Ray's (None: start a local Ray on this machine; ``auto``; ``ray://host:10001``).
    """
    if engine is None:
        engine, env_address = engine_setting()
        address = address or env_address
    if engine == "local":
        from pipeline.render.runner import render as local_render

        return local_render(storyboard_path, emit=emit, **kwargs)
    if engine == "ray":
        from pipeline.render.engines.ray_engine import render_ray

        return render_ray(storyboard_path, address=address, emit=emit, **kwargs)
    raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "engine_setting", "finishers_setting", "render"]
