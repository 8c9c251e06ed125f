"""Field text ⇄ storyboard values, spelled the same in every form of the editor."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from pipeline.project.audio_track import AUDIO_SUFFIXES, AudioTrack, parse_audio
from pipeline.project.loras import LoraRef, parse_loras

_SIZE = re.compile(r"^\s*(\d+)\s*[x×,\s]\s*(\d+)\s*$")


def parse_size(text: str) -> list[int]:
    """``1920x1080`` (or ``1920×1080``, ``1920, 1080``) → ``[1920, 1080]``, as TOML holds it."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError("expected WIDTHxHEIGHT, e.g. 1920x1080")
    return [int(m.group(1)), int(m.group(2))]


def format_size(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_sigmas(text: str) -> list[float]:
    """``0.85, 0.725, 0.4219, 0`` → floats (commas or spaces); the range is the storyboard's to check."""
    try:
        return [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError:
        raise ValueError("expected numbers separated by commas, e.g. 0.85, 0.725, 0.4219, 0") from None


def format_sigmas(sigmas: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in sigmas)


def format_number(value: float) -> str:
    """Short (``0.8``, ``1``) but exact: a field shown and read back is the value in the file."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number ({what})") from None


#: How a Hub LoRA is written in the field: ``hf://owner/name/file.safetensors`` (the form
#: huggingface_hub's HfFileSystem gives a model repo's file).
HUB = "hf://"


def format_loras(loras: Sequence[LoraRef]) -> str:
    """``loras/grain.safetensors@0.8, hf://owner/name/file.safetensors@1``: one line, strengths after @."""
    return ", ".join(f"{HUB}{ref.repo}/{ref.path}@{format_number(ref.strength)}" if ref.repo
                     else f"{ref.path}@{format_number(ref.strength)}" for ref in loras)


def parse_loras_text(text: str) -> tuple[LoraRef, ...]:
    """The LoRAs line back into the ``loras`` key, through the storyboard's own checks
    (``@strength`` may be left off: 1). Blank is no LoRAs."""
    entries: list[dict[str, Any]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, at, strength = part.rpartition("@")
        entry: dict[str, Any] = {"path": (name if at else part).strip()}
        if at:
            entry["strength"] = _number(strength.strip(), "the strength after @")
        if entry["path"].startswith(HUB):
            owner, _, rest = entry["path"][len(HUB):].partition("/")
            repo, _, path = rest.partition("/")
            if not (owner and repo and path):
                raise ValueError(f"'{entry['path']}': write {HUB}owner/name/file.safetensors")
            entry.update(repo=f"{owner}/{repo}", path=path)
        entries.append(entry)
    return parse_loras(entries)


def format_audio(track: AudioTrack | None) -> str:
    """``track.wav``, or ``score.flac+12.5`` for the span that starts 12.5 s into the file."""
    if track is None:
        return ""
    return track.path + (f"+{format_number(track.start)}" if track.start else "")


def parse_audio_text(text: str) -> AudioTrack | None:
    """The sound line back into the ``audio`` key, through the storyboard's own checks; blank is none.
    ``+`` is the start only after a sound file's name (``a+b.wav`` is a file)."""
    text = text.strip()
    if not text:
        return None
    head, plus, start = text.rpartition("+")
    if plus and PurePosixPath(head.strip()).suffix.lower() in AUDIO_SUFFIXES:
        seconds = _number(start.strip().removesuffix("s").strip(), "the start in seconds after +")
        return parse_audio({"path": head.strip(), "start": seconds})
    return parse_audio(text)


__all__ = ["HUB", "format_audio", "format_loras", "format_number", "format_sigmas", "format_size",
           "parse_audio_text", "parse_loras_text", "parse_sigmas", "parse_size"]
