"""PyAV encoding of segments and films, checked with an independent decoder where present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.stages.encode import AUDIO_RATE, FilmPart, encode_film

FPS = 24
W, H = 320, 180


def _frames(n: int, base: int) -> np.ndarray:
    """A moving gradient whose mean brightness encodes the frame index (checked after decode)."""
    y, x = np.mgrid[0:H, 0:W]
    out = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        out[i] = np.clip(base + 6 * i + (x[..., None] // 40) + 0 * y[..., None], 0, 255)
    return out


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.3


def _probe(path: Path) -> tuple[list[np.ndarray], float, dict]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"codec": v.codec_context.name, "w": v.codec_context.width, "h": v.codec_context.height,
                "pix_fmt": v.codec_context.pix_fmt, "rate": v.average_rate}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        info["audio_codec"] = a.codec_context.name
        info["audio_rate"] = a.codec_context.sample_rate
        samples = sum(f.samples for f in c.decode(audio=0))
    return frames, samples / info["audio_rate"], info


def test_film_drops_one_frame_per_chained_seam_and_keeps_audio_in_sync(tmp_path: Path) -> None:
    a, b, c = _frames(17, 20), _frames(17, 120), _frames(9, 60)
    parts = [
        FilmPart(a, _tone(17 / FPS, 24_000), 24_000),
        FilmPart(b, _tone(17 / FPS, 24_000), 24_000, skip_first=True),   # chained
        FilmPart(c, None, 24_000, skip_first=False),                      # hard cut, silent
    ]
    out = tmp_path / "film.mp4"
    n = encode_film(out, parts, fps=FPS, size=(W, H))
    frames, audio_seconds, info = _probe(out)
    assert n == len(frames) == 17 + 16 + 9
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and (info["w"], info["h"]) == (W, H)
    assert info["rate"] == FPS and info["audio_codec"] == "aac" and info["audio_rate"] == AUDIO_RATE
    assert abs(audio_seconds - n / FPS) <= 1 / FPS
    means = np.array([f.mean() for f in frames])
    # The frame after the first seam is b[1], not b[0]: compare brightness with the sources.
    assert abs(means[17] - b[1].mean()) < abs(means[17] - b[0].mean())
    assert abs(means[16] - a[16].mean()) < 2.0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")
def test_independent_decoder_reports_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "seg.mp4"
    encode_film(out, [FilmPart(_frames(9, 40), _tone(9 / FPS, 48_000), 48_000)], fps=FPS, size=(W, H))
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == ""


def test_wrong_frame_size_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected 320×180"):
        encode_film(tmp_path / "x.mp4", [FilmPart(np.zeros((2, 100, 100, 3), np.uint8), None, 1)], fps=FPS,
                    size=(W, H))


def test_vocoder_rate_audio_is_resampled_without_changing_its_pitch(tmp_path: Path) -> None:
    """LTX-2's vocoder speaks 24 kHz; the film's AAC track is 48 kHz with the same tone."""
    out = tmp_path / "tone.mp4"
    encode_film(out, [FilmPart(_frames(48, 10), _tone(2.0, 24_000), 24_000)], fps=FPS, size=(W, H))
    with av.open(str(out)) as c:
        left = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(left[AUDIO_RATE // 4: AUDIO_RATE // 4 + AUDIO_RATE]))  # one second
    assert abs(int(np.argmax(spectrum)) - 440) <= 2  # 1 Hz bins


def _video_bytes(path: Path) -> bytes:
    with av.open(str(path)) as c:
        return b"".join(bytes(p) for p in c.demux(video=0))


def test_the_same_frames_encode_to_the_same_bytes_in_a_process_that_encoded_before(tmp_path: Path) -> None:
    """A resumed render re-encodes in a fresh worker what an uninterrupted one encoded after
    other segments: the bytes must not depend on that. With PyAV's default slice threads
    x264 gave another stream in ~4% of such encodes; it must use frame threads."""
    from pipeline.stages.encode import encode_mp4

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (9, 128, 192, 3), dtype=np.uint8)  # noise: what random weights decode to
    encode_mp4(tmp_path / "first.mp4", frames, fps=8, size=(192, 128))
    expected = _video_bytes(tmp_path / "first.mp4")
    assert b"sliced_threads=0" in expected  # x264's own record of its settings (SEI)
    for i in range(50):
        other = rng.integers(0, 255, (int(rng.integers(3, 15)), 128, 192, 3), dtype=np.uint8)
        encode_mp4(tmp_path / "other.mp4", other, fps=8, size=(192, 128))
        encode_mp4(tmp_path / "again.mp4", frames, fps=8, size=(192, 128))
        assert _video_bytes(tmp_path / "again.mp4") == expected, f"differed on encode {i + 2}"
