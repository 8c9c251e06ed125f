"""Encode: frames + audio → H.264/AAC MP4 with PyAV, per segment and for the whole film.

Frames are tagged and converted as BT.709 limited range (HD); audio is trimmed or
padded to exactly the video's duration so A/V stay in sync when segments are joined.

The film is a remux: each segment's own H.264 (``segment.mp4``) is stream-copied
into ``final.mp4`` and only the audio is encoded again, from the drafts' audio. A
chained segment's frame 0 repeats the previous segment's last frame; its encode makes
frame 1 an IDR too, so frame 0 is one self-contained access unit the film can leave
out. Segments that cannot be joined by copy (another size, other x264 settings, a
missing encode) make the film a full re-encode from the frames, as before.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.stages.base import SegmentJob, Stage, StageContext

# Deferred imports: av — the runner reads the stage's cache key without PyAV; it loads when the stage runs

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
    encoded: Path | None = None  # the segment's own MP4 (EncodeStage), stream-copied into the film
    name: str = ""              # the segment's id, for messages


class NotJoinable(Exception):
    """The segments' encoded MP4s cannot be stream-copied into one film; the message says why."""


def repeats_anchor(index: int, segment: Any) -> bool:
    """Segment ``index``'s frame 0 is the previous segment's last frame (chained): the film leaves it out."""
    return index > 0 and segment.anchor.kind == "previous"


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


