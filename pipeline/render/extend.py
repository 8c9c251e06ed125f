"""``sulphur extend CLIP --prompt "…"``: continue a video clip with an image-to-video model.

Extending is image-to-video from the clip's last frame, then concatenation (seed 003).
This writes a one-segment storyboard beside the output with
``anchor = { video = "clip.mp4" }`` — so the continuation is an ordinary, cached,
re-renderable Sulphur project — renders it, then writes the original clip followed by the
continuation without its first frame (which re-creates the anchor: keeping it would show
the seam frame twice), at the clip's own fps and size. The clip's audio is kept; the
continuation gets silence.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.models.registry import get_preset
from pipeline.project import layout
from pipeline.project.files import check_regular, describe_os_error, kind_of
from pipeline.project.media import open_media
from pipeline.project.storyboard import StoryboardError, load, parse
from pipeline.render.cache import StageCache

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from pipeline.models.registry import Preset
    from pipeline.project.storyboard import Storyboard
    from pipeline.wire.protocol import Event

# Deferred imports: av, numpy, tomlkit, pipeline.render.runner, pipeline.stages.encode — `sulphur extend` checks
#   its arguments before loading them

DEFAULT_PRESET = "ltxv-0.9"   # the brief's pick for quick, directed extensions
SEGMENT_ID = "continuation"


@dataclass(frozen=True)
class ClipInfo:
    fps: Fraction
    size: tuple[int, int]     # (width, height)
    frames: int
    audio: bool


def probe(path: Path) -> ClipInfo:
    """fps, size and the decoded frame count of a video (containers' frame counts are not trusted)."""
    import av


    try:
        if check_regular(path).st_size == 0:  # a FIFO or device would hang av.open: refused unopened
            raise ValueError(f"{path}: empty file, not a video")
        with open_media(path) as c:
            if not c.streams.video:
                raise ValueError(f"{path} has no video stream")
            v = c.streams.video[0]
            fps = Fraction(v.average_rate) if v.average_rate else Fraction(v.guessed_rate or 24)
            size = (v.codec_context.width, v.codec_context.height)
            audio = bool(c.streams.audio)
            frames = sum(1 for _ in c.decode(video=0))
    except av.error.FFmpegError as exc:  # str() of some is a bare errno (1094995529): use the words
        raise ValueError(f"{path}: not a readable video ({exc.strerror or type(exc).__name__})") from None
    except OSError as exc:
        raise ValueError(describe_os_error(path, exc)) from None
    if frames == 0:
        raise ValueError(f"{path} has no decodable video frames")
    return ClipInfo(fps=fps, size=size, frames=frames, audio=audio)


def draft_size_for(preset: Preset, clip_size: tuple[int, int]) -> tuple[int, int]:
    """The preset's draft area at the clip's aspect ratio, on the preset's size grid.

    Presets whose model only runs at one size (CogVideoX's learned positional
    embeddings) keep that size; the anchor is then centre-cropped to it.
    """
    fixed = preset.extra.get("fixed_size")
    if fixed:
        return int(fixed[0]), int(fixed[1])
    w0, h0 = preset.draft_size
    aspect = clip_size[0] / clip_size[1]
    width = math.sqrt(w0 * h0 * aspect)
    return preset.round_size((round(width), round(width / aspect)))


def write_storyboard(path: Path, clip: Path, prompt: str, preset: Preset, info: ClipInfo, *, frames: int,
                     seed: int, steps: int | None, enhance: bool) -> Path:
    """The one-segment storyboard of an extension (tomlkit, so any prompt text is escaped right)."""
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"sulphur extend {clip.name}: re-render with `sulphur render {path.name}`"))
    project = tomlkit.table()
    project["title"] = f"{clip.stem} extended"
    project["preset"] = preset.name
    project["fps"] = max(1, round(info.fps))
    project["seed"] = seed
    project["draft_size"] = list(draft_size_for(preset, info.size))
    project["output_size"] = list(info.size)
    project["audio"] = False
    project["enhance"] = enhance
    if steps:
        project["steps"] = steps
    doc["project"] = project
    seg = tomlkit.table()
    seg["id"] = SEGMENT_ID
    seg["prompt"] = prompt
    seg["frames"] = frames
    anchor = tomlkit.inline_table()
    anchor["video"] = os.path.relpath(clip.resolve(), path.parent.resolve())
    seg["anchor"] = anchor
    aot = tomlkit.aot()
    aot.append(seg)
    doc["segment"] = aot
    text = tomlkit.dumps(doc)
    try:  # validated before a byte is written: a refusal names what the user gave, leaves no file
        parse(text, path)
    except StoryboardError as exc:
        raise ValueError(f"{clip}: cannot be extended ({exc.key or path.name}: {exc.message})") from None
    tmp = path.with_name(f".{path.name}.partial")  # no mkdir: out_problem refused a missing folder
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def default_out(clip: Path) -> Path:
    """Where an extension goes without ``--out``: ``CLIP-extended.mp4`` beside the clip."""
    return clip.with_name(f"{clip.stem}-extended.mp4")


def story_path(out: Path) -> Path:
    """The storyboard an extension writes beside its output."""
    return out.with_name(f"{out.stem}.extend.toml")


