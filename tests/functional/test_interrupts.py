"""Issue 19 item 8: ctrl+c and SIGTERM to a CLI render are interrupts, cleaned up, not failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.functional.conftest import tiny_storyboard

ROOT = Path(__file__).resolve().parents[2]

STORY = tiny_storyboard([{"id": "a", "prompt": "a lighthouse", "frames": 9}], preset="tiny", fps=8, enhance=False,
                        draft_size=[64, 64], output_size=[128, 128])


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl+c", "sigterm"])
def test_an_interrupted_stage_exits_cleanly(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    """ctrl+c printed `error: draft failed: KeyboardInterrupt` and exited 1; SIGTERM left the partial folder."""
    (tmp_path / "s.toml").write_text(STORY)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "render", "s.toml"], cwd=tmp_path,
                            env=_env(SULPHUR_FAULT_SLOW="draft:120"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        partials = lambda: list((tmp_path / ".sulphur" / "cache").glob("draft/*/.*.partial"))  # noqa: E731
        _wait_for(lambda: partials() or proc.poll() is not None, 150, "the draft stage to start")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "failed" not in err and "Traceback" not in err, err
    assert "cancelled" in err
    assert partials() == []


@pytest.mark.timeout(120)
def test_sigterm_kills_the_encoder_child(tmp_path: Path) -> None:
    """SIGTERM to a CLI render left its encoder process running: the handler unwinds and kills it."""
    frames = np.random.default_rng(0).integers(0, 255, (240, 360, 640, 3), dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    script = (
        "from pathlib import Path\n"
        "from pipeline.cli.output import terminate_like_ctrl_c\n"
        "from pipeline.stages.encode import encode_in_fresh_process\n"
        "terminate_like_ctrl_c()\n"
        f"encode_in_fresh_process(Path({str(tmp_path / 'out.mp4')!r}), Path({str(tmp_path / 'frames.npy')!r}),"
        " None, 48000, fps=8, size=(640, 360))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=_env(), stderr=subprocess.PIPE,
                            text=True)
    try:
        parent = psutil.Process(proc.pid)
        _wait_for(lambda: parent.children() or proc.poll() is not None, 60, "the encoder child")
        children = parent.children()
        assert children, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
