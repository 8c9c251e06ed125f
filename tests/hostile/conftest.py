"""Shared helpers of the hostile-input suite: a real worker, raw sockets, the one-line rule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.wire.framing import lock_holder
from pipeline.worker.client import WorkerClient, stop_worker
from tests.functional.conftest import tiny_storyboard
from tests.raw_socket import Raw  # noqa: F401  (the hostile tests import it from here)

ROOT = Path(__file__).resolve().parents[2]

#: A storyboard whose jobs fail at once in the runner (unknown preset): no model is loaded.
QUICK = tiny_storyboard([{"id": "one", "prompt": "a red lighthouse", "frames": 9}], title="hostile", fps=8,
                        preset="no-such-preset", output_size=[192, 128], enhance=False)


def sulphur(*args: str, cwd: Path, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``sulphur`` command of this checkout with a hard time limit."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line(result: subprocess.CompletedProcess, names: str) -> str:
    """The hostile-input rule: non-zero exit, no traceback, one line on stderr naming the file."""
    err = result.stderr.strip()
    assert result.returncode != 0, (result.returncode, err)
    assert "Traceback" not in err and "Traceback" not in result.stdout, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert names in lines[0], (names, lines[0])
    return lines[0]


def kill_worker(project: Path) -> None:
    pid = lock_holder(project)
    if pid is None:
        return
    if stop_worker(project, timeout=60) != 0 and pid > 0:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def worker_project(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A project folder with a live worker (module-wide: starting one costs seconds)."""
    folder = tmp_path_factory.mktemp("hostile-worker")
    (folder / "story.toml").write_text(QUICK)
    WorkerClient.connect(folder, idle_timeout=300).close()
    yield folder
    kill_worker(folder)


def tiny_clip(path: Path) -> Path:
    """Eight grey 64×64 H.264 frames at 8 fps: a clip ``extend`` and the anchors accept."""
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 30, np.uint8), format="rgb24")))
        c.mux(s.encode())
    return path


def timed(fn, *args):  # noqa: ANN001, ANN201
    t = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t
