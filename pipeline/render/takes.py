"""``sulphur takes FILE SEGMENT``: several seeds of one segment, then pick one.

Takes render in parallel through Ray (:func:`pipeline.render.engines.ray_engine.render_takes`)
or one after another in this process (:func:`render_takes_local`, what the worker runs
for the editor: it keeps its loaded models). Picking one needs neither: it writes the
take's seed and its prompt (locked) into the storyboard, so the next render finds every
stage of that take in the cache and the chain continues from its last frame. Nothing
here imports Ray or torch until takes are rendered.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.project.selection import segment_index
from pipeline.project.storyboard import Storyboard, StoryboardError, atomic_write, load, save, with_segment
from pipeline.wire import protocol
from pipeline.wire.protocol import Event

# Deferred imports: PIL, pipeline.render.runner, pipeline.render.job, pipeline.render.outputs,
#   pipeline.render.cache, pipeline.render.usage, pipeline.memory.loaded, pipeline.project.references —
#   numpy, torch and PyAV load only when takes are rendered (``sulphur takes --pick`` and the editor need none)

Emit = Callable[[Event], None]


def seeds_for(storyboard_path: str | os.PathLike[str], segment: str, count: int) -> list[int]:
    """``count`` seeds starting at the segment's current one (so take 1 is what a render makes)."""
    sb = load(storyboard_path)
    index = segment_index(sb, segment)
    seg = sb.segments[index]
    base = seg.seed if seg.seed is not None else sb.project.seed + index
    return [base + i for i in range(max(1, count))]


def pick_take(storyboard_path: str | os.PathLike[str], segment: str, seed: int) -> str:
    """Make take ``seed`` the segment's (seed + locked prompt into the storyboard); returns its MP4."""
    sb = load(storyboard_path)
    segment_index(sb, segment)  # an unknown id is named as such (and never becomes a path)
    takes = _recorded_takes(sb, segment)
    if str(seed) not in takes:
        raise StoryboardError(sb.path, f"segment '{segment}' has no take with seed {seed} "
                              f"(takes: {', '.join(sorted(takes)) or 'none'})")
    save(with_segment(sb, segment, seed=seed, enhanced_prompt=takes[str(seed)]["prompt"], enhance_lock=True))
    return takes[str(seed)]["path"]


def _recorded_takes(sb: Storyboard, segment: str) -> dict[str, dict[str, str]]:
    """``takes.json``'s takes (none when it is missing); a damaged one is refused in one line
    naming it, before the storyboard is touched (it was a JSONDecodeError or KeyError traceback)."""
    manifest = sb.renders.takes_manifest(segment)
    if not manifest.exists():
        return {}
    try:
        takes = json.loads(manifest.read_text(encoding="utf-8")).get("takes", {})
        if all(isinstance(t.get("prompt"), str) and isinstance(t.get("path"), str) for t in takes.values()):
            return takes
    except (OSError, ValueError, AttributeError):
        pass
    raise StoryboardError(manifest, "not a takes record Sulphur wrote (render the takes again to rebuild it)")


def record_takes(sb: Storyboard, segment: str, takes: dict[int, Path], prompt: str) -> Path:
    """Add takes to ``takes.json`` (seed → its MP4 and the prompt it was drafted from); returns it.

    Written after every take, atomically, so a take can be picked while the others render.
    """
    manifest = sb.renders.takes_manifest(segment)
    try:
        known = json.loads(manifest.read_text()).get("takes", {})
    except (OSError, ValueError, AttributeError):
        known = {}
    known.update({str(seed): {"path": str(p), "prompt": prompt} for seed, p in takes.items()})
    manifest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest, json.dumps({"segment": segment, "takes": known}, indent=1))
    return manifest


def write_still(clip: Path) -> Path:
    """The take's last frame as a PNG beside it (``seed-N.png``): the editor's takes list
    shows it (it decodes no video), and it is where the chain would continue from."""
    from PIL import Image

    from pipeline.render.runner import last_video_frame

    still = clip.with_suffix(".png")
    tmp = still.with_name(f".{still.name}.partial")
    Image.fromarray(last_video_frame(clip)).save(tmp, format="PNG")
    os.replace(tmp, still)
    return still


