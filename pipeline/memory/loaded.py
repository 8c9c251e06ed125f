"""The one owner of what a render process holds loaded.

Stages load through :meth:`LoadedModels.get` and give memory back only through
:meth:`LoadedModels.make_room`: every eviction (a plan's, a fallback's, a finished job's, a
stage's own clean-up) goes through that one method, which drops the references and returns
the memory to the allocators, so what is held can be reasoned about in one place.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

# Deferred imports: torch — the worker holds this registry before (and without) loading torch

log = logging.getLogger(__name__)


class LoadedModels:
    """Components kept between stages, segments and jobs, by name (``preset:role``, or a
    stage's own key); the loader of :meth:`get` runs only when the name is not held."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def get(self, name: str, loader: Callable[[], Any]) -> Any:
        if name not in self._items:
            self._items[name] = loader()
        return self._items[name]

    def peek(self, name: str) -> Any:
        """What is held under ``name``, or None; loads nothing."""
        return self._items.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return list(self._items)

    def make_room(self, *, drop: Iterable[str] | None = None, keep: Callable[[str, Any], bool] | None = None,
                  reason: str = "") -> list[str]:
        """Evict, then hand the memory back (gc, CUDA cache, heap trim); returns the names dropped.

        ``drop``: exactly these names (absent ones are fine). Without it: everything held,
        except what ``keep(name, model)`` accepts.
        """
        if drop is not None:
            gone = [n for n in dict.fromkeys(drop) if n in self._items]
        else:
            gone = [n for n, obj in self._items.items() if keep is None or not keep(n, obj)]
        for name in gone:
            del self._items[name]
        if gone:
            log.debug("evicted %s%s", ", ".join(gone), f" ({reason})" if reason else "")
        _release_memory()
        return gone


def _release_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the render side
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim_heap()


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them by default).

    Many weights are tensors of a few MB, below glibc's mmap threshold, so much of an
    evicted transformer can stay in the worker's RSS while the next load adds its own
    (the 19B segment bench peaked at 49 GiB of host RSS for plans of 13-23 GiB).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc: nothing to trim with
        pass
