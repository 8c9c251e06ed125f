"""The storyboard: a TOML file of chained shots, and its typed model.

Reading uses ``tomllib`` (fast, exact errors); writing goes through ``tomlkit`` and
merges only what changed into the file as it is on disk, so comments, blank lines and
key order survive every save. A file that fails to load is never written.

Import-light on purpose: the TUI imports this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Comment, InlineTable, Table, Whitespace

from pipeline.project import layout
from pipeline.project.audio_track import AudioTrack, parse_audio
from pipeline.project.files import (
    check_writable,
    describe_os_error,
    fsync_dir,
    read_regular,
    real_target,
    storyboard_lock,
)
from pipeline.project.keyframes import Keyframe, parse_keyframes, parse_retake
from pipeline.project.layout import RenderFolder
from pipeline.project.loras import LoraRef, loras_to_toml, parse_loras
from pipeline.project.tables import type_name

# Deferred imports: tomlkit — only writing a storyboard needs the comment-preserving parser

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
DRIFT_GUARDS = ("off", "anchor", "anchor+output")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: "$" would let "a\n" through


class StoryboardError(ValueError):
    """A storyboard that cannot be used; ``str()`` is one line with file:line:column."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int = 0, column: int = 0,
                 key: str = "") -> None:
        self.path = str(path)
        self.message = message
        self.line = line
        self.column = column
        self.key = key
        where = f"{self.path}:{line}:{column}" if line else self.path
        what = f"{key}: " if key else ""
        super().__init__(f"{where}: {what}{message}")


@dataclass(frozen=True)
class Anchor:
    """What the first frame of a segment is conditioned on."""

    kind: str = "previous"  # "previous" | "image" | "video" | "none"
    path: str = ""

    def to_toml(self) -> Any:
        if self.kind in ("previous", "none"):
            return self.kind
        return {self.kind: self.path}


@dataclass(frozen=True)
class Project:
    title: str = "Untitled"
    fps: int = 24
    seed: int = 0
    preset: str = "tiny"
    vram_budget_gb: float | None = None
    ram_budget_gb: float | None = None
    draft_size: tuple[int, int] | None = None
    refine_size: tuple[int, int] | None = None
    output_size: tuple[int, int] = (1920, 1080)
    audio: bool = True
    steps: int | None = None
    refine_sigmas: tuple[float, ...] | None = None
    lora_strength: float | None = None
    enhance: bool = True
    drift_guard: str = "off"
    drift_reference: str = "first"
    drift_strength: float = 1.0
    cache_limit_gb: float | None = None   # prune unused cache entries past this after a render


@dataclass(frozen=True)
class Segment:
    id: str
    prompt: str
    enhanced_prompt: str = ""
    enhance_lock: bool = False
    frames: int | None = None
    seconds: float | None = None
    seed: int | None = None
    anchor: Anchor = field(default_factory=Anchor)
    preset: str | None = None         # this shot's model preset, else the project's
    steps: int | None = None
    refine_sigmas: tuple[float, ...] | None = None
    lora_strength: float | None = None
    drift_guard: str | None = None
    keep: int | None = None           # the film takes its first `keep` frames; the next shot continues from the last
    #
    # keyframes/retake
    keyframes: tuple[Keyframe, ...] = ()  # stills that frames of this shot are conditioned on
    retake: tuple[int, int] | None = None  # frames first..last regenerated; the rest kept as rendered
    #
    # loras/audio
    loras: tuple[LoraRef, ...] = ()   # the user's LoRAs for this shot, on top of the preset's (project/loras.py)
    audio: AudioTrack | None = None   # the sound this shot follows and keeps (project/audio_track.py)

    def frame_count(self, fps: int) -> int:
        """Frames requested; the model preset may round up to what it can generate."""
        if self.frames is not None:
            return self.frames
        if self.seconds is not None:
            return max(1, round(self.seconds * fps))
        return fps * 2 + 1


