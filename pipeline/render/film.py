"""Film assembly: ``final.mp4`` from every segment's cached stages.

The video is the segments' own encoded H.264 copied one after the other (see
:func:`pipeline.stages.encode.join_film`); a full re-encode when they can't be joined.
``film.json`` beside it says where each segment sits and what the film was made from,
so an unchanged film is not assembled again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.project.layout import RenderFolder
from pipeline.render.cache import Artifact, digest
from pipeline.render.job import RenderJob
from pipeline.render.outputs import publishing
from pipeline.stages.encode import EncodeStage, FilmPart, join_film, repeats_anchor
from pipeline.wire import protocol
from pipeline.wire.protocol import Event


@dataclass
class CachedSegment:
    """A segment's cache entries the film is made from (looked up, never run)."""

    frames: Artifact            # the frames that get encoded (upscale, or grade)
    draft: Artifact             # its audio and sample rate
    encode: Artifact | None     # the encoded segment, None when only the frames are cached
    kept: int                   # frames of it the film shows


def assemble_film(job: RenderJob, lookup: Callable[[int], CachedSegment | None], renders: RenderFolder,
                  emit: Callable[[Event], None]) -> Path:
    """``renders/<stem>/final.mp4`` when every segment is cached, else the folder (and a log line)."""
    parts, manifest = [], []
    for index, seg in enumerate(job.storyboard.segments):
        cached = lookup(index)
        if cached is None:
            emit(protocol.Log(message=f"final film not assembled: segment {seg.id} is not rendered yet"))
            return renders.root
        frames = np.load(cached.frames.file("frames.npy"), mmap_mode="r")[:cached.kept]
        draft, encode = cached.draft, cached.encode
        audio = np.load(draft.file("audio.npy")) if draft.file("audio.npy").exists() else None
        skip = repeats_anchor(index, seg)
        parts.append(FilmPart(frames=frames, audio=audio, sample_rate=int(draft.meta.get("sample_rate", 48000)),
                              skip_first=skip, encoded=encode.file("segment.mp4") if encode else None,
                              name=seg.id))
        manifest.append({"id": seg.id, "frames": len(frames), "skip_first": skip,
                         "upscale_key": cached.frames.key, "draft_key": draft.key,
                         "encode_key": encode.key if encode else None})
    final = renders.final
    film_key = digest(json.dumps({"encoder": EncodeStage.version, "film": "remux", "segments": manifest},
                                 sort_keys=True).encode())
    manifest_path = renders.film_manifest
    if _unchanged(final, manifest_path, film_key):
        return final
    total = sum(len(p.frames) - int(p.skip_first) for p in parts)
    emit(protocol.StageStarted(segment="", stage="film", total_steps=total))
    t0 = time.perf_counter()
    with publishing(final, "final film") as tmp:  # unique temporary; removed, one line, on a full disk
        _, reencoded = join_film(tmp, parts, fps=job.project.fps, size=job.project.output_size)
    if reencoded:
        emit(protocol.Log(level="warning", message=f"final film re-encoded, segments not joinable by "
                                                    f"copy: {reencoded}"))
    with publishing(manifest_path, "film manifest") as tmp:
        _write_manifest(tmp, film_key, job.project.fps, total, reencoded, manifest)
    emit(protocol.StageFinished(segment="", stage="film", seconds=time.perf_counter() - t0))
    return final


def _unchanged(final: Path, manifest_path: Path, film_key: str) -> bool:
    """True when ``final`` was assembled from exactly these entries already."""
    if not (final.exists() and manifest_path.exists()):
        return False
    try:
        return json.loads(manifest_path.read_text()).get("key") == film_key
    except json.JSONDecodeError:
        return False


def _write_manifest(path: Path, film_key: str, fps: int, total: int, reencoded: str | None,
                    segments: list[dict[str, Any]]) -> None:
    """film.json: the film's key and where each segment starts in it."""
    offset = 0
    for entry in segments:
        entry["offset"] = offset
        offset += entry["frames"] - int(entry["skip_first"])
    path.write_text(json.dumps({"key": film_key, "fps": fps, "frames": total,
                                "video": "re-encoded" if reencoded else "copied",
                                "reencode_reason": reencoded, "segments": segments}, indent=1))
