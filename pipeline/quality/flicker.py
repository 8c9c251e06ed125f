"""Flicker analysis: PSNR of the luma (Y) plane between every pair of consecutive frames.

"Looks wrong" becomes a number: a smooth shot has high, steady PSNR-Y from frame to
frame; a flash, a pop or a seam between chained segments is a sharp dip. The worker runs
this after draft, refine and encode of every segment; ``sulphur flicker`` runs it on any
video.

Conventions (fixed, so numbers are comparable everywhere):

* **Luma.** PSNR is computed on 8-bit *limited-range* (16–235) Y with a peak of 255 —
  exactly what FFmpeg's ``psnr`` filter measures on ``yuv420p`` video. Decoded video uses
  the stream's own Y plane (no RGB round trip, so the matrix is whatever the encoder
  used). RGB frames in memory are converted with a stated matrix: BT.709 by default
  (HD), BT.601 on request or when a stream without a YUV plane says so; the result is
  ``16 + 219 * (Kr R + Kg G + Kb B) / 255`` in float, i.e. what an ideal encoder would
  store, so in-memory and encoded numbers agree up to compression loss.
* **Identical frames** give ``inf`` (not an error). In JSON (``--json``) ``inf`` is
  written as ``null``, the same as msgspec writes it; in ``FlickerReport`` events it is
  ``WIRE_INF_DB`` (999 dB), because the protocol's ``float`` fields reject ``null`` on
  decode (read ``>= WIRE_INF_DB`` as "identical"). ``mean`` is over finite values
  only (one duplicated frame must not make the mean infinite); ``identical`` counts the
  infinite ones. ``median``/``minimum``/``p5`` include them (ordered last).
* **p5** is the nearest-rank 5th percentile (no interpolation, so never ``inf - inf``).
* **One frame** has no transitions: ``psnr == []`` and every statistic is ``inf`` (the
  minimum of an empty set); **no frames** or an unreadable file raise ``FlickerError``.
* Transition ``i`` is frame ``i`` → ``i + 1``; its timestamp is frame ``i + 1``'s time,
  the moment the jump becomes visible.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.project.layout import RenderFolder
from pipeline.project.media import open_media
from pipeline.project.storyboard import StoryboardError, load
from pipeline.quality import drift as drift_mod
from pipeline.wire.protocol import FlickerReport

if TYPE_CHECKING:
    from pipeline.wire.protocol import FlickerReport

# Deferred imports: av — only reading a video file needs PyAV

# Luma coefficients (Kr, Kg, Kb) of R'G'B' → Y'.
MATRICES: dict[str, tuple[float, float, float]] = {
    "bt709": (0.2126, 0.7152, 0.0722),
    "bt601": (0.299, 0.587, 0.114),
}
# FFmpeg AVColorSpace values that mean BT.601 (bt470bg, smpte170m, fcc).
_BT601_SPACES = {4, 5, 6}
_BT709_SPACES = {1}
PEAK = 255.0
# The wire protocol's floats cannot carry inf (msgspec writes null and then rejects it on
# decode), so events carry identical pairs as this value; see ``to_event``.
WIRE_INF_DB = 999.0
# A seam is flagged when its PSNR is this far below the lower of its two segments' medians.
SEAM_MARGIN_DB = 3.0
SPARK = "▁▂▃▄▅▆▇█"


class FlickerError(ValueError):
    """A video or frame source that cannot be analysed; ``str()`` is one line."""


@dataclass
class FlickerStats:
    """Per-pair PSNR-Y and its summary. ``psnr[i]`` is frame i → i+1, in dB."""

    psnr: list[float]
    mean: float
    median: float
    minimum: float
    p5: float
    worst: list[int]              # transition indices, worst (lowest dB) first
    frames: int = 0
    identical: int = 0            # pairs with identical Y (psnr inf)
    fps: float = 24.0
    times: list[float] = field(default_factory=list)  # per frame, seconds
    matrix: str = "bt709"         # how Y was obtained: "bt709"/"bt601" or "stream"
    width: int = 0
    height: int = 0
    source: str = ""

    def time_of(self, transition: int) -> float:
        """When transition ``i`` becomes visible: the time of frame ``i + 1``."""
        if transition + 1 < len(self.times):
            return self.times[transition + 1]
        return (transition + 1) / self.fps

    def worst_transitions(self) -> list[dict[str, Any]]:
        return [{"from": i, "to": i + 1, "time": round(self.time_of(i), 4), "psnr": _json_db(self.psnr[i])}
                for i in self.worst]

    def to_event(self, segment: str, stage: str, job_id: str = "",
                 seam_psnr: float | None = None) -> FlickerReport:
        """The ``FlickerReport`` the worker emits. ``inf`` becomes ``WIRE_INF_DB`` (999 dB)
        because the protocol's float fields cannot carry inf through JSON."""
        def wire(v: float) -> float:
            return WIRE_INF_DB if math.isinf(v) else float(v)

        return FlickerReport(job_id=job_id, segment=segment, stage=stage,
                             psnr=[wire(v) for v in self.psnr], mean=wire(self.mean),
                             median=wire(self.median), minimum=wire(self.minimum), worst=list(self.worst),
                             seam_psnr=None if seam_psnr is None else wire(seam_psnr))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``inf`` → ``None`` (``null``); per-frame times left out."""
        d = asdict(self)
        d.pop("times")
        for k in ("mean", "median", "minimum", "p5"):
            d[k] = _json_db(d[k])
        d["psnr"] = [_json_db(v) for v in self.psnr]
        d["worst"] = self.worst_transitions()
        return d


    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlickerStats:
        """Inverse of ``to_dict`` (e.g. stats cached with a segment, re-emitted on a hit)."""
        def db(v: float | None) -> float:
            return math.inf if v is None else float(v)

        known = {f for f in cls.__dataclass_fields__ if f not in ("times",)}
        kw = {k: v for k, v in d.items() if k in known}
        kw.update({k: db(d.get(k)) for k in ("mean", "median", "minimum", "p5")})
        kw["psnr"] = [db(v) for v in d.get("psnr", [])]
        kw["worst"] = [w["from"] if isinstance(w, dict) else int(w) for w in d.get("worst", [])]
        return cls(**kw)


def _json_db(v: float) -> float | None:
    return None if math.isinf(v) else round(float(v), 4)


# ------------------------------------------------------------------------------ luma


def luma(frame: np.ndarray, matrix: str = "bt709") -> np.ndarray:
    """Limited-range Y (float32, 16..235) of an H×W×3 uint8 RGB frame.

    An H×W array is taken as Y already (e.g. a decoded plane) and returned as float32.
    """
    if frame.ndim == 2:
        return frame.astype(np.float32, copy=False)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise FlickerError(f"expected an H×W×3 RGB frame or an H×W luma plane, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise FlickerError(f"expected uint8 RGB frames, got {frame.dtype}")
    try:
        kr, kg, kb = MATRICES[matrix]
    except KeyError:
        raise FlickerError(f"unknown luma matrix {matrix!r} (use {', '.join(MATRICES)})") from None
    s = 219.0 / 255.0
    # Fold the range scale into the coefficients: one pass of three multiply-adds.
    y = np.multiply(frame[..., 0], np.float32(kr * s), dtype=np.float32)
    y += frame[..., 1] * np.float32(kg * s)
    y += frame[..., 2] * np.float32(kb * s)
    y += np.float32(16.0)
    return y


def _sse(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of squared differences. float32 BLAS dot: ~1 ms for 1080p; float32
    accumulation error is far below the 0.01 dB we report."""
    d = np.subtract(a, b, dtype=np.float32).ravel()
    return float(np.dot(d, d))