@dataclass(frozen=True)
class Storyboard:
    path: Path
    project: Project
    segments: tuple[Segment, ...]

    @property
    def stem(self) -> str:
        return self.path.stem

    def segment(self, segment_id: str) -> Segment:
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise KeyError(segment_id)

    def index(self, segment_id: str) -> int:
        return [s.id for s in self.segments].index(segment_id)

    @property
    def real_path(self) -> Path:
        """The file itself: a symlinked storyboard's target, else :attr:`path` (as typed, which
        messages name). The editor saves into the target's folder and writes its relative paths
        against it, so that folder is the project for the CLI and the worker too: one cache,
        one journal, one ``renders/``."""
        return real_target(self.path) if self.path.is_symlink() else self.path

    @property
    def folder(self) -> Path:
        """The project folder: the storyboard's own (a symlink's target's)."""
        return self.real_path.parent

    def resolve(self, relative: str) -> Path:
        """Paths inside a storyboard are relative to the storyboard's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.folder / p)

    @property
    def renders(self) -> RenderFolder:
        """``renders/<stem>/``: where a render of this storyboard publishes its files."""
        return RenderFolder.of(self.real_path)

    def render_dir(self) -> Path:
        return self.renders.root

    def state_dir(self) -> Path:
        return layout.state_dir(self.folder)


# --------------------------------------------------------------------------- reading

# key -> (accepted python types, human name)
_PROJECT_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "title": ((str,), "a string"),
    "fps": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "preset": ((str,), "a string"),
    "vram_budget_gb": ((int, float), "a number"),
    "ram_budget_gb": ((int, float), "a number"),
    "draft_size": ((list,), "a [width, height] pair"),
    "refine_size": ((list,), "a [width, height] pair"),
    "output_size": ((list,), "a [width, height] pair"),
    "audio": ((bool,), "true or false"),
    "steps": ((int,), "an integer"),
    "refine_sigmas": ((list,), "a list of numbers"),
    "lora_strength": ((int, float), "a number"),
    "enhance": ((bool,), "true or false"),
    "drift_guard": ((str,), "a string"),
    "drift_reference": ((str,), "a string"),
    "drift_strength": ((int, float), "a number"),
    "cache_limit_gb": ((int, float), "a number"),
}
_SEGMENT_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str,), "a string"),
    "prompt": ((str,), "a string"),
    "enhanced_prompt": ((str,), "a string"),
    "enhance_lock": ((bool,), "true or false"),
    "frames": ((int,), "an integer"),
    "seconds": ((int, float), "a number"),
    "seed": ((int,), "an integer"),
    "anchor": ((str, dict), 'a string ("previous", "none", a file path) or { image = ... } / { video = ... }'),
    "preset": ((str,), "a string"),
    "steps": ((int,), "an integer"),
    "refine_sigmas": ((list,), "a list of numbers"),
    "lora_strength": ((int, float), "a number"),
    "drift_guard": ((str,), "a string"),
    "keep": ((int,), "an integer"),
    #
    # keyframes/retake
    "keyframes": ((list,), 'an array of { frame = N, image = "still.png" } tables'),
    "retake": ((list,), "a [first, last] pair of frame numbers"),
    #
    # loras/audio
    "loras": ((list,), 'an array of { path = "file.safetensors", strength = 0.8 } tables'),
    "audio": ((str, dict), 'a sound file ("track.wav") or { path = "track.wav", start = seconds }'),
}


class _Locator:
    """Finds the line and column of a key in TOML source, for error messages.

    tomllib gives positions only for syntax errors; semantic errors (unknown key,
    wrong type) need the position of a key inside ``[project]`` or the n-th
    ``[[segment]]``. A line scan over table headers is enough for storyboards.
    """

    _header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"-]+)\s*\]\]?")
    _key = re.compile(r"^(\s*)([A-Za-z0-9_\"-]+)\s*=")

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self._index: dict[tuple[str, int | None], tuple[tuple[int, int], dict[str, tuple[int, int]]]] | None = None

    def _build(self) -> dict[tuple[str, int | None], tuple[tuple[int, int], dict[str, tuple[int, int]]]]:
        """One pass over the source: every table's header position and its keys' positions.

        Built once, so a storyboard of n segments is located in O(n), not O(n²) (a
        3000-segment file used to take 13 s to parse, nearly all of it here).
        """
        index: dict[tuple[str, int | None], tuple[tuple[int, int], dict[str, tuple[int, int]]]] = {}
        counts: dict[str, int] = {}
        keys: dict[str, tuple[int, int]] | None = None
        root = True  # before the first header: ``project = { fps = 0 }`` is a table on one line
        for lineno, text in enumerate(self.lines, 1):
            m = self._header.match(text)
            if root and not m:
                self._inline_table(index, lineno, text)
            if m:
                root = False
                name = m.group(2).strip('"')
                pos = (lineno, text.index(m.group(1)) + 1)
                if m.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    slot: tuple[str, int | None] = (name, counts[name])
                else:
                    slot = (name, None)
                if slot in index:
                    keys = None  # a repeated [table]: the first one's positions stand
                    continue
                keys = {}
                index[slot] = (pos, keys)
                continue
            if keys is not None:
                k = self._key.match(text)
                if k:
                    keys.setdefault(k.group(2).strip('"'), (lineno, len(k.group(1)) + 1))
        return index

    _inline_key = re.compile(r"[{,]\s*([A-Za-z0-9_\"-]+)\s*=")

    def _inline_table(self, index: dict, lineno: int, text: str) -> None:
        """A root-level inline table (TOML keeps one on one line): its key's and its keys' positions."""
        k = self._key.match(text)
        if not k or not text[k.end():].lstrip().startswith("{"):
            return
        body = text.index("{", k.end())
        keys = {m.group(1).strip('"'): (lineno, m.start(1) + 1) for m in self._inline_key.finditer(text, body)}
        index.setdefault((k.group(2).strip('"'), None), ((lineno, len(k.group(1)) + 1), keys))

    def find(self, table: str, index: int | None, key: str | None) -> tuple[int, int]:
        if self._index is None:
            self._index = self._build()
        entry = self._index.get((table, index))
        if entry is None:
            return (0, 0)
        header_pos, keys = entry
        return keys.get(key, header_pos) if key else header_pos


def error_at(path: Path, message: str, table: str, index: int | None, key: str) -> StoryboardError:
    """A refusal found after parsing (a preset that cannot honour a key, say), placed at ``key``
    of ``[table]`` (``index`` None) or of the index-th ``[[table]]``. The file is read again for
    the position only; if it no longer reads as text, the error names the file alone."""
    try:
        loc = _Locator(read_regular(path).decode("utf-8"))  # a FIFO swapped in is refused, not read
    except (OSError, UnicodeDecodeError):
        loc = _Locator("")
    label = f"{table}.{key}" if index is None else f"{table}[{index}].{key}"
    return StoryboardError(path, message, *loc.find(table, index, key), label)


def unknown_presets(sb: Storyboard, known: Collection[str]) -> list[StoryboardError]:
    """Each place the storyboard names a preset outside ``known`` (a worker's ``sulphur models``),
    as the render would refuse it, with its file:line:col; nothing when ``known`` is empty (not told)."""
    if not known:
        return []
    names = ", ".join(sorted(known))
    asked = [("project", None, sb.project.preset)] + [("segment", i, s.preset) for i, s in enumerate(sb.segments)]
    return [error_at(sb.path, f"unknown preset {name!r} (this worker has {names})", table, index, "preset")
            for table, index, name in asked if name is not None and name not in known]


def _check_type(path: Path, loc: _Locator, table: str, index: int | None, key: str, value: Any,
                spec: dict[str, tuple[tuple[type, ...], str]]) -> None:
    where = f"segment[{index}].{key}" if index is not None else f"{table}.{key}"
    line, col = loc.find(table, index, key)
    if key not in spec:
        allowed = ", ".join(spec)
        raise StoryboardError(path, f"unknown key (allowed: {allowed})", line, col, where)
    types, human = spec[key]
    # bool is an int in Python; a flag given where a number is wanted is a mistake.
    if isinstance(value, bool) and bool not in types:
        raise StoryboardError(path, f"expected {human}, got {type_name(value)}", line, col, where)
    if not isinstance(value, types):
        raise StoryboardError(path, f"expected {human}, got {type_name(value)}", line, col, where)
    # TOML spells nan and inf; no setting means either (nan compares false with every bound).
    if isinstance(value, float) and not math.isfinite(value) or isinstance(value, list) and any(
            isinstance(v, float) and not math.isfinite(v) for v in value):
        raise StoryboardError(path, "must be a number", line, col, where)  # not nan, not inf


#: The widest and tallest frame any stage is asked for (8K): past it a typo, not a film.
MAX_SIDE = 8192
#: Frames one shot may have, however they are spelled (frames, or seconds × fps).
MAX_FRAMES = 2000
MAX_STEPS = 200
#: Seeds as torch's generators take them.
MAX_SEED = 2**63 - 1


def _size(path: Path, loc: _Locator, table: str, key: str, value: list) -> tuple[int, int]:
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        line, col = loc.find(table, None, key)
        raise StoryboardError(path, "expected [width, height] with two positive integers", line, col,
                              f"{table}.{key}")
    if max(value) > MAX_SIDE:
        raise StoryboardError(path, f"at most {MAX_SIDE} pixels a side", *loc.find(table, None, key),
                              f"{table}.{key}")
    return int(value[0]), int(value[1])


SIGMAS_RULE = "expected a non-increasing list of sigmas in [0, 1]"


def check_sigmas(values: Sequence[Any]) -> tuple[float, ...]:
    """Refine sigmas as a storyboard accepts them; raises ValueError with :data:`SIGMAS_RULE`."""
    ok = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                              for v in values)
    if not ok or any(b > a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(SIGMAS_RULE)
    return tuple(float(v) for v in values)


def _sigmas(path: Path, loc: _Locator, table: str, index: int | None, key: str, value: list) -> tuple[float, ...]:
    try:
        return check_sigmas(value)
    except ValueError:
        line, col = loc.find(table, index, key)
        where = f"segment[{index}].{key}" if index is not None else f"{table}.{key}"
        raise StoryboardError(path, SIGMAS_RULE, line, col, where) from None


def _anchor(path: Path, loc: _Locator, index: int, value: Any) -> Anchor:
    line, col = loc.find("segment", index, "anchor")
    where = f"segment[{index}].anchor"
    if isinstance(value, str):
        if value in ("previous", "none"):
            return Anchor(value)
        suffix = Path(value).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return Anchor("image", value)
        if suffix in VIDEO_SUFFIXES:
            return Anchor("video", value)
        raise StoryboardError(path, f'"{value}" is neither "previous", "none", an image nor a video path',
                              line, col, where)
    if len(value) == 1:
        (kind, target), = value.items()
        if kind in ("image", "video") and isinstance(target, str) and target:
            return Anchor(kind, target)
    raise StoryboardError(path, 'expected { image = "path" } or { video = "path" }', line, col, where)


def _shot_sound_and_loras(path: Path, loc: _Locator, index: int, key: str, value: Any) -> Any:
    """``loras`` / ``audio`` of a segment, parsed by their own modules; errors at the key's line."""
    try:
        return parse_loras(value) if key == "loras" else parse_audio(value)
    except ValueError as exc:
        raise StoryboardError(path, str(exc), *loc.find("segment", index, key), f"segment[{index}].{key}") from None


def parse(source: str, path: str | os.PathLike[str] = "<storyboard>") -> Storyboard:
    """Validate TOML text into a :class:`Storyboard`; raises :class:`StoryboardError`."""
    path = Path(path)
    if source.startswith("\ufeff"):  # tomllib reads it as "Invalid statement" at 1:1, which says nothing
        raise StoryboardError(path, "the file starts with a byte-order mark (BOM); save it as UTF-8 without BOM",
                              1, 1)
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        line, col = (int(m.group(1)), int(m.group(2))) if m else _end_of(source)
        raise StoryboardError(path, f"TOML syntax error: {msg}", line, col) from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table: thousands of "[" overflow it.
        raise StoryboardError(path, f"values nested more than {MAX_NESTING} deep: not a storyboard",
                              *_too_deep(source)) from None
    loc = _Locator(source)

    for key in data:
        if key not in ("project", "segment"):
            raise StoryboardError(path, "unknown top-level key (expected [project] and [[segment]])",
                                  *_top_level(loc, key), key)

    raw_project = data.get("project", {})
    if not isinstance(raw_project, dict):
        raise StoryboardError(path, "[project] must be a table", *_top_level(loc, "project"), "project")
    project = _project(path, loc, raw_project)

    raw_segments = data.get("segment", [])
    if not isinstance(raw_segments, list) or not raw_segments:
        raise StoryboardError(path, "a storyboard needs at least one [[segment]]", *_top_level(loc, "segment"),
                              "segment")
    segments: list[Segment] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_segments):
        seg_kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            _check_type(path, loc, "segment", i, key, value, _SEGMENT_KEYS)
            if key == "anchor":
                value = _anchor(path, loc, i, value)
            elif key == "refine_sigmas":
                value = _sigmas(path, loc, "segment", i, key, value)
            elif key in ("loras", "audio"):
                value = _shot_sound_and_loras(path, loc, i, key, value)
            seg_kwargs[key] = value
        for required in ("id", "prompt"):
            if required not in seg_kwargs:
                line, col = loc.find("segment", i, None)
                raise StoryboardError(path, f"missing required key '{required}'", line, col,
                                      f"segment[{i}].{required}")
        sid = seg_kwargs["id"]
        if not _ID_RE.fullmatch(sid):
            raise StoryboardError(path, "ids are 1-64 letters, digits, '-' or '_'",
                                  *loc.find("segment", i, "id"), f"segment[{i}].id")
        if sid in seen:
            raise StoryboardError(path, f"duplicate id '{sid}' (first used by segment[{seen[sid]}])",
                                  *loc.find("segment", i, "id"), f"segment[{i}].id")
        seen[sid] = i
        shot_keys = {k: seg_kwargs.pop(k) for k in ("keyframes", "retake") if k in seg_kwargs}
        seg = Segment(**seg_kwargs)
        _check_segment(path, loc, i, seg)
        _check_length(path, loc, i, seg, project.fps)
        if shot_keys:
            seg = replace(seg, **_shot_keys(path, loc, i, shot_keys, seg.frame_count(project.fps)))
        segments.append(seg)
    return Storyboard(path=path, project=project, segments=tuple(segments))


