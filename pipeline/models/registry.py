"""Model presets as data, and the holder of loaded components.

A preset names a model family (which decides the stage implementations), where each
file comes from, and the defaults the storyboard may override. Families register
themselves in ``PRESETS`` from their own module (``pipeline/models/<family>.py``).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.models.home import sulphur_home
from pipeline.project.files import check_regular, describe_os_error

#: Real-ESRGAN x2plus is a release asset of xinntao/Real-ESRGAN, not a Hub file (the URL its
#: own inference_realesrgan.py downloads: xinntao/Real-ESRGAN@07e2323, the RealESRGAN_x2plus branch).
ESRGAN_X2PLUS_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"
#: Its content hash and size. xinntao publishes none; these are what independent projects
#: record for that asset (TensoRaws/ccrestoration ccrestoration/config/realesrgan_config.py, and
#: several download manifests found by exact search), all agreeing. A pull refuses any other bytes.
ESRGAN_X2PLUS_SHA256 = "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"
ESRGAN_X2PLUS_SIZE = 67_061_725


def _expand_home(path: str) -> str:
    """``$SULPHUR_HOME`` in a preset's path works even when the variable is unset (it has a default)."""
    return path.replace("${SULPHUR_HOME}", "$SULPHUR_HOME").replace("$SULPHUR_HOME", str(sulphur_home()))


@dataclass(frozen=True)
class ModelFile:
    """One file or folder a preset needs.

    ``path`` is a local path (``~`` and ``$VARS`` expanded); ``repo``/``filename`` name
    a Hugging Face location at ``revision``. ``filename`` is one file, a folder pattern
    such as ``latent_upsampler/*``, or a tuple of patterns that together make a folder
    (a pipeline folder without its transformer weights: ``("model_index.json", "vae/*")``;
    one file inside a folder: ``("transformer/config.json",)``); a folder is found where
    its patterns meet (see ``download.folder_root``). ``url`` is an HTTPS location for files
    published outside the Hub. ``size`` (bytes) and ``sha256`` are what was verified
    upstream, when known. ``env`` lets a user point at a file without editing code.
    """

    role: str
    description: str
    path: str = ""
    repo: str = ""
    filename: str | tuple[str, ...] = ""
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

    def unreadable(self, found: Path | None = None) -> str:
        """Why the path found for this file cannot be loaded — a FIFO, a device or a socket set
        through ``$env`` (a load would wait on it forever) — or "" (absent, a folder, or a file).

        ``found``: the path a caller already has from :meth:`local_path` (the lookup may scan
        the download cache); without it the file is looked up here."""
        p = found if found is not None else self.local_path()
        if p is None or p.is_dir():
            return ""
        try:
            check_regular(p)
        except OSError as exc:
            return describe_os_error(p, exc)
        return ""

    @property
    def patterns(self) -> tuple[str, ...]:
        """``filename`` as a tuple of patterns (empty when it names none)."""
        if isinstance(self.filename, tuple):
            return self.filename
        return (self.filename,) if self.filename else ()

    def source(self) -> str:
        """``repo/file``, ``repo/{a,b}`` for several patterns, the bare repo, or the URL."""
        if not self.repo:
            return self.url
        names = self.patterns
        if not names:
            return self.repo
        return f"{self.repo}/{names[0]}" if len(names) == 1 else f"{self.repo}/{{{','.join(names)}}}"

    def where(self) -> str:
        """Where a missing file should come from, for one-line error messages."""
        if self.repo or self.url:
            hint = f"{self.source()} (`sulphur models pull` fetches it)"
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

    for family in ("ltx2", "wan", "ltxv", "svd", "cogvideox"):
        importlib.import_module(f"pipeline.models.{family}")
