"""Encode: frames + audio → H.264/AAC MP4 with PyAV, per segment and for the whole film.

Frames are tagged and converted as BT.709 limited range (HD); audio is trimmed or
padded to exactly the video's duration so A/V stay in sync when segments are joined.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.stages.base import SegmentJob, Stage, StageContext

CRF = 18               # visually lossless for generated footage; a 1080p segment stays small
PRESET = "medium"
AUDIO_RATE = 48_000    # AAC at the video-standard rate; the vocoder's rate is resampled
AUDIO_BITRATE = 192_000

# FFmpeg enum values: BT.709 primaries/transfer/matrix, MPEG (limited) range.
_BT709 = 1
_RANGE_MPEG = 1


@dataclass
class FilmPart:
    """One segment's contribution to a film."""

    frames: np.ndarray          # (T, H, W, 3) uint8, may be a memmap
    audio: np.ndarray | None    # (channels, samples) float32
    sample_rate: int
    skip_first: bool = False    # chained: frame 0 repeats the previous segment's last frame


def _fit_audio(audio: np.ndarray, samples: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    audio = audio[:2]
    if audio.shape[1] >= samples:
        return audio[:, :samples]
    return np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Stereo float audio to ``target`` Hz with libswresample (band-limited, through PyAV)."""
    if rate == target or audio.shape[1] == 0:
        return audio
    import av

    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=target)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp",
                                       layout="stereo")
    frame.sample_rate = rate
    chunks = [f.to_ndarray() for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((2, 0), np.float32)


def _film_audio(parts: list[FilmPart], fps: int) -> np.ndarray | None:
    if all(p.audio is None for p in parts):
        return None
    chunks = []
    for p in parts:
        n_frames = len(p.frames) - (1 if p.skip_first else 0)
        samples = round(n_frames * AUDIO_RATE / fps)
        if p.audio is None:
            chunks.append(np.zeros((2, samples), np.float32))
            continue
        audio = _resample(_fit_audio(p.audio, p.audio.shape[-1]), p.sample_rate, AUDIO_RATE)
        if p.skip_first:
            audio = audio[:, round(AUDIO_RATE / fps):]
        chunks.append(_fit_audio(audio, samples))
    return np.concatenate(chunks, axis=1)


def _frames(parts: list[FilmPart]) -> Iterator[np.ndarray]:
    for p in parts:
        start = 1 if p.skip_first else 0
        for i in range(start, len(p.frames)):
            yield np.ascontiguousarray(p.frames[i])


def encode_mp4(path: Path, frames: Iterable[np.ndarray], *, fps: int, size: tuple[int, int],
               audio: np.ndarray | None = None, on_frame: Any = None) -> int:
    """Write an MP4; returns the number of video frames. ``audio`` is (2, n) at AUDIO_RATE."""
    import av

    width, height = size
    count = 0
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        v = container.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.time_base = Fraction(1, fps)
        v.options = {"crf": str(CRF), "preset": PRESET}
        cc = v.codec_context
        # Frame threads, as the ffmpeg CLI uses for x264: PyAV's default (slice threads) makes
        # x264 non-deterministic. The same frames encoded again came out different in ~4% of
        # encodes in a process that had encoded before (measured: 8 of 200 at 192×128), which
        # made a resumed render's segments differ from an uninterrupted one's; frame threads:
        # 0 of 200.
        cc.thread_type = "FRAME"
        cc.color_primaries = cc.color_trc = cc.colorspace = _BT709
        cc.color_range = _RANGE_MPEG
        a = None
        if audio is not None:
            a = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            a.bit_rate = AUDIO_BITRATE
        for frame in frames:
            if frame.shape[1] != width or frame.shape[0] != height:
                raise ValueError(f"frame {count} is {frame.shape[1]}×{frame.shape[0]}, expected {width}×{height}")
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf = vf.reformat(format="yuv420p", dst_colorspace="ITU709")
            vf.pts = count
            for packet in v.encode(vf):
                container.mux(packet)
            count += 1
            if on_frame is not None:
                on_frame(count)
        for packet in v.encode():
            container.mux(packet)
        if a is not None and audio is not None:
            _encode_audio(container, a, audio)
    return count


def _encode_audio(container: Any, stream: Any, audio: np.ndarray) -> None:
    import av

    frame_size = stream.codec_context.frame_size or 1024
    data = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
    for start in range(0, data.shape[1], frame_size):
        chunk = np.ascontiguousarray(data[:, start:start + frame_size])
        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        af.sample_rate = AUDIO_RATE
        af.pts = start
        for packet in stream.encode(af):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def encode_film(path: Path, parts: list[FilmPart], *, fps: int, size: tuple[int, int],
                on_frame: Any = None) -> int:
    """Join segments into one film: no duplicated frame at chained seams, continuous audio."""
    return encode_mp4(path, _frames(parts), fps=fps, size=size, audio=_film_audio(parts, fps), on_frame=on_frame)


class EncodeStage(Stage):
    name = "encode"
    version = 3  # 2: audio resampled by libswresample; 3: x264 frame threads (reproducible bytes)
    inputs = ("upscale", "draft")

    def params(self, job: SegmentJob) -> dict[str, Any]:
        return {"fps": job.fps, "size": list(job.output_size), "audio": job.audio, "crf": CRF,
                "preset": PRESET, "audio_rate": AUDIO_RATE}

    def total_steps(self, job: SegmentJob) -> int:
        return job.frames

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict, out: Path) -> dict[str, Any]:
        frames = np.load(inputs["upscale"].file("frames.npy"), mmap_mode="r")
        draft = inputs["draft"]
        part = FilmPart(frames=frames, audio=None, sample_rate=AUDIO_RATE)
        if job.audio and draft.file("audio.npy").exists():
            part.audio = np.load(draft.file("audio.npy"))
            part.sample_rate = int(draft.meta.get("sample_rate", AUDIO_RATE))
        total = len(frames)
        n = encode_film(out / "segment.mp4", [part], fps=job.fps, size=job.output_size,
                        on_frame=lambda i: ctx.progress(self.name, i, total))
        return {"frames": n, "size": list(job.output_size), "fps": job.fps}
