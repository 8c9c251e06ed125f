"""Content-addressed stage cache under ``<project>/.sulphur/cache``.

An entry's key is the SHA-256 of everything that determines it: stage name and
version, the stage's parameters (model identity included) and the keys of its input
artifacts. An entry is built in a temporary folder beside its final place and renamed
into place only when complete, so a crash or OOM mid-stage never leaves a poisoned
entry; the next run simply finds no entry and runs the stage again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.project.files import pid_alive
from pipeline.stages.base import Artifact
from pipeline.wire.framing import private_dir

_META = "meta.json"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stage_key(stage: str, version: int, params: dict[str, Any], inputs: dict[str, str]) -> str:
    blob = json.dumps({"stage": stage, "version": version, "params": params, "inputs": inputs},
                      sort_keys=True, separators=(",", ":"), default=str)
    return digest(blob.encode())


class StageCache:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        #: "stage/key" of every entry this object found or built: what a render used
        #: (pipeline.render.usage records it, so `sulphur cache --prune` keeps it).
        self.used: set[str] = set()

    def _dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / key

    def get(self, stage: str, key: str) -> Artifact | None:
        path = self._dir(stage, key)
        meta_path = path / _META
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise ValueError("meta.json is not an object")
        except (OSError, ValueError):
            meta = None
        if meta is None or not _intact(path, meta):
            # A damaged entry (a power loss before fsync existed, a disk error, a hand edit):
            # treat it as missing, so the stage runs again instead of every rerun failing.
            self._discard(path)
            return None
        self.used.add(f"{stage}/{key}")
        return Artifact(stage=stage, key=key, path=path, meta=meta.get("meta", {}))

    def _discard(self, path: Path) -> None:
        """Move a bad entry out of the way (rename first: a reader never sees half of it)."""
        aside = path.with_name(f".{path.name}.{os.getpid()}.bad.partial")
        try:
            os.replace(path, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    @contextmanager
    def build(self, stage: str, key: str, params: dict[str, Any] | None = None) -> Iterator[_Building]:
        """Yield a writable temp folder; on clean exit it becomes the entry atomically."""
        final = self._dir(stage, key)
        if self.root.parent.name == ".sulphur":
            private_dir(self.root.parent)  # the project's state is its owner's only
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.{os.getpid()}.", suffix=".partial", dir=final.parent))
        building = _Building(tmp)
        try:
            yield building
            # meta.json is written last: its presence is what marks an entry complete. It lists
            # every file's size, checked on each read (:func:`_intact`).
            files = _fsync_files(tmp)
            (tmp / _META).write_text(json.dumps({"stage": stage, "key": key, "params": params or {},
                                                 "meta": building.meta, "files": files}, indent=1, default=str))
            _fsync_path(tmp / _META)
            _fsync_path(tmp)
            if final.exists():  # a concurrent builder won; identical by construction
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, final)
                _fsync_path(final.parent)  # the rename itself survives a power loss
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def sweep_partials(self) -> int:
        """Remove temp folders whose builder process is gone (killed mid-stage); returns how many."""
        n = 0
        if self.root.is_dir():
            for p in self.root.glob("*/*/.*.partial"):
                if pid_alive(_builder_pid(p.name)):
                    continue  # another process (a worker beside a CLI render) is still building it
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


def _fsync_files(folder: Path) -> dict[str, int]:
    """fsync every file under ``folder``; returns their sizes by relative path."""
    sizes: dict[str, int] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            _fsync_path(p)
            sizes[str(p.relative_to(folder))] = p.stat().st_size
    return sizes


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entries are data too)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a filesystem that cannot fsync a folder
    finally:
        os.close(fd)


def _intact(path: Path, meta: dict[str, Any]) -> bool:
    """Every file the entry was built with is there at its size (entries from before the
    size list: no file is empty)."""
    files = meta.get("files")
    try:
        if isinstance(files, dict):
            return all((path / name).stat().st_size == size for name, size in files.items())
        return all(p.stat().st_size > 0 for p in path.iterdir() if p.is_file())
    except OSError:
        return False


def _builder_pid(name: str) -> int:
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0


class _Building:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta: dict[str, Any] = {}