#: Deeper nesting than this is no storyboard's; it is where a nesting error is located.
MAX_NESTING = 64


def _too_deep(source: str) -> tuple[int, int]:
    """Line and column of the first bracket or brace nested deeper than :data:`MAX_NESTING`
    (quoted strings and comments skipped); (0, 0) when none is found."""
    depth, quote, line, col = 0, "", 1, 0
    for ch in source:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            quote = "" if quote == "#" else quote  # a comment ends here; a multi-line string does not
        elif quote:
            quote = "" if ch == quote and quote != "#" else quote
        elif ch in "\"'#":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return line, col
        elif ch in "]}":
            depth = max(0, depth - 1)
    return 0, 0


def _top_level(loc: _Locator, key: str) -> tuple[int, int]:
    """Where a top-level table or key is: its header, else the first line that spells it, at the
    column where it starts (after any indent, as keys in a table are located); (0, 0) when the
    file does not spell it (no ``[[segment]]`` at all).

    The index knows ``[name]`` and ``name = {…}``; the rest is found here: a header of the name
    (``[[notes]]``, ``[bogus.x]``, quoted or not) anywhere, ``name = 3`` or ``name.x = 3``
    before the first header (after it, such a line is a key of that table)."""
    line, col = loc.find(key, None, None)
    if line:
        return line, col
    name = rf"""(?:"{re.escape(key)}"|'{re.escape(key)}'|{re.escape(key)})"""
    header, assign = re.compile(rf"\s*\[\[?\s*{name}\s*[.\]]"), re.compile(rf"\s*{name}\s*[.=]")
    root = True
    for i, text in enumerate(loc.lines, 1):
        root = root and not text.lstrip().startswith("[")
        if header.match(text) or root and assign.match(text):
            return i, len(text) - len(text.lstrip()) + 1
    return 0, 0