def x264_threads(height: int) -> int:
    """x264's own choice of frame threads (1.5 a CPU, at most one per two rows of macroblocks),
    taken from the machine's CPU count instead of the calling thread's affinity, which x264
    reads: the bytes depend on the count, and an encode behind the GPU stages runs on fewer
    CPUs (pipeline/render/overlap.py) than one made inline, resumed or on a Ray actor.
    ``SULPHUR_ENCODE_THREADS`` overrides it for a bench's comparison (the bytes change with it)."""
    given = os.environ.get("SULPHUR_ENCODE_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, min((os.cpu_count() or 1) * 3 // 2, (height + 15) // 16 // 2))


def encode_mp4(path: Path, frames: Iterable[np.ndarray], *, fps: int, size: tuple[int, int],
               audio: np.ndarray | None = None, on_frame: Any = None, keyframes: Collection[int] = ()) -> int:
    """Write an MP4; returns the number of video frames. ``audio`` is (2, n) at AUDIO_RATE.

    ``keyframes``: frame indices that start a closed GOP with an IDR of their own (frame 0 always does).
    """
    import av
    from av.video.frame import PictureType

    width, height = size
    count = 0
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        v = container.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.time_base = Fraction(1, fps)
        v.options = {"crf": str(CRF), "preset": PRESET, "forced-idr": "1"}
        cc = v.codec_context
        # Frame threads, as the ffmpeg CLI uses for x264 (PyAV defaults to slice threads). Slice
        # threads were the least reproducible: the same frames came out as another stream in 8
        # of 200 encodes in a process that had encoded before, frame threads in 2 of 200 — what
        # makes segment bytes reproducible is encode_in_fresh_process.
        cc.thread_type = "FRAME"
        cc.thread_count = x264_threads(height)
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
            if count in keyframes:
                vf.pict_type = PictureType.I  # an IDR (forced-idr): nothing after it refers back
            for packet in v.encode(vf):
                container.mux(packet)
            count += 1
            if on_frame is not None:
                on_frame(count)
        for packet in v.encode():
            container.mux(packet)
        if a is not None and audio is not None:
            for packet in _audio_packets(a, audio):
                container.mux(packet)
    return count


def _audio_packets(stream: Any, audio: np.ndarray) -> Iterator[Any]:
    """AAC packets of (2, n) float audio at AUDIO_RATE, for ``stream``."""
    import av

    frame_size = stream.codec_context.frame_size or 1024
    data = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
    for start in range(0, data.shape[1], frame_size):
        chunk = np.ascontiguousarray(data[:, start:start + frame_size])
        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        af.sample_rate = AUDIO_RATE
        af.pts = start
        yield from stream.encode(af)
    yield from stream.encode()


def encode_film(path: Path, parts: list[FilmPart], *, fps: int, size: tuple[int, int],
                on_frame: Any = None, keyframes: Collection[int] = ()) -> int:
    """Join segments into one film by encoding their frames again: no duplicated frame at
    chained seams, continuous audio. The fallback of :func:`join_film`."""
    return encode_mp4(path, _frames(parts), fps=fps, size=size, audio=_film_audio(parts, fps),
                      on_frame=on_frame, keyframes=keyframes)


# ------------------------------------------------------------------ the film by stream copy

_NAL_IDR = 5


def _nal_types(data: bytes, length_size: int) -> list[int]:
    """NAL unit types of one length-prefixed (avcC) H.264 packet."""
    types, i = [], 0
    while i + length_size < len(data):
        n = int.from_bytes(data[i:i + length_size], "big")
        types.append(data[i + length_size] & 0x1F)
        i += length_size + n
    return types


def _seg(parts: list[FilmPart], i: int) -> str:
    return f"segment {parts[i].name or i}"


def _video_signature(stream: Any) -> dict[str, Any]:
    """What must be equal for two H.264 streams to follow each other in one MP4 track."""
    cc = stream.codec_context
    return {"codec": cc.name, "size": (cc.width, cc.height), "pix_fmt": cc.pix_fmt, "time base": stream.time_base,
            "colour tags": (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range),
            "SPS/PPS (avcC extradata)": bytes(cc.extradata or b"")}


def _open_segments(stack: ExitStack, parts: list[FilmPart], size: tuple[int, int]) -> tuple[list[Any], list[Any]]:
    """Open every part's encoded MP4 and check their video streams can be joined; NotJoinable if not."""
    import av

    inputs, streams = [], []
    for i, p in enumerate(parts):
        if p.encoded is None or not Path(p.encoded).is_file():
            raise NotJoinable(f"{_seg(parts, i)} has no encoded MP4")
        try:
            c = stack.enter_context(av.open(str(p.encoded)))
        except av.error.FFmpegError as exc:
            raise NotJoinable(f"{_seg(parts, i)}'s MP4 does not open ({exc})") from None
        if len(c.streams.video) != 1:
            raise NotJoinable(f"{_seg(parts, i)}'s MP4 has {len(c.streams.video)} video streams")
        inputs.append(c)
        streams.append(c.streams.video[0])
    first = _video_signature(streams[0])
    if first["codec"] != "h264":
        raise NotJoinable(f"{_seg(parts, 0)} is {first['codec']}, not H.264")
    if first["size"] != tuple(size):
        raise NotJoinable(f"{_seg(parts, 0)} is {first['size'][0]}×{first['size'][1]}, the film {size[0]}×{size[1]}")
    extradata = first["SPS/PPS (avcC extradata)"]
    if len(extradata) < 7 or extradata[0] != 1:
        raise NotJoinable(f"{_seg(parts, 0)}'s H.264 has no avcC extradata")
    for i, s in enumerate(streams[1:], 1):
        sig = _video_signature(s)
        for what, value in first.items():
            if sig[what] != value:
                shown = "" if isinstance(value, bytes) else f": {sig[what]} vs {value}"
                raise NotJoinable(f"{_seg(parts, i)}'s {what} differs from {_seg(parts, 0)}'s{shown}")
    return inputs, streams


def remux_film(path: Path, parts: list[FilmPart], *, fps: int, size: tuple[int, int]) -> int:
    """The film from the parts' encoded MP4s: their H.264 packets copied one segment after the
    other (a chained part's frame 0, its own IDR, left out), with one new AAC track from the
    parts' audio. Returns the number of frames; raises NotJoinable (and leaves ``path``
    half-written) when the segments cannot be joined by copy."""
    import av

    if not parts:
        raise NotJoinable("no segments")
    with ExitStack() as stack:
        inputs, streams = _open_segments(stack, parts, size)
        time_base = streams[0].time_base
        tick = Fraction(1, fps) / time_base
        if tick.denominator != 1:
            raise NotJoinable(f"a frame at {fps} fps is not a whole number of {time_base} ticks")
        tick = int(tick)
        extradata = bytes(streams[0].codec_context.extradata)
        length_size = (extradata[4] & 3) + 1
        audio = _film_audio(parts, fps)
        out = stack.enter_context(av.open(str(path), mode="w", format="mp4",
                                          options={"movflags": "+faststart"}))
        video = out.add_stream_from_template(streams[0])
        video.time_base = time_base
        pending: deque[Any] = deque()
        if audio is not None:
            a = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            a.bit_rate = AUDIO_BITRATE
            pending.extend(_audio_packets(a, audio))  # a few hundred kB; muxed in step with the video
        start = 0      # film frame where the next segment's first kept frame lands
        last_dts = None
        for i, (p, c, s) in enumerate(zip(parts, inputs, streams, strict=True)):
            n, skip = len(p.frames), int(p.skip_first)
            if n - skip < 1:
                raise NotJoinable(f"{_seg(parts, i)} adds no frame")
            base = shift = None
            seen: set[int] = set()
            count = 0
            for pkt in c.demux(s):
                if pkt.size == 0:
                    continue  # the demuxer's flush packet
                if pkt.pts is None or pkt.dts is None:
                    raise NotJoinable(f"{_seg(parts, i)} has a packet without timestamps")
                if base is None:
                    base = pkt.pts  # decode order starts with frame 0's IDR
                    shift = (start - skip) * tick - base
                index, rest = divmod(pkt.pts - base, tick)
                if rest or not 0 <= index < n or index in seen:
                    raise NotJoinable(f"{_seg(parts, i)}'s frame timestamps are not {n} frames at {fps} fps")
                seen.add(index)
                if count == skip and _NAL_IDR not in _nal_types(bytes(pkt), length_size):
                    raise NotJoinable(f"{_seg(parts, i)}'s first {'kept ' if skip else ''}frame is not an IDR"
                                      + (" (encoded without a keyframe after the anchor)" if skip else ""))
                count += 1
                if count == 1 and skip:
                    if index != 0:
                        raise NotJoinable(f"{_seg(parts, i)}'s anchor frame is not its first packet")
                    continue  # the repeated anchor: one access unit on its own
                pkt.pts += shift
                pkt.dts += shift
                if last_dts is not None and pkt.dts <= last_dts:
                    raise NotJoinable(f"{_seg(parts, i)}'s decode timestamps overlap {_seg(parts, i - 1)}'s")
                last_dts = pkt.dts
                now = pkt.dts * time_base
                while pending and pending[0].pts * pending[0].time_base <= now:
                    out.mux(pending.popleft())
                pkt.stream = video
                pkt.time_base = time_base
                out.mux(pkt)
            if count != n:
                raise NotJoinable(f"{_seg(parts, i)}'s MP4 has {count} frames, its frames {n}")
            start += n - skip
        while pending:
            out.mux(pending.popleft())
    return start


def join_film(path: Path, parts: list[FilmPart], *, fps: int, size: tuple[int, int]) -> tuple[int, str | None]:
    """``final.mp4`` from its segments: :func:`remux_film` when every part has an encoded MP4
    and they can be joined, else :func:`encode_film` from the frames. Returns the number of
    frames and, for a re-encode, why the segments could not be copied (None after a copy)."""
    import av

    try:
        return remux_film(path, parts, fps=fps, size=size), None
    except (NotJoinable, av.error.FFmpegError) as exc:
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full disk: a re-encode would only fill it again
        reason = str(exc) if isinstance(exc, NotJoinable) else f"muxer error: {exc}"
    Path(path).unlink(missing_ok=True)
    return encode_film(path, parts, fps=fps, size=size), reason


class EncodeStage(Stage):
    name = "encode"
    version = 5  # 2: audio resampled by libswresample; 3: x264 frame threads (reproducible bytes);
    #              4: chained segments' frame 1 is an IDR (the film copies them), a shot's `keep`;
    #              5: x264's thread count from the CPU count, not the affinity (x264_threads)
    inputs = ("upscale", "draft")

    def params(self, job: SegmentJob) -> dict[str, Any]:
        return {"fps": job.fps, "size": list(job.output_size), "audio": job.audio, "crf": CRF,
                "preset": PRESET, "audio_rate": AUDIO_RATE,
                "idr_after_anchor": repeats_anchor(job.index, job.segment), "kept": job.kept}

    def total_steps(self, job: SegmentJob) -> int:
        return job.kept

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict, out: Path) -> dict[str, Any]:
        frames, draft = inputs["upscale"].file("frames.npy"), inputs["draft"]
        total = min(job.kept, len(np.load(frames, mmap_mode="r")))
        audio = draft.file("audio.npy") if job.audio and draft.file("audio.npy").exists() else None
        # A chained segment keeps its frame 0 (the anchor, the previous segment's last frame) so
        # it plays whole on its own; frame 1 opens a new IDR so the film can drop frame 0 by copy.
        keyframes = (1,) if repeats_anchor(job.index, job.segment) else ()
        rate = int(draft.meta.get("sample_rate", AUDIO_RATE))
        n = encode_in_fresh_process(out / "segment.mp4", frames, audio, rate, fps=job.fps, size=job.output_size, keyframes=keyframes,
                                    on_frame=lambda i: ctx.progress(self.name, i, total), limit=total)
        return {"frames": n, "size": list(job.output_size), "fps": job.fps}


