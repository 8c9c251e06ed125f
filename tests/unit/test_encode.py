"""PyAV encoding of segments and films, checked with an independent decoder where present."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.stages import encode as encode_mod
from pipeline.stages.encode import AUDIO_RATE, FilmPart, encode_film, join_film

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


def test_a_segment_encodes_to_the_same_bytes_whatever_the_process_did_before(tmp_path: Path) -> None:
    """A resumed render re-encodes in a fresh worker what an uninterrupted one encoded after
    other segments, and the film copies those bytes: they must not depend on it. In-process,
    x264 gave another stream in 1-4% of encodes after earlier ones; each segment is encoded
    in a fresh process, with frame threads."""
    from pipeline.stages.encode import encode_in_fresh_process, encode_mp4

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (9, 128, 192, 3), dtype=np.uint8)  # noise: what random weights decode to
    np.save(tmp_path / "frames.npy", frames)
    np.save(tmp_path / "audio.npy", _tone(9 / 8, 24_000))
    seen, progress = set(), []
    for i in range(6):
        other = rng.integers(0, 255, (int(rng.integers(3, 15)), 128, 192, 3), dtype=np.uint8)
        encode_mp4(tmp_path / "other.mp4", other, fps=8, size=(192, 128))  # this process "encoded before"
        n = encode_in_fresh_process(tmp_path / f"seg{i}.mp4", tmp_path / "frames.npy", tmp_path / "audio.npy",
                                    24_000, fps=8, size=(192, 128), keyframes=(1,), on_frame=progress.append)
        assert n == 9
        seen.add(_video_bytes(tmp_path / f"seg{i}.mp4"))
    assert len(seen) == 1
    assert b"sliced_threads=0" in seen.pop()  # x264's own record of its settings (SEI)
    assert progress[:9] == list(range(1, 10))
    frames_back, seconds, info = _probe(tmp_path / "seg0.mp4")
    assert len(frames_back) == 9 and info["audio_codec"] == "aac" and abs(seconds - 9 / 8) < 0.05


@pytest.mark.skipif(sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and 2 CPUs")
def test_a_segment_has_the_same_bytes_on_fewer_cpus(tmp_path: Path) -> None:
    """The encode behind the GPU stages runs kept off a core (pipeline/render/overlap.py), one made
    inline or on a Ray actor on every CPU: x264 sizes its threads from the affinity it sees, and
    the bytes follow the thread count, so the count must come from the machine instead."""
    from pipeline.stages.encode import encode_in_fresh_process

    rng = np.random.default_rng(5)
    np.save(tmp_path / "frames.npy", rng.integers(0, 255, (9, 128, 192, 3), dtype=np.uint8))

    def encode(name: str, cpus: set[int] | None) -> bytes:
        def body() -> None:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)  # this thread, and the encoder process it starts
            encode_in_fresh_process(tmp_path / name, tmp_path / "frames.npy", None, 24_000, fps=8, size=(192, 128))

        t = threading.Thread(target=body)
        t.start()
        t.join()
        return _video_bytes(tmp_path / name)

    everywhere = encode("all.mp4", None)
    assert encode("one.mp4", {min(os.sched_getaffinity(0))}) == everywhere


def test_a_failing_encoder_process_is_a_clear_error_and_a_cancel_kills_it(tmp_path: Path) -> None:
    from pipeline.stages.encode import encode_in_fresh_process

    np.save(tmp_path / "frames.npy", np.zeros((30, 128, 192, 3), np.uint8))
    with pytest.raises(RuntimeError, match="encoder process exited with 1.*expected 200×128"):
        encode_in_fresh_process(tmp_path / "bad.mp4", tmp_path / "frames.npy", None, 24_000, fps=8, size=(200, 128))

    class Cancelled(Exception):
        pass

    def cancel_at_3(i: int) -> None:
        if i == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        encode_in_fresh_process(tmp_path / "c.mp4", tmp_path / "frames.npy", None, 24_000, fps=8, size=(192, 128),
                                on_frame=cancel_at_3)


# ------------------------------------------------------------------ the film as a remux


def _ffmpeg_errors(path: Path) -> str:
    """What an independent decoder (the ffmpeg CLI) complains about; "" for a clean file."""
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, check=False)
    return result.stderr + ("" if result.returncode == 0 else f"exit {result.returncode}")


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")


def _decoded(path: Path) -> tuple[list[np.ndarray], list[bool]]:
    """Decoded YUV planes (as the stream codes them, no conversion) and keyframe flags."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return [f.to_ndarray(format="yuv420p") for f in frames], [bool(f.key_frame) for f in frames]


def _segment(tmp_path: Path, name: str, part: FilmPart, size: tuple[int, int] = (W, H)) -> FilmPart:
    """``part`` with its own segment.mp4, encoded as EncodeStage does (an IDR after a chained anchor)."""
    path = tmp_path / f"{name}.mp4"
    encode_film(path, [FilmPart(part.frames, part.audio, part.sample_rate)], fps=FPS, size=size,
                keyframes=(1,) if part.skip_first else ())
    part.encoded, part.name = path, name
    return part


