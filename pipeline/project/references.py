"""Every file a storyboard names, checked before the first stage runs.

An anchor typo in shot 3 used to fail after shots 1–2 had rendered; a FIFO anchor hung
the render; a decompression-bomb PNG gave a traceback. :func:`check_references` looks
at every anchor image or video and the drift reference up front — exists, is a regular
file, and (images) has a header PIL can read with a sane pixel count — and names the
first bad one as ``file:line:col: key: message``, the storyboard's own error form.

Only headers are read: a 20 000 × 20 000 PNG is refused from its 33-byte IHDR, never
decoded. Torch-free; PIL is imported when a storyboard has an image to check.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.project.audio_track import audio_header, audio_problem
from pipeline.project.files import NotAFile, check_regular, describe_os_error, remembered
from pipeline.project.media import open_media
from pipeline.project.storyboard import IMAGE_SUFFIXES, Segment, Storyboard, StoryboardError, error_at

# Deferred imports: PIL, safetensors, av — only checking an image, a LoRA or a video reference needs them

#: Pixels an anchor or reference image may have (8K × 8K); a bigger one is a bomb or a mistake.
MAX_IMAGE_PIXELS = 8192 * 8192
#: The shot keys that name files, in the order a render checks them (before the anchor).
SHOT_FILE_KEYS = ("keyframes", "loras", "audio")


def check_references(sb: Storyboard, segment_ids: set[str] | None = None) -> None:
    """Raise :class:`StoryboardError` for the first referenced file that cannot be used.

    ``segment_ids`` limits the anchors checked to the shots a render will draft (all of
    them by default); the drift reference is checked whenever a drift guard is on.
    """

    def fail(index: int | None, key: str, message: str) -> StoryboardError:
        return error_at(sb.path, message, "segment" if index is not None else "project", index, key)

    for i, seg in enumerate(sb.segments):
        if segment_ids is not None and seg.id not in segment_ids:
            continue
        for key in (*SHOT_FILE_KEYS, "anchor"):
            problem = shot_file_problem(sb, seg, key)
            if problem:
                raise fail(i, key, problem)
    guarded = sb.project.drift_guard != "off" or any(s.drift_guard not in (None, "off") for s in sb.segments)
    ref = sb.project.drift_reference
    if guarded and ref != "first":
        path = sb.resolve(ref)
        problem = _problem(path, "image") if path.suffix.lower() in IMAGE_SUFFIXES else \
            f"{ref}: expected \"first\" or an image ({', '.join(sorted(IMAGE_SUFFIXES))})"
        if problem:
            raise fail(None, "drift_reference", problem)


def shot_file_problem(sb: Storyboard, seg: Segment, key: str) -> str:
    """What is wrong with the first file a shot's ``key`` (one of :data:`SHOT_FILE_KEYS`, or its
    image or video ``anchor``) names,
    or "": the render's check, one key at a time so the editor can refuse a field. Hub LoRAs
    are the renderer's to find (they live in the Hugging Face cache)."""
    if key == "keyframes":
        problems = (_problem(sb.resolve(kf.image), "image") for kf in seg.keyframes)
    elif key == "loras":
        problems = (_problem(sb.resolve(ref.path), "safetensors") for ref in seg.loras if not ref.repo)
    elif key == "audio" and seg.audio is not None:
        problems = iter([_problem(sb.resolve(seg.audio.path), "audio", seg.audio.start)])
    elif key == "anchor" and seg.anchor.kind in ("image", "video"):
        problems = iter([_problem(sb.resolve(seg.anchor.path), seg.anchor.kind)])  # "image" or "video"
    else:
        return ""
    return next(filter(None, problems), "")


def _problem(path: Path, header: str = "", start: float = 0.0) -> str:
    """What is wrong with one referenced file, or "" when it is usable. ``header``: "image",
    "audio" (from ``start`` s on) or "safetensors" also reads the file's header, once per
    version of it."""
    try:
        st = check_regular(path)
    except FileNotFoundError:
        return f"{path}: file not found"
    except (NotAFile, OSError) as exc:
        return describe_os_error(path, exc)
    if st.st_size == 0:
        return f"{path}: empty file"
    if not os.access(path, os.R_OK):
        return f"{path}: not readable (permission denied)"
    # Header reads (PIL, PyAV) are remembered per file version: the editor checks a
    # field's files on every keystroke, and a keystroke must not wait for one.
    if header == "image":
        return remembered(path, _image_problem, st)
    if header == "audio":
        return audio_problem(path, start, remembered(path, audio_header, st))
    if header == "safetensors":
        return remembered(path, _safetensors_problem, st)
    if header == "video":
        return remembered(path, _video_problem, st)
    return ""


def _video_problem(path: Path) -> str:
    """An anchor video must hold a picture: its first frame is decoded here, so a sound file or a
    damaged clip is refused at its key's line, not after the shots before it have rendered.
    Tags that are not UTF-8 (older cameras, Windows tools) are ignored, not a traceback."""
    import av

    try:
        with open_media(path) as container:
            if not container.streams.video:
                return f"{path}: no video stream in it (a sound file?)"
            if next(container.decode(video=0), None) is None:
                return f"{path}: no frames in its video stream"
    except (OSError, av.error.FFmpegError, ValueError) as exc:  # noqa: B014 - PyAV's errors are OSError too
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        return f"{path}: not a readable video ({reason})"
    return ""


def _safetensors_problem(path: Path) -> str:
    """A LoRA must at least be a safetensors file: its header is read (no tensor), so a wrong
    or damaged file is refused at its key's line, before any model loads."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except (SafetensorError, OSError) as exc:
        return f"{path}: not a safetensors file ({' '.join(str(exc).split())[:80]})"
    return ""


def _image_problem(path: Path) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
    except Image.DecompressionBombError:
        return f"{path}: image too large (a decompression bomb?)"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return f"{path}: not a readable image ({exc.__class__.__name__})"
    if width * height > MAX_IMAGE_PIXELS:
        return f"{path}: {width}×{height} is more than {MAX_IMAGE_PIXELS // 10**6} Mpx; not an anchor"
    return ""


__all__ = ["MAX_IMAGE_PIXELS", "SHOT_FILE_KEYS", "check_references", "shot_file_problem"]