def out_problem(clip: Path, out: Path | None) -> str:
    """Why the output cannot be written, in one line, or "" (stat only: checked before any
    render, which used to run to the end and then fail on a folder or an empty name)."""
    label = f"--out {out}" if out is not None else str(default_out(clip))
    out = Path(out) if out is not None else default_out(clip)
    name = default_out(clip).name
    if out.name in ("", ".", ".."):
        return f"{label}: not a file name; give one such as {out / name}"
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # the folder check below names the file standing in the path
    except OSError as exc:
        return f"{label}: {describe_os_error(None, exc)}"
    if st is not None and stat.S_ISDIR(st.st_mode):
        return f"{label}: is a folder; give a file name such as {out / name}"
    if st is not None and not stat.S_ISREG(st.st_mode):
        return f"{label}: is {kind_of(st.st_mode)}, not a regular file"
    folder = out.parent
    try:
        if not stat.S_ISDIR(os.stat(folder).st_mode):
            return f"{label}: {folder} is not a folder"
    except FileNotFoundError:
        return f"{label}: folder {folder} does not exist"
    except NotADirectoryError:
        return f"{label}: {folder} is not a folder"
    except OSError as exc:
        return f"{label}: {describe_os_error(folder, exc)}"
    if out.resolve() == Path(clip).resolve():
        return "--out must differ from the input clip"
    story = story_path(out)
    try:
        check_regular(story)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a folder or FIFO where the storyboard goes
        return describe_os_error(story, exc)
    return ""


def extend(clip: Path, prompt: str, *, preset: str = DEFAULT_PRESET, frames: int | None = None,
           out: Path | None = None, seed: int = 0, steps: int | None = None, enhance: bool = False,
           emit: Callable[[Event], None] = lambda e: None, cancel: threading.Event | None = None) -> Path:
    """Extend ``clip`` by about ``frames`` generated frames; returns the written video."""
    from pipeline.render.runner import render

    clip = Path(clip)
    problem = out_problem(clip, out)
    if problem:
        raise ValueError(problem)
    info = probe(clip)
    chosen = get_preset(preset)
    out = Path(out) if out is not None else default_out(clip)
    wanted = frames if frames is not None else round(2 * info.fps) + 1
    # 1. The storyboard beside the output, then an ordinary render of it. A render that fails
    #    puts back what was there (nothing, or an earlier extension's storyboard): re-running
    #    the command writes the same storyboard again and finds the finished stages cached.
    story = story_path(out)
    before = story.read_bytes() if story.is_file() else None
    write_storyboard(story, clip, prompt, chosen, info, frames=wanted, seed=seed, steps=steps, enhance=enhance)
    try:
        render(story, emit=emit, cancel=cancel)
    except BaseException:
        _put_back(story, before)
        raise
    # 2. The continuation's upscaled frames (lossless, from the cache) at the clip's size.
    continuation = _rendered_frames(load(story))
    # 3. Clip + continuation[1:] in one encode, at the clip's exact fps.
    _join(clip, info, continuation, out)
    return out


def _put_back(path: Path, before: bytes | None) -> None:
    """Restore ``path`` to ``before`` (``None``: it did not exist), best effort."""
    try:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
    except OSError:
        pass  # the render's own error is the one to report


def _rendered_frames(sb: Storyboard) -> np.ndarray:
    import numpy as np


    manifest = json.loads(sb.renders.film_manifest.read_text())
    entry = next(s for s in manifest["segments"] if s["id"] == SEGMENT_ID)
    art = StageCache(layout.cache_dir(sb.folder)).get("upscale", entry["upscale_key"])
    if art is None:
        raise RuntimeError("the continuation's frames are missing from the cache")
    return np.load(art.file("frames.npy"), mmap_mode="r")


def _join(clip: Path, info: ClipInfo, continuation: np.ndarray, out: Path) -> None:
    import av
    import numpy as np

    from pipeline.stages.encode import AUDIO_RATE, FilmPart, encode_film

    with tempfile.TemporaryDirectory(prefix=".sulphur-extend-", dir=out.parent) as tmpdir:
        w, h = info.size
        # Decoded clip frames go to a memmap: host memory stays at one frame per step.
        head = np.lib.format.open_memmap(Path(tmpdir) / "clip.npy", mode="w+", dtype=np.uint8,
                                         shape=(info.frames, h, w, 3))
        audio_chunks: list[np.ndarray] = []
        with open_media(clip) as c:
            for i, frame in enumerate(c.decode(video=0)):
                head[i] = frame.to_ndarray(format="rgb24")
        if info.audio:
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
            with open_media(clip) as c:
                for frame in c.decode(audio=0):
                    audio_chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
                audio_chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        audio = np.concatenate(audio_chunks, axis=1).astype(np.float32) if audio_chunks else None
        parts = [FilmPart(frames=head, audio=audio, sample_rate=AUDIO_RATE),
                 FilmPart(frames=continuation, audio=None, sample_rate=AUDIO_RATE, skip_first=True)]
        tmp = Path(tmpdir) / "joined.mp4"
        encode_film(tmp, parts, fps=info.fps, size=info.size)  # type: ignore[arg-type]  # Fraction works
        del head
        os.replace(tmp, out)