def _three_segments(tmp_path: Path) -> list[FilmPart]:
    a, b, c = _frames(17, 20), _frames(17, 120), _frames(9, 60)
    b[0] = a[-1]  # chained: frame 0 is the anchor, the previous segment's last frame
    return [_segment(tmp_path, "a", FilmPart(a, _tone(17 / FPS, 24_000), 24_000)),
            _segment(tmp_path, "b", FilmPart(b, _tone(17 / FPS, 24_000), 24_000, skip_first=True)),
            _segment(tmp_path, "c", FilmPart(c, None, 24_000))]                 # hard cut, silent


def test_a_chained_segment_keeps_its_anchor_and_starts_over_with_an_idr_after_it(tmp_path: Path) -> None:
    part = _segment(tmp_path, "b", FilmPart(_frames(17, 120), None, 24_000, skip_first=True))
    frames, keys = _decoded(part.encoded)
    assert len(frames) == 17  # the segment plays whole, anchor included
    assert keys[:2] == [True, True] and not any(keys[2:])


@needs_ffmpeg
def test_film_is_the_segments_h264_copied_with_one_frame_less_per_chained_seam(tmp_path: Path) -> None:
    parts = _three_segments(tmp_path)
    out = tmp_path / "final.mp4"
    n, reencoded = join_film(out, parts, fps=FPS, size=(W, H))
    assert reencoded is None
    assert _ffmpeg_errors(out) == ""
    film, keys = _decoded(out)
    seg = [_decoded(p.encoded)[0] for p in parts]
    assert n == len(film) == 17 + 16 + 9
    # Stream copy: the film decodes to exactly the segments' pictures, b's anchor left out.
    expected = seg[0] + seg[1][1:] + seg[2]
    assert all(np.array_equal(f, e) for f, e in zip(film, expected, strict=True))
    # Every segment starts on a keyframe (seekable), and only there.
    assert [i for i, k in enumerate(keys) if k] == [0, 17, 33]
    _, audio_seconds, info = _probe(out)
    assert info["rate"] == FPS and info["audio_codec"] == "aac" and info["audio_rate"] == AUDIO_RATE
    assert abs(audio_seconds - n / FPS) <= 1 / FPS
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart


def test_film_audio_is_the_same_track_as_a_reencoded_film(tmp_path: Path) -> None:
    """Only the video is copied: the audio is built from the drafts exactly as before."""
    parts = _three_segments(tmp_path)
    join_film(tmp_path / "copied.mp4", parts, fps=FPS, size=(W, H))
    encode_film(tmp_path / "encoded.mp4", parts, fps=FPS, size=(W, H))

    def pcm(path: Path) -> np.ndarray:
        with av.open(str(path)) as c:
            return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)

    copied, encoded = pcm(tmp_path / "copied.mp4"), pcm(tmp_path / "encoded.mp4")
    assert copied.shape == encoded.shape and np.allclose(copied, encoded, atol=1e-6)


def _other_preset(tmp_path: Path, parts: list[FilmPart], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(encode_mod, "PRESET", "ultrafast")  # another x264 setting: other SPS/PPS
    _segment(tmp_path, "c-fast", parts[2])
    monkeypatch.undo()
    return "SPS/PPS"


def _other_size(tmp_path: Path, parts: list[FilmPart], monkeypatch: pytest.MonkeyPatch) -> str:
    small = FilmPart(np.ascontiguousarray(parts[2].frames[:, :H // 2, :W // 2]), None, 24_000)
    parts[2].encoded = _segment(tmp_path, "c-small", small, size=(W // 2, H // 2)).encoded
    return "segment c's size differs from segment a's"


def _no_idr_after_anchor(tmp_path: Path, parts: list[FilmPart], monkeypatch: pytest.MonkeyPatch) -> str:
    """A chained segment encoded before its frame 1 was an IDR: frame 0 cannot be dropped by copy."""
    encode_film(tmp_path / "b-old.mp4", [FilmPart(parts[1].frames, parts[1].audio, 24_000)], fps=FPS, size=(W, H))
    parts[1].encoded = tmp_path / "b-old.mp4"
    return "not an IDR"


def _no_encode(tmp_path: Path, parts: list[FilmPart], monkeypatch: pytest.MonkeyPatch) -> str:
    parts[0].encoded = None
    return "no encoded MP4"


def _other_frames(tmp_path: Path, parts: list[FilmPart], monkeypatch: pytest.MonkeyPatch) -> str:
    """segment.mp4 of another take than the frames the film is built from."""
    parts[2].encoded = parts[0].encoded
    return "frame"


@needs_ffmpeg
@pytest.mark.parametrize("mismatch", [_other_preset, _other_size, _no_idr_after_anchor, _no_encode, _other_frames])
def test_segments_that_cannot_be_copied_make_a_reencoded_film(tmp_path: Path, mismatch,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _three_segments(tmp_path)
    why = mismatch(tmp_path, parts, monkeypatch)
    out = tmp_path / "final.mp4"
    n, reencoded = join_film(out, parts, fps=FPS, size=(W, H))
    assert reencoded is not None and why in reencoded
    assert _ffmpeg_errors(out) == ""
    frames, audio_seconds, info = _probe(out)
    assert n == len(frames) == 17 + 16 + 9 and (info["w"], info["h"]) == (W, H)
    assert abs(audio_seconds - n / FPS) <= 1 / FPS
    # Re-encoded from the frames themselves: b[1] follows a[16] whatever the segment MP4s hold.
    means = np.array([f.mean() for f in frames])
    assert abs(means[17] - parts[1].frames[1].mean()) < 2.0 and abs(means[33] - parts[2].frames[0].mean()) < 2.0
