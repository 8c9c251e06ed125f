"""``loras = [...]`` on a ``[[segment]]``: the user's LoRAs for that shot, stacked.

Each entry is a table: ``{ path = "style.safetensors", strength = 0.8 }`` names a local file
(relative to the storyboard's folder), ``{ repo = "owner/name", path = "file.safetensors" }``
a file on the Hugging Face Hub that ``sulphur models pull <storyboard>`` fetches. They are
applied on top of the preset's distilled LoRA for that shot only.

Parsing only (torch-free, no storyboard import: the storyboard imports this module); a bad
entry is a :class:`ValueError` whose text the storyboard turns into ``file:line:col``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import tomlkit

from pipeline.project.tables import check_keys

#: Stacked LoRAs one shot may have; past this a typo, not a look.
MAX_LORAS = 8
STRENGTH_RANGE = (-10.0, 10.0)
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_KEYS = ("path", "strength", "repo")


@dataclass(frozen=True)
class LoraRef:
    """One user LoRA of a shot: a file and how strongly it is applied."""

    path: str                # a local file, or the file's path inside ``repo``
    strength: float = 1.0
    repo: str = ""           # "owner/name" on the Hub, or "" for a local file

    @property
    def label(self) -> str:
        """How messages name it: ``owner/name/file`` for a Hub file, else the path as written."""
        return f"{self.repo}/{self.path}" if self.repo else self.path

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.repo:
            out = {"repo": self.repo, **out}
        out["strength"] = self.strength
        return out


def parse_loras(value: list[Any]) -> tuple[LoraRef, ...]:
    """The ``loras`` array as TOML gives it; raises ValueError saying what is wrong (and which entry)."""
    if len(value) > MAX_LORAS:
        raise ValueError(f"at most {MAX_LORAS} LoRAs a shot")
    out: list[LoraRef] = []
    for n, entry in enumerate(value):
        ref = _entry(n, entry)
        if any(r.path == ref.path and r.repo == ref.repo for r in out):
            raise ValueError(f"entry {n + 1}: {ref.label} is listed twice (give it one strength)")
        out.append(ref)
    return tuple(out)


def _entry(n: int, entry: Any) -> LoraRef:
    where = f"entry {n + 1}"
    if not isinstance(entry, dict):
        raise ValueError(f'{where}: expected {{ path = "file.safetensors", strength = 0.8 }}')
    check_keys(where, entry, _KEYS)
    path, repo, strength = entry.get("path"), entry.get("repo", ""), entry.get("strength", 1.0)
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f'{where}: needs path = "file.safetensors"')
    if PurePosixPath(path).suffix.lower() != ".safetensors":
        raise ValueError(f"{where}: {path}: a LoRA is a .safetensors file")
    if not isinstance(repo, str) or repo and not _REPO_RE.fullmatch(repo):
        raise ValueError(f'{where}: repo must be "owner/name" on the Hugging Face Hub')
    if repo and (path.startswith("/") or ".." in PurePosixPath(path).parts):
        raise ValueError(f"{where}: {path}: a path inside the repo, not a local path")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"{where}: strength must be a number")
    lo, hi = STRENGTH_RANGE
    if not lo <= strength <= hi:
        raise ValueError(f"{where}: strength must be between {lo:g} and {hi:g}")
    return LoraRef(path=path, strength=float(strength), repo=repo)


def loras_to_toml(loras: tuple[LoraRef, ...]) -> Any:
    """An array of inline tables (a plain list of dicts would become ``[[segment.loras]]`` tables)."""
    arr = tomlkit.array()
    for ref in loras:
        t = tomlkit.inline_table()
        t.update(ref.to_toml())
        arr.append(t)
    return arr
