"""``sulphur extend``: a generated clip is continued by a tiny I2V model and re-joined.

What a user checks: the output starts with their clip (the same pictures, within what
an H.264 re-encode changes), keeps its fps and size, and is longer by the continuation
minus the one seam frame that would otherwise appear twice.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.stages.encode import AUDIO_RATE, encode_mp4
from tests.functional.conftest import checkout_env

ROOT = Path(__file__).resolve().parents[2]
FPS, SIZE, FRAMES = 8, (64, 48), 12


def _decode(path: Path) -> tuple[np.ndarray, float, tuple[int, int]]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        return frames, float(v.average_rate), (v.codec_context.width, v.codec_context.height)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    """A moving gradient with a drifting square: smooth enough that H.264 keeps it faithfully."""
    w, h = SIZE
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(FRAMES):
        f = np.stack([(x * 3 + t * 5) % 256, (y * 4 + 40) % 256, np.full_like(x, 90 + 8 * t)], -1)
        f[10:22, 4 + 3 * t:16 + 3 * t] = (230, 220, 40)
        frames.append(f.astype(np.uint8))
    # A 440 Hz tone as its sound track, to check the clip's audio survives the extension.
    t = np.arange(round(FRAMES / FPS * AUDIO_RATE)) / AUDIO_RATE
    tone = np.repeat((0.5 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), 2, axis=0)
    path = tmp_path / "clip.mp4"
    assert encode_mp4(path, frames, fps=FPS, size=SIZE, audio=tone) == FRAMES
    return path


def _audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)


def test_extend_keeps_the_clip_and_adds_the_continuation_without_a_seam_duplicate(clip: Path) -> None:
    from pipeline.models.registry import get_preset
    from pipeline.project.storyboard import load
    from pipeline.render.extend import extend

    out = extend(clip, "the machine keeps digging", preset="tiny-ltxv", frames=9)

    assert out == clip.with_name("clip-extended.mp4") and out.is_file()
    original, fps_in, size_in = _decode(clip)
    extended, fps_out, size_out = _decode(out)
    continuation = get_preset("tiny-ltxv").round_frames(9)
    assert (fps_out, size_out) == (fps_in, size_in) == (FPS, SIZE)
    assert len(extended) == len(original) + continuation - 1
    # The first frames are the clip's own (an H.264 re-encode at CRF 18 stays above ~35 dB here).
    for i in range(len(original)):
        assert _psnr(extended[i], original[i]) > 35, f"frame {i} differs from the clip"
    # The clip keeps its sound; the generated part is silent; together they last as long as the video.
    sound = _audio(out)
    assert abs(sound.shape[1] / AUDIO_RATE - len(extended) / FPS) < 2 / FPS
    cut = round(len(original) / FPS * AUDIO_RATE)
    assert np.sqrt(np.mean(sound[:, 2048:cut - 2048] ** 2)) > 0.2
    assert np.abs(sound[:, cut + 2048:]).max() < 0.02
    # The storyboard beside the output continues from the clip and can be re-rendered.
    sb = load(out.with_name("clip-extended.extend.toml"))
    assert sb.segments[0].anchor.kind == "video" and sb.resolve(sb.segments[0].anchor.path).samefile(clip)
    assert sb.project.output_size == SIZE and sb.project.fps == FPS


def test_extend_cli_writes_the_requested_output(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "longer" / "result.mp4"
    out.parent.mkdir()  # --out names a file in a folder that exists (a missing one is refused, not made)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "extend", str(clip), "--prompt", "dust rises",
                             "--model", "tiny-svd", "--frames", "4", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=checkout_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(str(out))
    extended, fps, size = _decode(out)
    assert (fps, size) == (FPS, SIZE) and len(extended) == FRAMES + 4 - 1
