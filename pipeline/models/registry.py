"""Model presets as data, and the holder of loaded components.

A preset names a model family (which decides the stage implementations), where each
file comes from, and the defaults the storyboard may override. Families register
themselves in ``PRESETS`` from their own module (``pipeline/models/<family>.py``).
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Real-ESRGAN x2plus is a release asset of xinntao/Real-ESRGAN, not a Hub file (the URL its
#: own inference_realesrgan.py downloads).
ESRGAN_X2PLUS_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"


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


def _expand_home(path: str) -> str:
    """``$SULPHUR_HOME`` in a preset's path works even when the variable is unset (it has a default)."""
    return path.replace("${SULPHUR_HOME}", "$SULPHUR_HOME").replace("$SULPHUR_HOME", str(sulphur_home()))


@dataclass(frozen=True)
class ModelFile:
    """One file or folder a preset needs.

    ``path`` is a local path (``~`` and ``$VARS`` expanded); ``repo``/``filename`` name
    a Hugging Face location (``filename`` may be a folder pattern such as
    ``latent_upsampler/*``) at ``revision``; ``url`` is an HTTPS location for files
    published outside the Hub. ``size`` (bytes) and ``sha256`` are what was verified
    upstream, when known. ``env`` lets a user point at a file without editing code.
    """

    role: str
    description: str
    path: str = ""
    repo: str = ""
    filename: str = ""
    env: str = ""
    revision: str = "main"
    url: str = ""
    size: int | None = None
    sha256: str = ""

    def local_path(self) -> Path | None:
        """Where the file is found: ``$env`` first, then ``path``, then what ``sulphur models pull`` fetched."""
        for candidate in (os.environ.get(self.env, "") if self.env else "", self.path):
            if candidate:
                p = Path(os.path.expandvars(_expand_home(candidate))).expanduser()
                if p.exists():
                    return p
        if self.repo or self.url:
            from pipeline.models.download import pulled_path  # same layer; stdlib only

            return pulled_path(self)
        return None

    def where(self) -> str:
        """Where a missing file should come from, for one-line error messages."""
        if self.repo or self.url:
            source = f"{self.repo}/{self.filename}" if self.repo and self.filename else self.repo or self.url
            hint = f"{source} (`sulphur models pull` fetches it)"
        else:
            hint = _expand_home(self.path)
        return f"{hint}" + (f" (or set ${self.env})" if self.env else "")


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    description: str
    files: tuple[ModelFile, ...] = ()
    draft_size: tuple[int, int] = (512, 288)
    refine_size: tuple[int, int] = (1024, 576)
    steps: int = 8
    refine_sigmas: tuple[float, ...] = (0.85, 0.7250, 0.4219, 0.0)
    lora_strength: float = 0.7
    guidance_scale: float = 1.0
    frame_multiple: int = 8           # frames = k * frame_multiple + 1
    size_multiple: int = 32
    audio: bool = True
    takes_prompt: bool = True
    #: Builds missing files on first use (the tiny preset); None for real weights.
    builder: Callable[[], Path] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def round_frames(self, frames: int) -> int:
        m = self.frame_multiple
        if m <= 1:
            return max(1, frames)
        k = max(1, -(-(frames - 1) // m))
        return k * m + 1

    def round_size(self, size: tuple[int, int]) -> tuple[int, int]:
        m = self.size_multiple
        return (max(m, round(size[0] / m) * m), max(m, round(size[1] / m) * m))

    def missing(self) -> list[ModelFile]:
        if self.builder is not None:
            return []
        return [f for f in self.files if f.local_path() is None]

    def file(self, role: str) -> ModelFile:
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(f"preset {self.name} has no file for role {role!r}")

    def resolve(self, role: str) -> Path:
        """Local path of one of the preset's files, building a tiny preset on first use."""
        spec = self.file(role)
        path = spec.local_path()
        if path is None and self.builder is not None:
            self.builder()
            path = spec.local_path()
        if path is None:
            raise FileNotFoundError(f"{self.name}: missing {spec.description}: put it at {spec.where()}")
        return path

    def files_identity(self, roles: Iterable[str] | None = None) -> str:
        """Changes whenever the named files (default: all) change: names, sizes, mtimes.

        Cheap enough to compute per stage on multi-GB weights, unlike a content hash.
        """
        h = hashlib.sha256()
        for spec in self.files if roles is None else [self.file(r) for r in roles]:
            p = spec.local_path()
            if p is None:
                h.update(f"{spec.role}:missing".encode())
                continue
            files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
            for f in files:
                st = f.stat()
                rel = f.relative_to(p) if p.is_dir() else f.name
                h.update(f"{spec.role}:{rel}:{st.st_size}:{int(st.st_mtime)}".encode())
        return f"{self.name}:{h.hexdigest()[:16]}"


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    _load_families()
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise KeyError(f"unknown model preset {name!r} (known: {known})") from None


def all_presets() -> list[Preset]:
    _load_families()
    return list(PRESETS.values())


def _load_families() -> None:
    # Importing a family module registers its presets; kept lazy so `sulphur --help`
    # and the TUI never pay for it.
    # LTX-2 first, so the default presets list first.
    import importlib

    for family in ("ltx2", "wan", "ltxv", "svd", "cogvideox"):
        importlib.import_module(f"pipeline.models.{family}")


class LoadedModels:
    """Components kept between segments, evicted on demand to respect memory budgets.

    Stages call ``get(name, loader)``; the loader runs only when the component is not
    already held. ``evict`` drops a component and returns its memory to the allocator.
    """

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def get(self, name: str, loader: Callable[[], Any]) -> Any:
        if name not in self._items:
            self._items[name] = loader()
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def evict(self, *names: str) -> None:
        for name in names:
            self._items.pop(name, None)
        _release_memory()

    def evict_all(self, keep: Callable[[Any], bool] | None = None) -> None:
        """Drop every component (except those ``keep`` accepts) and return the memory."""
        self._items = {k: v for k, v in self._items.items() if keep is not None and keep(v)}
        _release_memory()

    def names(self) -> list[str]:
        return list(self._items)


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
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc: nothing to trim with
        pass