def _psnr_from_mse(mse: float) -> float:
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(PEAK * PEAK / mse)


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two luma planes of the same shape; inf when identical."""
    if a.shape != b.shape:
        raise FlickerError(f"frame size changed from {a.shape[1]}×{a.shape[0]} to {b.shape[1]}×{b.shape[0]}")
    return _psnr_from_mse(_sse(a, b) / a.size)


def seam_psnr(last_frame: np.ndarray, first_frame: np.ndarray, matrix: str = "bt709") -> float:
    """PSNR-Y between the last frame of one segment and the first frame of the next."""
    return psnr_y(luma(last_frame, matrix), luma(first_frame, matrix))


# ------------------------------------------------------------------------- analysis


def _summarise(values: list[float], worst: int) -> tuple[float, float, float, float, list[int], int]:
    if not values:
        return math.inf, math.inf, math.inf, math.inf, [], 0
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    mean = float(finite.mean()) if finite.size else math.inf
    ordered = np.sort(arr)  # inf sorts last
    median = float(np.median(ordered))
    p5 = float(ordered[max(0, math.ceil(0.05 * arr.size) - 1)])
    # Stable sort: on ties the earlier transition is listed first.
    worst_idx = [int(i) for i in np.argsort(arr, kind="stable")[:max(0, worst)]]
    return mean, median, float(ordered[0]), p5, worst_idx, int(arr.size - finite.size)


def _stats_from_planes(planes: Iterable[tuple[np.ndarray, float]], *, fps: float, worst: int,
                       matrix: str, source: str = "") -> FlickerStats:
    values: list[float] = []
    times: list[float] = []
    prev: np.ndarray | None = None
    shape: tuple[int, ...] = (0, 0)
    for y, t in planes:
        if prev is not None:
            values.append(psnr_y(prev, y))
        else:
            shape = y.shape
        prev = y
        times.append(t)
    if not times:
        raise FlickerError(f"{source or 'input'}: no frames")
    mean, median, minimum, p5, worst_idx, identical = _summarise(values, worst)
    return FlickerStats(psnr=values, mean=mean, median=median, minimum=minimum, p5=p5, worst=worst_idx,
                        frames=len(times), identical=identical, fps=fps, times=times, matrix=matrix,
                        width=int(shape[1]), height=int(shape[0]), source=source)


def analyze_frames(frames: np.ndarray | Iterable[np.ndarray], fps: float = 24.0, worst: int = 5,
                   matrix: str = "bt709") -> FlickerStats:
    """PSNR-Y of every consecutive pair of RGB frames (T×H×W×3 uint8 or any iterable of
    H×W×3 frames; H×W arrays are taken as luma). Streams: only two frames of Y are held."""
    if isinstance(frames, np.ndarray) and (frames.ndim not in (3, 4) or (frames.ndim == 3 and frames.shape[2] == 3)):
        raise FlickerError(f"expected T×H×W×3 frames (or T×H×W luma), got shape {frames.shape}")
    planes = ((luma(np.asarray(f), matrix), i / fps) for i, f in enumerate(frames))
    return _stats_from_planes(planes, fps=fps, worst=worst, matrix=matrix)


def _stream_matrix(colorspace: int, height: int) -> str:
    if colorspace in _BT601_SPACES:
        return "bt601"
    if colorspace in _BT709_SPACES:
        return "bt709"
    return "bt709" if height >= 720 else "bt601"  # unspecified: FFmpeg's own guess by size


_PLANAR_8BIT = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
                "yuvj440p", "yuv411p", "yuv410p", "nv12", "nv21", "nv16", "gray", "yuva420p"}


def _decode_planes(path: Path, info: dict[str, Any]) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (Y plane, time) per decoded frame, one frame in memory at a time."""
    import av

    try:
        container = open_media(path)
    except FileNotFoundError:
        raise FlickerError(f"{path}: no such file") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise FlickerError(f"{path}: not a readable video ({_one_line(exc)})") from None
    with container:
        if not container.streams.video:
            raise FlickerError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        info["fps"] = float(rate) if rate else 24.0
        n = 0
        try:
            for frame in container.decode(stream):
                fmt = frame.format.name
                if fmt in _PLANAR_8BIT:
                    plane = frame.planes[0]
                    buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                    # Copy: the decoder may recycle the frame's buffer.
                    y = np.array(buf[:, :plane.width])
                    info["matrix"] = "stream"
                else:
                    # No 8-bit Y plane (RGB codecs, 10-bit): convert with the stream's matrix.
                    m = _stream_matrix(int(frame.colorspace or 2), frame.height)
                    y = luma(frame.to_ndarray(format="rgb24"), m)
                    info["matrix"] = m
                t = float(frame.time) if frame.time is not None else n / info["fps"]
                if n == 0:
                    info["first"], info["first_y"] = frame, y
                elif n == 1:
                    info["second_y"] = y  # the film's first frame when the runner skips frame 0
                info["last"], info["last_y"] = frame, y
                n += 1
                yield y, t
        except av.error.FFmpegError as exc:
            raise FlickerError(f"{path}: decoding failed after {n} frames ({_one_line(exc)})") from None