def _shot_keys(path: Path, loc: _Locator, i: int, raw: dict[str, Any], frames: int) -> dict[str, Any]:
    """``keyframes`` / ``retake``, checked against the shot's frame count (pipeline.project.keyframes)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = parse_keyframes(value, frames) if key == "keyframes" else parse_retake(value, frames)
        except ValueError as exc:
            raise StoryboardError(path, str(exc), *loc.find("segment", i, key), f"segment[{i}].{key}") from None
    return out


def _project(path: Path, loc: _Locator, raw: dict[str, Any]) -> Project:
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        _check_type(path, loc, "project", None, key, value, _PROJECT_KEYS)
        if key.endswith("_size"):
            value = _size(path, loc, "project", key, value)
        elif key == "refine_sigmas":
            value = _sigmas(path, loc, "project", None, key, value)
        kwargs[key] = value
    project = Project(**kwargs)
    _check_project(path, loc, project)
    return project


def project_from_table(raw: dict[str, Any], path: str | os.PathLike[str] = "<storyboard>") -> Project:
    """A :class:`Project` from ``[project]`` values as TOML gives them (sizes as lists),
    through every check a file's table gets; raises :class:`StoryboardError` whose ``key``
    names the offending setting (``project.fps``). The TUI's project form builds one."""
    return _project(Path(path), _Locator(""), raw)


