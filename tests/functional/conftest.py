"""Helpers shared by the functional tests: real processes, real files, tiny storyboards.

Import them as ``from tests.functional.conftest import …``; pytest also loads this file
as the folder's conftest (it holds no fixtures of its own).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.project import layout
from pipeline.wire import protocol

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "storyboards" / "example.toml"


def checkout_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process: this checkout first on PYTHONPATH (so a child
    imports the code under test, not another install), plus ``extra``."""
    env = dict(os.environ if base is None else base, **extra)
    rest = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + rest if rest and rest != str(ROOT) else "")
    return env


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``folder`` (made here) for the ``with`` body: a full
    disk or, remounted ``ro``, a read-only one (a chmod does not stop root). Skips the test
    when it cannot mount (not root, or no mount rights in this container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)])


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 50 ms until it is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def decode_frames(path: Path) -> np.ndarray:
    """Every decoded video frame of ``path`` (RGB, frames × H × W × 3), through PyAV."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def stop_worker_or_kill(project: Path, timeout: float = 120) -> None:
    """Stop the project's worker cleanly, else SIGKILL it, so no test leaves one running."""
    from pipeline.wire.framing import lock_holder
    from pipeline.worker.client import stop_worker

    pid = lock_holder(project)
    if pid is not None and stop_worker(project, timeout=timeout) != 0 and pid > 0:
        os.kill(pid, signal.SIGKILL)


def cache_entries(project: Path, stage: str) -> dict[str, Path]:
    """A stage's finished cache entries in a project: {key: folder}."""
    return {meta.parent.name: meta.parent for meta in (layout.cache_dir(project) / stage).glob("*/*/meta.json")}


def cache_keys(project: Path, stages: Iterable[str] = protocol.STAGES) -> dict[str, set[str]]:
    """Every stage's cache keys in a project."""
    return {stage: set(cache_entries(project, stage)) for stage in stages}


def cache_entry(project: Path, stage: str, key: str) -> Path:
    """Where the cache keeps ``stage``'s entry ``key`` (whether it exists or not)."""
    return layout.cache_dir(project) / stage / key[:2] / key


def tiny_storyboard(segments: Iterable[Mapping[str, Any]], **project: Any) -> str:
    """A storyboard's TOML text: ``[project]`` from the keywords, one ``[[segment]]`` per mapping."""
    lines = ["[project]", *(f"{k} = {_toml(v)}" for k, v in project.items())]
    for seg in segments:
        lines += ["", "[[segment]]", *(f"{k} = {_toml(v)}" for k, v in seg.items())]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # strings (quoted, escaped), ints, floats


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[float], list[float]]]:
    """(sigmas passed, sigmas the scheduler then steps through) per ``set_timesteps`` call of a
    flow-match scheduler; the real ``set_timesteps`` still runs."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    calls: list[tuple[list[float], list[float]]] = []
    real = FlowMatchEulerDiscreteScheduler.set_timesteps

    @functools.wraps(real)  # the pipeline inspects the signature for `sigmas`
    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        passed = [float(x) for x in kwargs.get("sigmas")] if kwargs.get("sigmas") is not None else []
        calls.append((passed, [float(x) for x in self.sigmas]))
        return out

    monkeypatch.setattr(FlowMatchEulerDiscreteScheduler, "set_timesteps", spy)
    return calls