def _analyze_video(path: str | os.PathLike[str], worst: int = 5) -> tuple[FlickerStats, dict[str, Any]]:
    """``analyze_video`` plus what the decode saw: fps, and the first and last frames
    (``first``/``last`` as av.VideoFrame, ``first_y``/``last_y`` as Y planes)."""
    path = Path(path)
    _check_file(path)
    info: dict[str, Any] = {"fps": 24.0, "matrix": "stream"}
    planes = _decode_planes(path, info)
    # fps is only known after the container is open: peek at the first frame.
    first = next(planes, None)
    if first is None:
        raise FlickerError(f"{path}: no frames")

    def chain() -> Iterator[tuple[np.ndarray, float]]:
        yield first
        yield from planes

    stats = _stats_from_planes(chain(), fps=info["fps"], worst=worst, matrix=info["matrix"], source=str(path))
    return stats, info


def analyze_video(path: str | os.PathLike[str], worst: int = 5) -> FlickerStats:
    """PSNR-Y of every consecutive pair of a video file, decoded as a stream."""
    return _analyze_video(path, worst)[0]


def first_last_frames(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """First and last decoded RGB frames of a video and its frame count (streaming)."""
    stats, info = _analyze_video(path, worst=0)
    return info["first"].to_ndarray(format="rgb24"), info["last"].to_ndarray(format="rgb24"), stats.frames


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FlickerError(f"{path}: no such file")
    if not path.is_file():
        raise FlickerError(f"{path}: not a file")


def _one_line(exc: BaseException) -> str:
    """The reason in words: PyAV's ``[Errno 1094995529] Invalid data ...: 'x.mp4'`` is its
    ``strerror`` ("Invalid data found when processing input"), without the errno and the path."""
    reason = getattr(exc, "strerror", None)  # OSError, and PyAV's FFmpegError (a ValueError)
    if isinstance(reason, str) and reason:
        return " ".join(reason.split())
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------------- seams


@dataclass
class Seam:
    """The boundary between two consecutive segments of a film."""

    before: str
    after: str
    frame: int        # film frame index where ``after`` starts (transition frame-1 → frame)
    time: float
    psnr: float
    threshold: float  # flagged below this: SEAM_MARGIN_DB under the lower segment median
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["psnr"] = _json_db(self.psnr)
        d["threshold"] = _json_db(self.threshold)
        return d


def _storyboard_of(render_dir: Path) -> Any:
    """The storyboard that rendered ``renders/<story>/`` (the runner's layout), or None."""
    toml_path = RenderFolder(render_dir).storyboard_path
    if not toml_path.is_file():
        return None

    try:
        return load(toml_path)
    except (StoryboardError, OSError):
        return None


def segment_order(render_dir: Path) -> tuple[list[Path], str]:
    """Segment files of ``renders/<story>/`` in film order, and where the order came from.

    Order of preference: ``film.json`` written by the runner (what was actually rendered:
    ``{"segments": [{"id": ..., "frames": ..., "offset": ...}, ...]}``), then the
    storyboard ``<render_dir>/../../<story>.toml``, then file modification time.
    """
    seg_dir = RenderFolder(render_dir).segments
    files = {p.stem: p for p in seg_dir.glob("*.mp4")} if seg_dir.is_dir() else {}
    if not files:
        raise FlickerError(f"{render_dir}: no segments/*.mp4")
    manifest = RenderFolder(render_dir).film_manifest
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            ids = [s["id"] if isinstance(s, dict) else str(s) for s in data.get("segments", [])]
            ids = [i for i in ids if i in files]
            if ids:
                return [files[i] for i in ids], "film.json"
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            pass
    board = _storyboard_of(render_dir)
    if board is not None:
        ids = [seg.id for seg in board.segments if seg.id in files]
        if ids:
            return [files[i] for i in ids], f"storyboard {board.path.name}"
    return sorted(files.values(), key=lambda p: (p.stat().st_mtime, p.name)), "file mtime"


def _manifest_entries(render_dir: Path) -> dict[str, dict[str, Any]]:
    """``film.json`` entries per segment id: ``offset`` (film frame index where the
    segment's first kept frame lands) and ``skip_first`` (frame 0 repeats the previous
    segment's last frame, the anchor, and is left out of the film)."""
    try:
        data = json.loads(RenderFolder(render_dir).film_manifest.read_text())
        return {str(s["id"]): s for s in data.get("segments", []) if isinstance(s, dict) and "id" in s}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _reference_image(render_dir: Path) -> tuple[np.ndarray | None, str]:
    """The drift reference a storyboard names (``drift_reference = <image>``), if any."""
    board = _storyboard_of(render_dir)
    ref = getattr(getattr(board, "project", None), "drift_reference", "first")
    if board is None or not ref or ref == "first":
        return None, "first segment's last frame"
    import av

    path = board.resolve(ref)
    try:
        with open_media(path) as c:
            for frame in c.decode(video=0):
                return frame.to_ndarray(format="rgb24"), str(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise FlickerError(f"{path}: drift reference not readable ({_one_line(exc)})") from None
    raise FlickerError(f"{path}: drift reference has no image")


def analyze_seams(render_dir: str | os.PathLike[str], worst: int = 5) -> dict[str, Any]:
    """Per-segment flicker, seam PSNR at every boundary, and colour drift of each segment's
    first/last frame against the film's reference (the first segment's last frame)."""
    render_dir = Path(render_dir)
    files, order = segment_order(render_dir)
    manifest = _manifest_entries(render_dir)
    segments: list[dict[str, Any]] = []
    seams: list[Seam] = []
    offset = 0
    prev: tuple[str, np.ndarray, FlickerStats] | None = None
    ref_image, ref_name = _reference_image(render_dir)
    reference = drift_mod.frame_stats(ref_image) if ref_image is not None else None
    for path in files:
        stats, info = _analyze_video(path, worst=worst)
        n = stats.frames
        # The runner's manifest knows where each segment sits in final.mp4 and whether it
        # left out frame 0 (the repeated anchor): then the seam the viewer sees is the
        # previous last frame → this segment's frame 1.
        entry = manifest.get(path.stem, {})
        offset = entry["offset"] if isinstance(entry.get("offset"), int) else offset
        skip = bool(entry.get("skip_first")) and "second_y" in info
        first_stats = drift_mod.frame_stats(info["first"].to_ndarray(format="rgb24"))
        last_stats = drift_mod.frame_stats(info["last"].to_ndarray(format="rgb24"))
        if reference is None:
            reference = last_stats
        if prev is not None:
            pid, plast_y, pstats = prev
            # Same Y as inside the segments (the stream's own plane), so the seam's dB
            # compares directly with the segments' transitions.
            db = psnr_y(plast_y, info["second_y"] if skip else info["first_y"])
            threshold = min(pstats.median, stats.median) - SEAM_MARGIN_DB
            seams.append(Seam(before=pid, after=path.stem, frame=offset, time=round(offset / stats.fps, 4),
                              psnr=db, threshold=threshold, flagged=db < threshold))
        segments.append({"id": path.stem, "path": str(path), "offset": offset, "frames": n, "skip_first": skip,
                         "flicker": stats.to_dict(), "first": first_stats, "last": last_stats,
                         "drift": drift_mod.drift(last_stats, reference)})
        prev = (path.stem, info["last_y"], stats)
        offset += n - int(skip)
    return {"render_dir": str(render_dir), "order": order, "drift_reference": ref_name, "segments": segments,
            "seams": [s.to_dict() for s in seams], "_seams": seams}


# ------------------------------------------------------------------------------- CLI


def sparkline(values: list[float], width: int = 72) -> str:
    """Unicode sparkline of dB values (low = ▁); inf shown as █. Long series are binned
    by their minimum so a single bad transition stays visible."""
    if not values:
        return ""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size > width:
        edges = np.linspace(0, arr.size, width + 1).astype(int)
        arr = np.array([arr[a:b].min() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return SPARK[-1] * arr.size
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo or 1.0
    out = []
    for v in arr:
        if not math.isfinite(v):
            out.append(SPARK[-1])
        else:
            out.append(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))])
    return "".join(out)


def _fmt_db(v: float) -> str:
    return "inf (identical)" if math.isinf(v) else f"{v:.2f} dB"


def format_report(stats: FlickerStats) -> str:
    lines = [f"{stats.source or 'frames'}: {stats.frames} frames, {stats.width}×{stats.height}, "
             f"{stats.fps:g} fps, Y from {stats.matrix}"]
    if not stats.psnr:
        lines.append("  one frame: no transitions to measure")
        return "\n".join(lines)
    lines.append(f"  PSNR-Y  mean {_fmt_db(stats.mean)}  median {_fmt_db(stats.median)}  "
                 f"min {_fmt_db(stats.minimum)}  p5 {_fmt_db(stats.p5)}"
                 + (f"  identical pairs {stats.identical}" if stats.identical else ""))
    finite = [v for v in stats.psnr if math.isfinite(v)]
    rng = f"{min(finite):.1f}–{max(finite):.1f} dB" if finite else "all identical"
    lines.append(f"  {sparkline(stats.psnr)}  ({rng})")
    if stats.worst:
        lines.append("  worst transitions:")
        for i in stats.worst:
            lines.append(f"    frame {i:>5} → {i + 1:<5} t={stats.time_of(i):8.3f}s  {_fmt_db(stats.psnr[i])}")
    return "\n".join(lines)


def format_seams(report: dict[str, Any]) -> str:
    lines = [f"seams of {report['render_dir']} (order from {report['order']}; "
             f"drift against {report['drift_reference']}):"]
    for seg in report["segments"]:
        d = seg["drift"]
        lines.append(f"  {seg['id']:<16} frames {seg['offset']:>5}–{seg['offset'] + seg['frames'] - 1 - int(seg['skip_first']):<5} "
                     f"median {_fmt_db(seg['flicker']['median'] if seg['flicker']['median'] is not None else math.inf)}"
                     f"  drift: contrast ×{d['contrast']:.3f} saturation ×{d['saturation']:.3f} "
                     f"ΔL* {d['L_mean']:+.2f} ΔE {d['delta_e']:.2f}")
    if not report["_seams"]:
        lines.append("  one segment: no seams")
    for s in report["_seams"]:
        flag = "  ⚠ FLASH" if s.flagged else ""
        lines.append(f"  seam {s.before} → {s.after} at frame {s.frame} (t={s.time:.3f}s): "
                     f"{_fmt_db(s.psnr)} (flag below {s.threshold:.2f} dB){flag}")
    for d in report["seams"]:
        if d.get("film_psnr") is not None:
            lines.append(f"  in the film, frame {d['frame'] - 1} → {d['frame']}: {d['film_psnr']:.2f} dB")
    return "\n".join(lines)
