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

from pipeline.stages.base import Artifact

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

    def _dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / key

    def get(self, stage: str, key: str) -> Artifact | None:
        path = self._dir(stage, key)
        meta_path = path / _META
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: treat as absent, it will be rebuilt
        return Artifact(stage=stage, key=key, path=path, meta=meta.get("meta", {}))

    @contextmanager
    def build(self, stage: str, key: str, params: dict[str, Any] | None = None) -> Iterator[_Building]:
        """Yield a writable temp folder; on clean exit it becomes the entry atomically."""
        final = self._dir(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.{os.getpid()}.", suffix=".partial", dir=final.parent))
        building = _Building(tmp)
        try:
            yield building
            # meta.json is written last: its presence is what marks an entry complete.
            (tmp / _META).write_text(json.dumps({"stage": stage, "key": key, "params": params or {},
                                                 "meta": building.meta}, indent=1, default=str))
            if final.exists():  # a concurrent builder won; identical by construction
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def sweep_partials(self) -> int:
        """Remove temp folders whose builder process is gone (killed mid-stage); returns how many."""
        n = 0
        if self.root.is_dir():
            for p in self.root.glob("*/*/.*.partial"):
                if _pid_alive(_builder_pid(p.name)):
                    continue  # another process (a worker beside a CLI render) is still building it
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


def _builder_pid(name: str) -> int:
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Building:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta: dict[str, Any] = {}
