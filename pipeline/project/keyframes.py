"""Two per-shot keys of a ``[[segment]]``: ``keyframes`` and ``retake``.

``keyframes = [{ frame = 0, image = "a.png" }, { frame = -1, image = "b.png", strength = 0.8 }]``
conditions any frames of a shot on stills, in the draft and again at the refine size;
``retake = [a, b]`` regenerates frames a..b of a rendered shot and keeps every other frame
as it was. Parsing here returns plain
values or raises ``ValueError`` with the one-line reason; :mod:`pipeline.project.storyboard`
adds file:line:col. Torch-free and import-light (the TUI reads storyboards).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from pipeline.project.files import file_digest
from pipeline.project.tables import check_keys, type_name

#: The model families that honour keyframes and retakes (LTX-2's condition pipeline).
FAMILIES = ("ltx2",)
#: Keys of a keyframe table.
_KEYFRAME_KEYS = ("frame", "image", "strength")


@dataclass(frozen=True)
class Keyframe:
    """One still a shot's frame is conditioned on; ``frame`` < 0 counts from the end."""

    frame: int
    image: str
    strength: float = 1.0

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frame": self.frame, "image": self.image}
        if self.strength != 1.0:
            out["strength"] = self.strength
        return out

    def index(self, frames: int) -> int:
        """The frame number this keyframe lands on in a shot of ``frames`` frames."""
        return self.frame if self.frame >= 0 else frames + self.frame


def parse_keyframes(value: list[Any], frames: int) -> tuple[Keyframe, ...]:
    """``keyframes`` as TOML gives it, checked against the shot's ``frames``; ValueError says why."""
    out: list[Keyframe] = []
    seen: dict[int, int] = {}
    for n, item in enumerate(value):
        where = f"keyframe {n + 1}"
        if not isinstance(item, dict):
            raise ValueError(f'{where}: expected {{ frame = N, image = "still.png" }}, got {type_name(item)}')
        check_keys(where, item, _KEYFRAME_KEYS)
        frame, image, strength = item.get("frame"), item.get("image"), item.get("strength", 1.0)
        if not isinstance(frame, int) or isinstance(frame, bool):
            raise ValueError(f"{where}: frame must be an integer (negative counts from the end)")
        if not -frames <= frame < frames:
            raise ValueError(f"{where}: frame {frame} is outside the shot's {frames} frames "
                             f"({-frames}..{frames - 1})")
        if not isinstance(image, str) or not image.strip():
            raise ValueError(f'{where}: image must be a file path, e.g. image = "still.png"')
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (
                math.isfinite(strength) and 0.0 <= strength <= 1.0):
            raise ValueError(f"{where}: strength must be a number between 0 and 1")
        kf = Keyframe(frame=frame, image=image, strength=float(strength))
        at = kf.index(frames)
        if at in seen:
            raise ValueError(f"{where}: frame {at} already has keyframe {seen[at] + 1}")
        seen[at] = n
        out.append(kf)
    return tuple(out)


def parse_retake(value: list[Any], frames: int) -> tuple[int, int]:
    """``retake = [first, last]`` (inclusive frame numbers) checked against the shot's ``frames``."""
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError("expected [first, last]: two frame numbers")
    a, b = value
    if not 0 <= a <= b < frames:
        raise ValueError(f"[{a}, {b}] must satisfy 0 <= first <= last <= {frames - 1} (the shot has {frames} frames)")
    if a == 0 and b == frames - 1:
        raise ValueError("a retake of every frame is a new shot: change its seed instead")
    return int(a), int(b)


# ------------------------------------------------------------ one line of text (the editor)


def format_keyframes(keyframes: tuple[Keyframe, ...]) -> str:
    """``0=start.png, -1=end.png@0.8``: the keyframes as the shot editor shows them on one line."""
    return ", ".join(f"{kf.frame}={kf.image}" + (f"@{kf.strength:g}" if kf.strength != 1.0 else "")
                     for kf in keyframes)


def keyframes_from_text(text: str, frames: int) -> tuple[Keyframe, ...]:
    """The editor's line back into keyframes, through the storyboard's own checks."""
    items: list[dict[str, Any]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        frame, sep, image = part.partition("=")
        if not sep:
            raise ValueError(f"'{part}': write frame=image, e.g. -1=end.png")
        item: dict[str, Any] = {"frame": _number(frame.strip(), int), "image": image.strip()}
        path, at, strength = item["image"].rpartition("@")
        if at:
            item.update(image=path.strip(), strength=_number(strength.strip(), float))
        items.append(item)
    return parse_keyframes(items, frames)


def retake_from_text(text: str, frames: int) -> tuple[int, int] | None:
    """``5-8`` (or ``5, 8``) into a retake span; blank is no retake."""
    if not text.strip():
        return None
    parts = text.replace("-", " ", 1).replace(",", " ").split() if not text.lstrip().startswith("-") else [text]
    return parse_retake([_number(p, int) for p in parts], frames)


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None


# ------------------------------------------------------------------ what reaches a key


def keyframe_params(keyframes: tuple[Keyframe, ...], frames: int, resolve: Any) -> list[dict[str, Any]]:
    """What the draft key holds of a shot's keyframes: where each lands, how strongly, which picture."""
    return [{"frame": kf.index(frames), "strength": kf.strength, "image": file_digest(resolve(kf.image))}
            for kf in keyframes]


def retake_seed(seed: int, span: tuple[int, int]) -> int:
    """The retake's noise: its own (not the original's), the same for the same shot and span."""
    blob = f"retake:{seed}:{span[0]}:{span[1]}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:7], "big")


def unsupported(segment: Any, family: str) -> str:
    """The first key of ``segment`` its model ``family`` cannot honour ("" when none)."""
    if family in FAMILIES:
        return ""
    for key in ("keyframes", "retake"):
        if getattr(segment, key):
            return key
    return ""


__all__ = ["FAMILIES", "Keyframe", "file_digest", "format_keyframes", "keyframe_params", "keyframes_from_text",
           "parse_keyframes", "parse_retake", "retake_from_text", "retake_seed", "unsupported"]