# ------------------------------------------------------------------ a segment in a fresh process


def encode_in_fresh_process(path: Path, frames: Path, audio: Path | None, sample_rate: int, *, fps: int,
                            size: tuple[int, int], keyframes: Collection[int] = (),
                            on_frame: Any = None, limit: int | None = None) -> int:
    """:func:`encode_film` of one segment (frames and audio from .npy files; the first ``limit``
    frames, default all) in a new process.

    Because x264 reads memory it never wrote: the same frames, settings and library came out
    as another stream in 1-4% of the encodes made in a process that had encoded before
    (whatever its thread settings, single-threaded too), and in none of 30 fresh processes.
    A render resumed in a new worker, a Ray actor and an uninterrupted render must encode a
    segment to the same bytes, because the film copies them. ``on_frame`` may raise (a
    cancel): the child is killed.
    """
    root = Path(__file__).resolve().parents[2]  # the folder holding the ``pipeline`` package
    spec = json.dumps({"path": str(path), "frames": str(frames), "audio": str(audio) if audio else None,
                       "sample_rate": sample_rate, "fps": fps, "size": list(size), "keyframes": list(keyframes),
                       "limit": limit})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.stages.encode", spec], stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL, text=True, env=env)
        count = 0
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip().isdigit():
                    count = int(line)
                    if on_frame is not None:
                        on_frame(count)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            err.seek(0)
            last = (err.read().strip().splitlines() or ["no message"])[-1]  # a traceback's last line: the error
            raise RuntimeError(f"the encoder process exited with {code}: {last}")
    return count


def _child(spec: str) -> int:
    """``python -m pipeline.stages.encode SPEC``: prints each encoded frame's number."""
    args = json.loads(spec)
    frames = np.load(args["frames"], mmap_mode="r")
    part = FilmPart(frames=frames[:args.get("limit") or len(frames)], audio=None, sample_rate=args["sample_rate"])
    if args["audio"]:
        part.audio = np.load(args["audio"])
    encode_film(Path(args["path"]), [part], fps=args["fps"], size=tuple(args["size"]),
                keyframes=tuple(args["keyframes"]), on_frame=lambda i: print(i, flush=True))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_child(sys.argv[1]))
