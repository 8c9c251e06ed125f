"""``audio = "track.wav"`` on a ``[[segment]]``: a shot driven by given sound.

The shot's audio latents are the encoded track, held fixed while the video is denoised, so
LTX-2's picture follows the sound; the film keeps the track itself. ``audio = { path =
"song.wav", start = 12.5 }`` takes the span of a longer file that starts 12.5 s in. (The
``[project]`` key ``audio = true/false`` is another thing: whether films have sound at all.)

Parsing and a header check only (torch-free; PyAV is imported when a file is checked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import tomlkit

from pipeline.project.media import open_media
from pipeline.project.tables import check_keys

# Deferred imports: av — the storyboard (and the TUI) import this module; only checking a track reads a file

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"}
_KEYS = ("path", "start")


@dataclass(frozen=True)
class AudioTrack:
    """The sound a shot follows: a file, from ``start`` seconds on, for the shot's length."""

    path: str
    start: float = 0.0

    def to_toml(self) -> Any:
        if not self.start:
            return self.path
        t = tomlkit.inline_table()
        t.update({"path": self.path, "start": self.start})
        return t


def parse_audio(value: str | dict[str, Any]) -> AudioTrack:
    """The segment's ``audio`` value as TOML gives it; raises ValueError saying what is wrong."""
    if isinstance(value, str):
        value = {"path": value}
    check_keys("", value, _KEYS)
    path, start = value.get("path"), value.get("start", 0.0)
    if not isinstance(path, str) or not path.strip():
        raise ValueError('expected a sound file ("track.wav") or { path = "track.wav", start = seconds }')
    if PurePosixPath(path).suffix.lower() not in AUDIO_SUFFIXES:
        raise ValueError(f"{path}: expected a sound file ({', '.join(sorted(AUDIO_SUFFIXES))})")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
        raise ValueError("start must be a number of seconds, 0 or more")
    return AudioTrack(path=path, start=float(start))


def audio_problem(path: Path, start: float, header: tuple[str, float | None]) -> str:
    """What is wrong with a track file (no audio stream, shorter than ``start``), or "" if usable.

    ``header`` is :func:`audio_header`'s answer, which the caller remembers per file version
    (the editor asks on every keystroke). The caller has checked the file exists."""
    problem, seconds = header
    if problem:
        return problem
    if seconds is not None and start >= seconds:
        return f"{path}: start = {start:g} s is past its end ({seconds:.2f} s)"
    return ""


def audio_header(path: Path) -> tuple[str, float | None]:
    """(what makes the file no track, or ""; its length in seconds when the header says it).

    Reads the container header only."""
    import av

    try:
        with open_media(path) as container:
            if not container.streams.audio:
                return f"{path}: no audio stream", None
            stream = container.streams.audio[0]
            seconds = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                       else container.duration / 1e6 if container.duration else None)
    except (av.error.FFmpegError, OSError, ValueError) as exc:  # noqa: B014 - PyAV's errors are OSError too
        # PyAV's message carries FFmpeg's errno and the path again: its strerror is the reason in words
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        return f"{path}: not a sound file PyAV can read ({reason})", None
    return "", seconds