def _check_project(path: Path, loc: _Locator, p: Project) -> None:
    def bad(key: str, msg: str) -> StoryboardError:
        return StoryboardError(path, msg, *loc.find("project", None, key), f"project.{key}")

    if not 1 <= p.fps <= 240:
        raise bad("fps", "must be between 1 and 240")
    if not 0 <= p.seed <= MAX_SEED:
        raise bad("seed", f"must be between 0 and {MAX_SEED}")
    if p.steps is not None and not 1 <= p.steps <= MAX_STEPS:
        raise bad("steps", f"must be between 1 and {MAX_STEPS}")
    if p.lora_strength is not None and not -10 <= p.lora_strength <= 10:
        raise bad("lora_strength", "must be between -10 and 10")
    if not p.preset.strip():
        raise bad("preset", "must not be empty")
    if p.drift_guard not in DRIFT_GUARDS:
        raise bad("drift_guard", f"must be one of {', '.join(DRIFT_GUARDS)}")
    if not 0.0 <= p.drift_strength <= 1.0:
        raise bad("drift_strength", "must be between 0 and 1")
    for key in ("vram_budget_gb", "ram_budget_gb"):
        v = getattr(p, key)
        if v is not None and v <= 0:
            raise bad(key, "must be positive")
        if v is not None and not 0.5 <= v <= 100_000:
            raise bad(key, "must be between 0.5 and 100000 (GiB)")
    if p.cache_limit_gb is not None and not 0.1 <= p.cache_limit_gb <= 1_000_000:
        raise bad("cache_limit_gb", "must be between 0.1 and 1000000 (GiB)")
    if p.output_size[0] % 2 or p.output_size[1] % 2:
        raise bad("output_size", "H.264 needs an even width and height")


