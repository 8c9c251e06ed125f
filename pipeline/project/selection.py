"""Which segments of a storyboard a request names: written once for the CLI, the worker,
Ray and takes, so "no segment with id" reads the same wherever it is refused."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.project.storyboard import Storyboard, StoryboardError


def segment_index(sb: Storyboard, segment_id: str) -> int:
    """The position of ``segment_id`` in the storyboard, or a StoryboardError naming the ids."""
    _check(sb, [segment_id])
    return sb.index(segment_id)


def select_segments(sb: Storyboard, segments: Sequence[str] | None = None,
                    from_segment: str | None = None) -> list[str]:
    """The ids to render, in storyboard order: ``segments`` only, or from ``from_segment``
    to the end, or all of them; unknown ids are refused together."""
    ids = [s.id for s in sb.segments]
    _check(sb, list(segments or []) + ([from_segment] if from_segment else []))
    if segments:
        return [i for i in ids if i in segments]
    if from_segment:
        return ids[ids.index(from_segment):]
    return ids


def _check(sb: Storyboard, wanted: Sequence[str]) -> None:
    ids = [s.id for s in sb.segments]
    unknown = [s for s in wanted if s not in ids]
    if unknown:
        raise StoryboardError(sb.path, f"no segment with id {', '.join(map(repr, unknown))} "
                              f"(ids: {', '.join(ids)})")
