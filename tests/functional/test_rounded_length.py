"""A length the model cannot generate is rounded up (LTX-2 renders 8k+1 frames): `frames = 10`
rendered 17 frames with no word of why. The render says so, and renders what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from tests.functional.conftest import tiny_storyboard

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_a_rounded_length_is_said_and_rendered(tmp_path: Path) -> None:
    shots = [{"id": "a", "prompt": "a lighthouse", "frames": 10},
             {"id": "b", "prompt": "the beam", "frames": 9, "anchor": "none"}]
    (tmp_path / "s.toml").write_text(tiny_storyboard(shots, preset="tiny", fps=8, enhance=False,
                                                     draft_size=[64, 64], output_size=[128, 128]))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "render", "s.toml"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    assert "a: 10 frames asked, 17 rendered (tiny generates 8k+1 frames)" in done.stderr, done.stderr
    assert "b: 9 frames asked" not in done.stderr  # 9 is a length it generates: nothing to say
    with av.open(str(tmp_path / "renders" / "s" / "segments" / "a.mp4")) as clip:
        assert sum(1 for _ in clip.decode(video=0)) == 17