def _check_segment(path: Path, loc: _Locator, i: int, s: Segment) -> None:
    def bad(key: str, msg: str) -> StoryboardError:
        return StoryboardError(path, msg, *loc.find("segment", i, key), f"segment[{i}].{key}")

    if not s.prompt.strip():
        raise bad("prompt", "must not be empty")
    if s.frames is not None and s.seconds is not None:
        raise bad("seconds", "give frames or seconds, not both")
    if s.frames is not None and not 1 <= s.frames <= MAX_FRAMES:
        raise bad("frames", f"must be between 1 and {MAX_FRAMES}")
    if s.seconds is not None and not 0 < s.seconds <= 120:
        raise bad("seconds", "must be between 0 and 120")
    if s.keep is not None and not 1 <= s.keep <= 2000:
        raise bad("keep", "must be between 1 and 2000 (frames of this shot the film keeps)")
    if s.steps is not None and not 1 <= s.steps <= MAX_STEPS:
        raise bad("steps", f"must be between 1 and {MAX_STEPS}")
    if s.drift_guard is not None and s.drift_guard not in DRIFT_GUARDS:
        raise bad("drift_guard", f"must be one of {', '.join(DRIFT_GUARDS)}")
    if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
        raise bad("seed", f"must be between 0 and {MAX_SEED}")
    if s.lora_strength is not None and not -10 <= s.lora_strength <= 10:
        raise bad("lora_strength", "must be between -10 and 10")
    if s.preset is not None and not s.preset.strip():
        raise bad("preset", "must not be empty")


def _check_length(path: Path, loc: _Locator, i: int, s: Segment, fps: int) -> None:
    """seconds × fps past the frame cap: 120 s at 240 fps is 28 801 frames, not a shot."""
    if s.seconds is not None and s.frame_count(fps) > MAX_FRAMES:
        raise StoryboardError(path, f"{s.seconds:g} s at {fps} fps is {s.frame_count(fps)} frames; a shot has "
                              f"at most {MAX_FRAMES}", *loc.find("segment", i, "seconds"), f"segment[{i}].seconds")


def _end_of(source: str) -> tuple[int, int]:
    """Line and column just past the last character: where tomllib's "end of document" is."""
    lines = source.split("\n")
    return len(lines), len(lines[-1]) + 1


#: A storyboard is text a person writes; anything larger is not one (and must not fill memory).
MAX_STORYBOARD_BYTES = 16 << 20


def load(path: str | os.PathLike[str]) -> Storyboard:
    """Read and validate a storyboard file; a FIFO, device or directory is refused unopened."""
    path = Path(path)
    return parse(read_source(path), path)


