"""``sulphur takes FILE SEGMENT``: several seeds of one segment in parallel, then pick one.

Rendering the takes needs Ray (:func:`pipeline.render.engines.ray_engine.render_takes`); picking
one does not: it writes the take's seed and its prompt (locked) into the storyboard, so
the next render finds every stage of that take in the cache and the chain continues from
its last frame. Nothing here imports Ray or torch until takes are rendered.
"""

from __future__ import annotations

import json
import os

from pipeline.project.selection import segment_index
from pipeline.project.storyboard import StoryboardError, load, save, with_segment


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
    manifest = sb.renders.takes_manifest(segment)
    takes = json.loads(manifest.read_text()).get("takes", {}) if manifest.exists() else {}
    if str(seed) not in takes:
        raise StoryboardError(sb.path, f"segment '{segment}' has no take with seed {seed} "
                              f"(takes: {', '.join(sorted(takes)) or 'none'})")
    save(with_segment(sb, segment, seed=seed, enhanced_prompt=takes[str(seed)]["prompt"], enhance_lock=True))
    return takes[str(seed)]["path"]