def render_takes_local(storyboard_path: str | os.PathLike[str], segment: str, seeds: Sequence[int], *,
                       preset: str | None = None, emit: Emit = lambda e: None,
                       cancel: threading.Event | None = None, job_id: str = "", models: Any = None
                       ) -> dict[int, Path]:
    """Takes of one segment, one after another in this process; returns {seed: MP4}.

    As the Ray engine does: the shots before it are drafted once (cache hits after a
    render), its prompt is enhanced once and locked, then each seed drafts from the same
    anchor and is finished; a take with the segment's own seed is exactly what a render
    makes. Each take is bracketed by ``TakeStarted``/``TakeFinished`` and recorded in
    ``takes.json`` as soon as it is done. The storyboard and the shot's own outputs
    (``segments/<id>.mp4``, its preview) are not touched.
    """
    from pipeline.memory.loaded import LoadedModels
    from pipeline.project.references import check_references
    from pipeline.render.job import Overrides, RenderJob
    from pipeline.render.outputs import OutputLock
    from pipeline.render.runner import Renderer
    from pipeline.render.usage import after_render

    sb = load(storyboard_path)
    index = segment_index(sb, segment)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    check_references(sb, {s.id for s in sb.segments[:index + 1]})
    job = RenderJob.resolve(sb, Overrides(preset=preset), segments=[segment])
    r = Renderer.create(job, emit=emit, cancel=cancel or threading.Event(),
                        job_id=job_id or uuid.uuid4().hex[:12], models=models or LoadedModels())
    t_job = time.perf_counter()
    with OutputLock.for_storyboard(sb, r.emit, r.cancel) as lock:  # a render of it writes the same stages
        try:
            done = _takes(r, sb, segment, index, seeds)
        finally:  # what the takes built is the storyboard's too (a picked take is its segment)
            after_render(sb, r.cache.used, False, r.emit, lock)
    r.emit(protocol.JobFinished(path=str(sb.renders.takes(segment)), seconds=time.perf_counter() - t_job))
    return done


def _takes(r: Any, sb: Storyboard, segment: str, index: int, seeds: list[int]) -> dict[int, Path]:
    """Every take of one segment, one after another, on the renderer ``r``."""
    from pipeline.render.outputs import atomic_copy

    r.cache.sweep_partials()
    r.preflight([segment])
    r.upscale_frames *= len(seeds)  # each take upscales the shot once: whether compiling pays
    r.emit(protocol.JobStarted(storyboard=str(sb.path), segments=[segment], seeds=seeds))
    for i in range(index):
        r.draft_segment(i)
    prompt = _locked_prompt(r, index)
    start = copy.deepcopy(r.chain)
    base, done = r.job, {}
    for seed in seeds:
        r.emit(protocol.TakeStarted(segment=segment, seed=seed))
        r.job = replace(base, storyboard=with_segment(base.storyboard, segment, seed=seed,
                                                      enhance_lock=True, enhanced_prompt=prompt))
        r.chain = copy.deepcopy(start)
        try:
            seg_job, draft = r.draft_segment(index)
            encode = r.finish_stages(seg_job, draft, preview=False)
        finally:
            r.job = base
        clip = sb.renders.take(segment, seed)
        clip.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(encode.file("segment.mp4"), clip)
        still = _still_or_warning(clip, r.emit)
        done[seed] = clip
        record_takes(sb, segment, {seed: clip}, prompt)
        r.emit(protocol.TakeFinished(segment=segment, seed=seed, path=str(clip), still=still))
    return done


def _locked_prompt(r: Any, index: int) -> str:
    """The prompt every take drafts from: the segment's, enhanced as a render would (the
    anchor first: an enhancer with a vision projector looks at it)."""
    from pipeline.render.cache import digest

    seg_job = r.job_for(index)
    seg_job.anchor = r.anchor_for(seg_job, r.chain.prev_last, r.chain.reference)
    seg_job.anchor_digest = digest(seg_job.anchor.tobytes()) if seg_job.anchor is not None else ""
    return r.prompt_for(seg_job)


def _still_or_warning(clip: Path, emit: Emit) -> str:
    """``write_still``; a still that cannot be written is a warning, never the take's failure."""
    try:
        return str(write_still(clip))
    except Exception as exc:  # PyAV/PIL errors vary; the take itself is fine
        emit(protocol.Log(level="warning", message=f"{clip.name}: no still of its last frame ({exc})"))
        return ""