def read_source(path: str | os.PathLike[str]) -> str:
    """A storyboard file's text, for whoever parses or edits it (the editor too): a FIFO,
    device or directory is refused unopened, a file past 16 MiB unread; StoryboardError."""
    path = Path(path)
    try:
        return read_regular(path, MAX_STORYBOARD_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise StoryboardError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise StoryboardError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise StoryboardError(path, describe_os_error(path, exc).removeprefix(f"{path}: ")) from None
    except ValueError:
        raise StoryboardError(path, f"larger than {MAX_STORYBOARD_BYTES >> 20} MiB: not a storyboard") from None


# --------------------------------------------------------------------------- writing


def _to_toml_value(value: Any) -> Any:
    if isinstance(value, Anchor | AudioTrack):
        return value.to_toml()
    if isinstance(value, tuple) and value and isinstance(value[0], Keyframe):
        array = tomlkit.array()  # inline tables: a list of dicts would become [[segment.keyframes]]
        for kf in value:
            table = tomlkit.inline_table()
            table.update(kf.to_toml())
            array.append(table)
        return array
    if isinstance(value, tuple) and value and isinstance(value[0], LoraRef):
        return loras_to_toml(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _field_default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _segment_items(seg: Segment, present: Any = ()) -> dict[str, Any]:
    """Keys a segment writes: id, prompt, those away from their default, and those the
    file already spells out (so an explicit default is not deleted on save)."""
    out: dict[str, Any] = {}
    for f in fields(Segment):
        value = getattr(seg, f.name)
        if value is None or value == ():  # unset (no keyframes is no key, as no keep is)
            continue
        if f.name in ("id", "prompt") or f.name in present or value != _field_default(f):
            out[f.name] = _to_toml_value(value)
    return out


def _merge_table(table: Table | dict, new: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key in list(table.keys()):
        if key not in new and key in defaults:
            del table[key]
    for key, value in new.items():
        if key in table and (_plain(table[key]) == _plain(value) or _same_anchor(_plain(table[key]), value)
                             or _same_parsed(key, _plain(table[key]), _plain(value))):
            continue  # untouched: keep its formatting and comment
        old = table.get(key)
        if isinstance(old, InlineTable) and isinstance(value, dict) and set(old.keys()) == set(value.keys()):
            # `anchor = { video = … }` stays an inline table on its line, spacing and comment kept
            for k, v in value.items():
                old[k] = v
            continue
        if isinstance(value, dict) and not isinstance(old, Table):
            # inline, on the key's own line: a plain dict becomes a [segment.anchor] sub-table at
            # the shot's end, and `anchor = "previous"  # …` lost its line and its comment
            inline = tomlkit.inline_table()
            inline.update(value)
            value = inline
        if key in table or not isinstance(table, Table):
            table[key] = value
        else:
            _add_key(table, key, value)


def _add_key(table: Table, key: str, value: Any) -> None:
    """A new key goes below the table's last key, above a comment block that a blank line
    sets apart from it: such a block introduces what follows (the next shot, a section), and
    a key added after it would read as the next one's. Comments right under the keys (say a
    commented-out key) are the table's own and stay above the new key."""
    body = table.value.body
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=-1)
    tail = [item for _, item in body[last + 1:]]
    blank = next((i for i, item in enumerate(tail) if isinstance(item, Whitespace)), None)
    if blank is not None and any(isinstance(item, Comment) for item in tail[blank:]):
        table.value._insert_at(last + 1 + blank, key, value)  # tomlkit has no public insert at a position
    else:
        table[key] = value


def _same_anchor(old: Any, new: Any) -> bool:
    """``anchor = "still.png"`` in the file is the ``{ image = "still.png" }`` a save writes."""
    if not (isinstance(old, str) and isinstance(new, dict) and len(new) == 1):
        return False
    (kind, target), = new.items()
    suffixes = IMAGE_SUFFIXES if kind == "image" else VIDEO_SUFFIXES
    return old == target and Path(old).suffix.lower() in suffixes


def _same_parsed(key: str, old: Any, new: Any) -> bool:
    """``loras`` / ``audio`` / ``keyframes`` spelled otherwise in the file (``strength`` left at
    1 or spelled 1.0, ``{ path = … }`` for a plain path) but meaning what a save would write:
    the file's spelling stays."""
    parser = {"loras": parse_loras, "audio": parse_audio,
              # any frame count: both sides are checked against the same one
              "keyframes": lambda value: parse_keyframes(value, 2**31)}.get(key)
    try:
        return parser is not None and parser(old) == parser(new)
    except (ValueError, TypeError, AttributeError):
        return False


def _plain(value: Any) -> Any:
    if hasattr(value, "unwrap"):
        value = value.unwrap()
    if isinstance(value, tuple):
        return list(value)
    return value


def render_toml(storyboard: Storyboard, original: str, renames: Mapping[str, str] | None = None) -> str:
    """The file text after merging ``storyboard`` into ``original`` (which must parse).

    ``renames`` (id in ``original`` → id in ``storyboard``): a renamed shot keeps its table,
    so its comments and key order survive the new id."""
    doc = tomlkit.parse(original)
    proj_defaults = {f.name: _field_default(f) for f in fields(Project)}
    project_new = {}
    for f in fields(Project):
        value = getattr(storyboard.project, f.name)
        if value != proj_defaults[f.name] or f.name in doc.get("project", {}):
            if value is None:
                continue
            project_new[f.name] = _to_toml_value(value)
    if "project" not in doc and project_new:  # nothing to write: a file without one stays without
        doc.add("project", tomlkit.table())
    if "project" in doc:
        _merge_table(doc["project"], project_new, proj_defaults)

    seg_defaults = {f.name: None for f in fields(Segment)}
    existing: dict[str, Table] = {}
    aot = doc.get("segment")
    if isinstance(aot, AoT):
        for table in aot.body:
            existing[str(table.get("id"))] = table
    for old, new in (renames or {}).items():
        if old in existing and new not in existing:
            existing[new] = existing.pop(old)
    new_tables = []
    for seg in storyboard.segments:
        table = existing.pop(seg.id, None)
        if table is None:
            table = tomlkit.table()
            for key, value in _segment_items(seg).items():
                table[key] = value
        else:
            _merge_table(table, _segment_items(seg, table.keys()), seg_defaults)
        new_tables.append(table)
    if isinstance(aot, AoT) and [t.get("id") for t in aot.body] == [s.id for s in storyboard.segments]:
        return keep_newlines(original, doc.as_string())  # same segments in the same order: edited in place
    new_aot = tomlkit.aot()
    for table in new_tables:
        _strip_trailing_blank(table)  # tomlkit separates the tables itself
        new_aot.append(table)
    doc["segment"] = new_aot
    return keep_newlines(original, doc.as_string())


def keep_newlines(original: str, text: str) -> str:
    """``text`` with ``original``'s line endings: tomlkit ends the lines it adds with "\n", so a
    file a Windows editor wrote (CRLF) came back with mixed endings after a new key or shot."""
    if original.count("\r\n") * 2 <= original.count("\n"):  # mostly LF, or empty: as tomlkit wrote it
        return text
    return re.sub(r"(?<!\r)\n", "\r\n", text)


def _strip_trailing_blank(table: Table) -> None:
    from tomlkit.items import Whitespace

    body = table.value.body
    while body and isinstance(body[-1][1], Whitespace):
        body.pop()


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + rename, so a crash never truncates.

    A symlink is written through (its target is replaced, the link stays); a file its
    owner made read-only is refused with ``PermissionError`` (a rename would not ask).
    The file and then its folder are fsynced, so a power loss leaves the old or the new
    text, never an empty file.
    """
    path = real_target(path)
    check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise



def save(storyboard: Storyboard, path: str | os.PathLike[str] | None = None,
         renames: Mapping[str, str] | None = None) -> str:
    """Merge-write ``storyboard``; returns the text written (``renames``: see :func:`render_toml`).

    The file on disk must still parse: a file that was broken in the meantime is never
    overwritten (the caller decides what to do).
    """
    target = Path(path or storyboard.path)
    with storyboard_lock(target):  # the renderer's write-back takes it too (pipeline.project.writeback)
        original = read_source(target) if target.exists() else ""  # a FIFO put there: refused, not waited on
        if original:
            parse(original, target)  # refuse to merge into a broken file
        text = render_toml(storyboard, original, renames)
        parse(text, target)  # never write something we could not read back
        if text != original:
            atomic_write(target, text)
    return text


def with_segment(storyboard: Storyboard, segment_id: str, **changes: Any) -> Storyboard:
    """A copy with one segment's fields changed."""
    segs = tuple(replace(s, **changes) if s.id == segment_id else s for s in storyboard.segments)
    return replace(storyboard, segments=segs)


# ------------------------------------------------------------------ staleness

# Project fields that do not change the pixels of a segment.
_PROJECT_IGNORED = {"title", "vram_budget_gb", "ram_budget_gb", "cache_limit_gb"}


def _segment_fields(seg: Segment) -> dict:
    d = asdict(seg)
    d.pop("id")
    # An unlocked enhanced prompt is the enhancer's output, derived from the prompt:
    # the worker rewriting it must not make the render look stale.
    if not seg.enhance_lock:
        d.pop("enhanced_prompt")
    d.pop("enhance_lock")
    return d


def _project_fields(project: Project) -> dict:
    return {k: v for k, v in asdict(project).items() if k not in _PROJECT_IGNORED}


def segment_digest(storyboard: Storyboard, segment_id: str) -> str:
    """Digest of everything that decides a segment's pixels, its upstream chain included."""
    i = storyboard.index(segment_id)
    parts = [json.dumps(_project_fields(storyboard.project), sort_keys=True, default=str)]
    # Walk back while each shot continues from the one before it.
    j = i
    while j >= 0:
        seg = storyboard.segments[j]
        parts.append(json.dumps({"pos": j, **_segment_fields(seg)}, sort_keys=True, default=str))
        if seg.anchor.kind != "previous" or j == 0:
            break
        j -= 1
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]



def segment_id_problem(storyboard: Storyboard, new_id: str, current: str | None = None) -> str:
    """Why ``new_id`` cannot name a shot (the rules :func:`parse` enforces), or "" when it can.
    ``current``: the shot being renamed (its own id is not a duplicate)."""
    if not _ID_RE.fullmatch(new_id):
        return "ids are 1-64 letters, digits, '-' or '_'"
    for i, seg in enumerate(storyboard.segments):
        if seg.id == new_id and seg.id != current:
            return f"duplicate id '{new_id}' (used by segment[{i}])"
    return ""


def new_segment_id(storyboard: Storyboard, base: str = "shot") -> str:
    taken = {s.id for s in storyboard.segments}
    n = len(taken) + 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


__all__ = [
    "Anchor", "Project", "Segment", "Storyboard", "StoryboardError", "check_sigmas", "load", "parse",
    "segment_id_problem",
    "project_from_table", "save",
    "render_toml", "with_segment", "new_segment_id", "atomic_write", "segment_digest",
]
