"""Storyboard errors a user acts on: the file, line, column and key of the mistake, in any segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.project import storyboard as S

THREE = """\
[project]
fps = 8

[[segment]]
id = "one"
prompt = "a lighthouse at dawn"
frames = 17

[[segment]]
id = "two"
prompt = "the beam sweeps the sea"
frames = 9

[[segment]]
id = "three"
prompt = "a storm rolls in"
"""


def _error(text: str, tmp_path: Path) -> S.StoryboardError:
    path = tmp_path / "film.toml"
    path.write_text(text)
    with pytest.raises(S.StoryboardError) as info:
        S.load(path)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("frames", [0, -5])
def test_frames_zero_or_negative_is_refused_at_its_line(frames: int, tmp_path: Path) -> None:
    err = _error(THREE.replace("frames = 9", f"frames = {frames}"), tmp_path)
    assert str(err) == f"{tmp_path / 'film.toml'}:12:1: segment[1].frames: must be between 1 and 2000"


@pytest.mark.parametrize(("index", "line"), [(0, 4), (1, 9), (2, 14)])
def test_a_missing_key_names_its_own_segment_header(index: int, line: int, tmp_path: Path) -> None:
    lines = THREE.splitlines(keepends=True)
    prompt_line = [i for i, t in enumerate(lines) if t.startswith("prompt")][index]
    del lines[prompt_line]
    err = _error("".join(lines), tmp_path)
    assert (err.line, err.column, err.key) == (line, 1, f"segment[{index}].prompt")


@pytest.mark.parametrize(("index", "line"), [(0, 7), (1, 12)])
def test_a_bad_value_in_a_non_last_segment_names_that_line(index: int, line: int, tmp_path: Path) -> None:
    text = THREE.replace("frames = 17" if index == 0 else "frames = 9", 'frames = "many"')
    err = _error(text, tmp_path)
    assert (err.line, err.column, err.key) == (line, 1, f"segment[{index}].frames")
    assert "expected an integer, got a string" in str(err)


def test_an_indented_key_is_found_at_its_column(tmp_path: Path) -> None:
    err = _error(THREE.replace("frames = 9", "    keep = 0"), tmp_path)
    assert (err.line, err.column, err.key) == (12, 5, "segment[1].keep")


# --------------------------------------------------------------- every refusal, exactly

SEG = '[[segment]]\nid = "a"\nprompt = "x"\n'
BAD = {
 "toml_syntax": '[project]\nfps = \n',
 "top_unknown_table": '[render]\nx = 1\n' + SEG,
 "top_unknown_key": 'title = "t"\n' + SEG,
 "project_not_table": 'project = 3\n' + SEG,
 "no_segments": '[project]\nfps = 8\n',
 "segment_not_list": 'segment = 3\n',
 "unknown_project_key": '[project]\nfps = 8\n  colour = "red"\n' + SEG,
 "unknown_segment_key": SEG + 'colour = "red"\n',
 "bool_for_int": '[project]\nfps = true\n' + SEG,
 "str_for_number": '[project]\ndrift_strength = "high"\n' + SEG,
 "float_for_int": SEG + 'seed = 1.5\n',
 "table_for_str": SEG + 'drift_guard = { a = 1 }\n',
 "array_for_str": '[project]\ntitle = [1]\n' + SEG,
 "datetime_for_str": '[project]\ntitle = 1979-05-27\n' + SEG,
 "size_one": '[project]\noutput_size = [1920]\n' + SEG,
 "size_zero": '[project]\n\ndraft_size = [0, 288]\n' + SEG,
 "size_bool": '[project]\nrefine_size = [true, 2]\n' + SEG,
 "size_float": '[project]\noutput_size = [1920.0, 1080]\n' + SEG,
 "sigmas_up": '[project]\nrefine_sigmas = [0.5, 0.7]\n' + SEG,
 "sigmas_empty": SEG + 'refine_sigmas = []\n',
 "sigmas_above": SEG + 'refine_sigmas = [1.5, 0.0]\n',
 "sigmas_below": SEG + 'refine_sigmas = [0.5, -0.1]\n',
 "sigmas_bool": SEG + 'refine_sigmas = [true]\n',
 "sigmas_str": SEG + 'refine_sigmas = ["0.5"]\n',
 "anchor_word": SEG + 'anchor = "last"\n',
 "anchor_table_kind": SEG + 'anchor = { audio = "a.wav" }\n',
 "anchor_table_two": SEG + 'anchor = { image = "a.png", video = "b.mp4" }\n',
 "anchor_table_empty_path": SEG + 'anchor = { image = "" }\n',
 "anchor_table_nonstr": SEG + 'anchor = { image = 3 }\n',
 "missing_id": '[[segment]]\nprompt = "x"\n',
 "bad_id": '[[segment]]\nid = "a b"\nprompt = "x"\n',
 "long_id": '[[segment]]\nid = "' + "a" * 65 + '"\nprompt = "x"\n',
 "dup_id": SEG + '\n' + SEG,
 "fps_zero": '[project]\nfps = 0\n' + SEG,
 "fps_high": '[project]\nfps = 241\n' + SEG,
 "drift_guard_bad": '[project]\ndrift_guard = "on"\n' + SEG,
 "drift_strength_high": '[project]\ndrift_strength = 1.5\n' + SEG,
 "drift_strength_neg": '[project]\ndrift_strength = -0.5\n' + SEG,
 "vram_zero": '[project]\nvram_budget_gb = 0\n' + SEG,
 "ram_neg": '[project]\nram_budget_gb = -1\n' + SEG,
 "odd_output": '[project]\noutput_size = [1921, 1080]\n' + SEG,
 "odd_output_h": '[project]\noutput_size = [1920, 1081]\n' + SEG,
 "empty_prompt": '[[segment]]\nid = "a"\nprompt = "  "\n',
 "frames_and_seconds": SEG + 'frames = 9\nseconds = 2\n',
 "frames_high": SEG + 'frames = 2001\n',
 "seconds_zero": SEG + 'seconds = 0\n',
 "seconds_high": SEG + 'seconds = 121\n',
 "keep_high": SEG + 'keep = 2001\n',
 "steps_zero": SEG + 'steps = 0\n',
 "steps_high": SEG + 'steps = 201\n',
 "seg_drift_guard": SEG + 'drift_guard = "always"\n',
 "int_for_str": '[project]\ntitle = 3\n' + SEG,
 "quoted_key": '[project]\n"fps" = 0\n' + SEG,
 "quoted_header": '["project"]\nfps = 0\n' + SEG,
 "indented_top_key": '  odd = 1\n' + SEG,
 "quoted_top_key": '"odd key" = 1\n' + SEG,
 "header_comment": '[[segment]]  # see [[notes]]\nid = "a"\n',
 "sigmas_in_segment_1": SEG + 'refine_sigmas = [0.5]\n[[segment]]\nid = "b"\nprompt = "y"\nrefine_sigmas = [0.1, 0.2]\n',
 "anchor_in_segment_1": SEG + 'anchor = "none"\n[[segment]]\nid = "b"\nprompt = "y"\nanchor = "x.txt"\n',
 "bad_id_in_segment_1": SEG + '\n[[segment]]\nprompt = "y"\nid = "b c"\n',
 "lora_nan": SEG + '\n' + '[[segment]]\nid = "b"\nprompt = "y"\nlora_strength = nan\n',
}

#: What the user reads for each: file:line:col: key: message (no line where the file has none).
EXPECTED = dict([
    ('toml_syntax', 's.toml:2:7: TOML syntax error: Invalid value'),
    ('top_unknown_table', 's.toml:1:1: render: unknown top-level key (expected [project] and [[segment]])'),
    ('top_unknown_key', 's.toml:1:1: title: unknown top-level key (expected [project] and [[segment]])'),
    ('project_not_table', 's.toml:1:1: project: [project] must be a table'),
    ('no_segments', 's.toml: segment: a storyboard needs at least one [[segment]]'),
    ('segment_not_list', 's.toml:1:1: segment: a storyboard needs at least one [[segment]]'),
    ('unknown_project_key', 's.toml:3:3: project.colour: unknown key (allowed: title, fps, seed, preset, vram_budget_gb, ram_budget_gb, draft_size, refine_size, output_size, audio, steps, refine_sigmas, lora_strength, enhance, drift_guard, drift_reference, drift_strength, cache_limit_gb)'),
    ('unknown_segment_key', 's.toml:4:1: segment[0].colour: unknown key (allowed: id, prompt, enhanced_prompt, enhance_lock, frames, seconds, seed, anchor, preset, steps, refine_sigmas, lora_strength, drift_guard, keep, keyframes, retake, loras, audio)'),
    ('bool_for_int', 's.toml:2:1: project.fps: expected an integer, got a boolean'),
    ('str_for_number', 's.toml:2:1: project.drift_strength: expected a number, got a string'),
    ('float_for_int', 's.toml:4:1: segment[0].seed: expected an integer, got a float'),
    ('table_for_str', 's.toml:4:1: segment[0].drift_guard: expected a string, got a table'),
    ('array_for_str', 's.toml:2:1: project.title: expected a string, got an array'),
    ('datetime_for_str', 's.toml:2:1: project.title: expected a string, got date'),
    ('size_one', 's.toml:2:1: project.output_size: expected [width, height] with two positive integers'),
    ('size_zero', 's.toml:3:1: project.draft_size: expected [width, height] with two positive integers'),
    ('size_bool', 's.toml:2:1: project.refine_size: expected [width, height] with two positive integers'),
    ('size_float', 's.toml:2:1: project.output_size: expected [width, height] with two positive integers'),
    ('sigmas_up', 's.toml:2:1: project.refine_sigmas: expected a non-increasing list of sigmas in [0, 1]'),
    ('sigmas_empty', 's.toml:4:1: segment[0].refine_sigmas: expected a non-increasing list of sigmas in [0, 1]'),
    ('sigmas_above', 's.toml:4:1: segment[0].refine_sigmas: expected a non-increasing list of sigmas in [0, 1]'),
    ('sigmas_below', 's.toml:4:1: segment[0].refine_sigmas: expected a non-increasing list of sigmas in [0, 1]'),
    ('sigmas_bool', 's.toml:4:1: segment[0].refine_sigmas: expected a non-increasing list of sigmas in [0, 1]'),
    ('sigmas_str', 's.toml:4:1: segment[0].refine_sigmas: expected a non-increasing list of sigmas in [0, 1]'),
    ('anchor_word', 's.toml:4:1: segment[0].anchor: "last" is neither "previous", "none", an image nor a video path'),
    ('anchor_table_kind', 's.toml:4:1: segment[0].anchor: expected { image = "path" } or { video = "path" }'),
    ('anchor_table_two', 's.toml:4:1: segment[0].anchor: expected { image = "path" } or { video = "path" }'),
    ('anchor_table_empty_path', 's.toml:4:1: segment[0].anchor: expected { image = "path" } or { video = "path" }'),
    ('anchor_table_nonstr', 's.toml:4:1: segment[0].anchor: expected { image = "path" } or { video = "path" }'),
    ('missing_id', "s.toml:1:1: segment[0].id: missing required key 'id'"),
    ('bad_id', "s.toml:2:1: segment[0].id: ids are 1-64 letters, digits, '-' or '_'"),
    ('long_id', "s.toml:2:1: segment[0].id: ids are 1-64 letters, digits, '-' or '_'"),
    ('dup_id', "s.toml:6:1: segment[1].id: duplicate id 'a' (first used by segment[0])"),
    ('fps_zero', 's.toml:2:1: project.fps: must be between 1 and 240'),
    ('fps_high', 's.toml:2:1: project.fps: must be between 1 and 240'),
    ('drift_guard_bad', 's.toml:2:1: project.drift_guard: must be one of off, anchor, anchor+output'),
    ('drift_strength_high', 's.toml:2:1: project.drift_strength: must be between 0 and 1'),
    ('drift_strength_neg', 's.toml:2:1: project.drift_strength: must be between 0 and 1'),
    ('vram_zero', 's.toml:2:1: project.vram_budget_gb: must be positive'),
    ('ram_neg', 's.toml:2:1: project.ram_budget_gb: must be positive'),
    ('odd_output', 's.toml:2:1: project.output_size: H.264 needs an even width and height'),
    ('odd_output_h', 's.toml:2:1: project.output_size: H.264 needs an even width and height'),
    ('empty_prompt', 's.toml:3:1: segment[0].prompt: must not be empty'),
    ('frames_and_seconds', 's.toml:5:1: segment[0].seconds: give frames or seconds, not both'),
    ('frames_high', 's.toml:4:1: segment[0].frames: must be between 1 and 2000'),
    ('seconds_zero', 's.toml:4:1: segment[0].seconds: must be between 0 and 120'),
    ('seconds_high', 's.toml:4:1: segment[0].seconds: must be between 0 and 120'),
    ('keep_high', 's.toml:4:1: segment[0].keep: must be between 1 and 2000 (frames of this shot the film keeps)'),
    ('steps_zero', 's.toml:4:1: segment[0].steps: must be between 1 and 200'),
    ('steps_high', 's.toml:4:1: segment[0].steps: must be between 1 and 200'),
    ('seg_drift_guard', 's.toml:4:1: segment[0].drift_guard: must be one of off, anchor, anchor+output'),
    ('lora_nan', 's.toml:8:1: segment[1].lora_strength: must be a number'),
    ('int_for_str', 's.toml:2:1: project.title: expected a string, got an integer'),
    ('quoted_key', 's.toml:2:1: project.fps: must be between 1 and 240'),
    ('quoted_header', 's.toml:2:1: project.fps: must be between 1 and 240'),
    ('indented_top_key', 's.toml:1:3: odd: unknown top-level key (expected [project] and [[segment]])'),
    ('quoted_top_key', 's.toml:1:1: odd key: unknown top-level key (expected [project] and [[segment]])'),
    ('header_comment', "s.toml:1:1: segment[0].prompt: missing required key 'prompt'"),
    ('sigmas_in_segment_1', 's.toml:8:1: segment[1].refine_sigmas: expected a non-increasing list of sigmas in [0, 1]'),
    ('anchor_in_segment_1', 's.toml:8:1: segment[1].anchor: "x.txt" is neither "previous", "none", an image nor a video path'),
    ('bad_id_in_segment_1', "s.toml:7:1: segment[1].id: ids are 1-64 letters, digits, '-' or '_'"),
])


@pytest.mark.parametrize("case", list(BAD))
def test_every_refusal_names_file_line_column_key_and_why(case: str) -> None:
    with pytest.raises(S.StoryboardError) as info:
        S.parse(BAD[case], "s.toml")
    assert str(info.value) == EXPECTED[case]
    err = info.value
    assert (err.path, f"{err.key}: {err.message}" if err.key else err.message) == ("s.toml", str(err).split(": ", 1)[1])
    if not str(err)[len("s.toml:"):][:1].isdigit():  # no position in the text: none in the fields
        assert (err.line, err.column) == (0, 0)


EDGES = [
    '[project]\nfps = 1\n', '[project]\nfps = 240\n', '[project]\ndrift_strength = 0\n',
    '[project]\ndrift_strength = 1\n', '[project]\nvram_budget_gb = 0.5\nram_budget_gb = 1\n',
    '[project]\noutput_size = [1280, 722]\ndraft_size = [1, 1]\n',
    SEG + 'frames = 1\nkeep = 1\nsteps = 1\n', SEG + 'frames = 2000\nkeep = 2000\nsteps = 200\n',
    '[project]\nfps = 16\n' + SEG + 'seconds = 120\n', SEG + 'refine_sigmas = [0.5, 0.5, 0]\n',
]


@pytest.mark.parametrize("text", EDGES)
def test_every_range_accepts_its_edges(text: str) -> None:
    S.parse(text if "[[segment]]" in text else text + SEG, "s.toml")


def test_the_sigmas_rule_and_default_paths_are_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"non-increasing list of sigmas in \[0, 1\]"):
        S.check_sigmas([0.2, 0.4])
    assert S.check_sigmas([1, 0.5, 0.5]) == (1.0, 0.5, 0.5)
    with pytest.raises(S.StoryboardError, match=r"^<storyboard>: segment: "):
        S.parse("[project]\n")
    with pytest.raises(S.StoryboardError, match=r"^<storyboard>: project.fps: "):
        S.project_from_table({"fps": 0})
    err = S.StoryboardError("f", "m")
    assert (err.line, err.column, err.key) == (0, 0, "")


# ------------------------------------------------------------------ what a good file gives

FULL = """\
[project]
title = "Full"
fps = 12
seed = 7
preset = "tiny"
vram_budget_gb = 8
ram_budget_gb = 31.5
draft_size = [512, 288]
refine_size = [1024, 576]
output_size = [1280, 720]
audio = false
steps = 6
refine_sigmas = [1, 0.5, 0]
lora_strength = 0.6
enhance = false
drift_guard = "anchor"
drift_reference = "ref.png"
drift_strength = 0.5

[[segment]]
id = "a"
prompt = "first"
enhanced_prompt = "first, enhanced"
enhance_lock = true
seconds = 1.25
seed = 3
anchor = "none"
preset = "other"
steps = 4
refine_sigmas = [0.9, 0.0]
lora_strength = 0.25
drift_guard = "off"
keep = 9

[[segment]]
id = "b"
prompt = "second"
anchor = "frames/last.PNG"

[[segment]]
id = "c"
prompt = "third"
anchor = { video = "clips/x.mov" }

[[segment]]
id = "d"
prompt = "fourth"
anchor = "clip.MKV"

[[segment]]
id = "e"
prompt = "fifth"
anchor = { image = "still.jpg" }
"""


def test_every_key_of_a_full_storyboard_arrives_typed(tmp_path: Path) -> None:
    sb = S.parse(FULL, tmp_path / "full.toml")
    assert sb.project == S.Project(title="Full", fps=12, seed=7, preset="tiny", vram_budget_gb=8, ram_budget_gb=31.5,
                                   draft_size=(512, 288), refine_size=(1024, 576), output_size=(1280, 720),
                                   audio=False, steps=6, refine_sigmas=(1.0, 0.5, 0.0), lora_strength=0.6,
                                   enhance=False, drift_guard="anchor", drift_reference="ref.png", drift_strength=0.5)
    assert all(type(v) is float for v in sb.project.refine_sigmas or ())
    assert sb.segments[0] == S.Segment(id="a", prompt="first", enhanced_prompt="first, enhanced", enhance_lock=True,
                                       seconds=1.25, seed=3, anchor=S.Anchor("none"), preset="other", steps=4,
                                       refine_sigmas=(0.9, 0.0), lora_strength=0.25, drift_guard="off", keep=9)
    assert [s.anchor for s in sb.segments[1:]] == [S.Anchor("image", "frames/last.PNG"), S.Anchor("video", "clips/x.mov"),
                                                   S.Anchor("video", "clip.MKV"), S.Anchor("image", "still.jpg")]
    assert [s.anchor.to_toml() for s in sb.segments] == ["none", {"image": "frames/last.PNG"},
                                                         {"video": "clips/x.mov"}, {"video": "clip.MKV"},
                                                         {"image": "still.jpg"}]
    assert S.Anchor().to_toml() == "previous"
    # a full file saves back unchanged, and what it saves parses to the same storyboard
    path = tmp_path / "full.toml"
    path.write_text(FULL)
    assert S.save(S.load(path)) == FULL
    assert S.parse(S.render_toml(sb, ""), path) == sb


def test_frame_count_from_frames_seconds_or_the_default() -> None:
    assert S.Segment(id="a", prompt="p", frames=17).frame_count(24) == 17
    assert S.Segment(id="a", prompt="p", seconds=1.5).frame_count(8) == 12
    assert S.Segment(id="a", prompt="p", seconds=0.01).frame_count(24) == 1
    assert S.Segment(id="a", prompt="p").frame_count(24) == 49
    assert S.Segment(id="a", prompt="p").frame_count(8) == 17


def test_paths_lookups_and_new_ids(tmp_path: Path) -> None:
    sb = S.parse(FULL, tmp_path / "films" / "full.toml")
    assert sb.stem == "full"
    assert sb.resolve("ref.png") == tmp_path / "films" / "ref.png"
    assert sb.resolve("/abs/x.png") == Path("/abs/x.png")
    assert sb.resolve("~/x.png") == Path.home() / "x.png"
    assert sb.render_dir() == tmp_path / "films" / "renders" / "full"
    assert sb.state_dir() == tmp_path / "films" / ".sulphur"
    assert sb.segment("c").prompt == "third" and sb.index("c") == 2
    with pytest.raises(KeyError, match="zz"):
        sb.segment("zz")
    assert S.new_segment_id(sb) == "shot-6"
    taken = S.with_segment(sb, "e", id="shot-6")
    assert S.new_segment_id(taken) == "shot-7"
    assert S.new_segment_id(sb, "take") == "take-6"


def test_load_refuses_a_missing_or_binary_file_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(S.StoryboardError) as info:
        S.load(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: file not found"
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b'[project]\ntitle = "\xff"\n')
    with pytest.raises(S.StoryboardError) as info:
        S.load(bad)
    assert str(info.value) == f"{bad}: not UTF-8 text (invalid start byte at byte 19)"


def test_project_from_table_checks_like_a_file() -> None:
    assert S.project_from_table({"fps": 12, "output_size": [640, 360], "refine_sigmas": [0.5, 0]}) == \
        S.Project(fps=12, output_size=(640, 360), refine_sigmas=(0.5, 0.0))
    with pytest.raises(S.StoryboardError) as info:
        S.project_from_table({"fps": 0}, "form")
    assert (str(info.value), info.value.key) == ("form: project.fps: must be between 1 and 240", "project.fps")


def test_error_text_without_line_or_key() -> None:
    assert str(S.StoryboardError("f.toml", "broken")) == "f.toml: broken"
    err = S.StoryboardError("f.toml", "bad", 3, 4, "k")
    assert (str(err), err.path, err.message, err.line, err.column, err.key) == ("f.toml:3:4: k: bad", "f.toml",
                                                                                "bad", 3, 4, "k")


# -------------------------------------------------------------------------- saving


def test_save_keeps_the_files_mode_writes_utf8_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FULL.replace('"first"', '"première"'), encoding="utf-8")
    path.chmod(0o640)
    sb = S.load(path)
    S.save(S.with_segment(sb, "b", prompt="deuxième — é"))
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert 'prompt = "deuxième — é"' in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    new = tmp_path / "new.toml"
    S.save(sb, new)
    assert S.load(new).segments == sb.segments and sorted(p.name for p in tmp_path.iterdir()) == ["new.toml", "s.toml"]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("old")
    with pytest.raises(TypeError):
        S.atomic_write(path, None)  # type: ignore[arg-type]
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    S.atomic_write(path, "a\r\nb")
    assert path.read_bytes() == b"a\r\nb"  # no newline translation


def test_save_into_a_broken_file_names_that_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FULL)
    sb = S.load(path)
    path.write_text(FULL.replace("fps = 12", "fps = "))
    with pytest.raises(S.StoryboardError, match=f"^{path}:3:"):
        S.save(sb)


def test_an_edited_anchor_path_is_written(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FULL)
    S.save(S.with_segment(S.load(path), "b", anchor=S.Anchor("image", "other.png")))
    assert S.load(path).segments[1].anchor == S.Anchor("image", "other.png")


def test_clearing_a_project_setting_keeps_the_ones_after_it(tmp_path: Path) -> None:
    from dataclasses import replace as rep

    path = tmp_path / "s.toml"
    path.write_text(FULL)
    sb = S.load(path)
    S.save(rep(sb, project=rep(sb.project, vram_budget_gb=None, drift_strength=0.25)))
    again = S.load(path).project
    assert (again.vram_budget_gb, again.drift_strength, again.ram_budget_gb) == (None, 0.25, 31.5)
    assert "vram_budget_gb" not in path.read_text()


def test_save_refuses_text_it_could_not_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FULL)
    sb = S.load(path)
    with pytest.raises(S.StoryboardError) as info:
        S.save(S.with_segment(sb, "b", steps=0))
    assert str(info.value).startswith(f"{path}:")
    assert path.read_text() == FULL


def test_a_project_table_is_added_and_defaults_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[segment]]\nid = "a"\nprompt = "x"\nsteps = 4\n')
    sb = S.load(path)
    from dataclasses import replace as rep

    S.save(rep(S.with_segment(sb, "a", steps=None), project=S.Project(fps=12)))
    again = S.load(path)
    assert again.project.fps == 12 and again.segments[0].steps is None
    assert "steps" not in path.read_text() and "[project]" in path.read_text()
    S.save(rep(again, project=S.Project()))  # back to the default: a key the file spells out stays
    assert "fps = 24" in path.read_text()


# ----------------------------------------------------------------------- staleness


def test_segment_digest_follows_the_chain_back_to_its_start() -> None:
    sb = S.parse(FULL.replace('anchor = "frames/last.PNG"\n', "").replace("anchor = { video", "# { video")
                 .replace('anchor = { video = "clips/x.mov" }', ""), "s.toml")
    # b and c continue from the shot before them; a starts from nothing
    chain = {sid: S.segment_digest(sb, sid) for sid in ("a", "b", "c", "d")}
    assert len(set(chain.values())) == 4 and all(len(d) == 16 for d in chain.values())
    edit_a = S.with_segment(sb, "a", prompt="changed")
    assert [S.segment_digest(edit_a, s) != chain[s] for s in ("a", "b", "c", "d")] == [True, True, True, False]
    edit_c = S.with_segment(sb, "c", seed=99)
    assert [S.segment_digest(edit_c, s) != chain[s] for s in ("a", "b", "c", "d")] == [False, False, True, False]
    # not pixels: the id, an unlocked enhanced prompt, the lock itself; title and budgets
    same = S.with_segment(sb, "b", enhanced_prompt="rewritten by the worker")
    assert S.segment_digest(same, "b") == chain["b"]
    from dataclasses import replace as rep

    for field, value in (("title", "x"), ("vram_budget_gb", 4.0), ("ram_budget_gb", 8.0)):
        assert S.segment_digest(rep(sb, project=rep(sb.project, **{field: value})), "b") == chain["b"]
    assert S.segment_digest(rep(sb, project=rep(sb.project, fps=30)), "b") != chain["b"]
    # a locked enhanced prompt is what the shot renders from
    assert S.segment_digest(S.with_segment(sb, "a", enhanced_prompt="other"), "a") != chain["a"]
    locked = S.with_segment(sb, "b", enhance_lock=True)
    assert S.segment_digest(S.with_segment(locked, "b", enhanced_prompt="mine"), "b") != S.segment_digest(locked, "b")
    # the position counts: the same shots in another order are other renders
    swapped = rep(sb, segments=(sb.segments[0], sb.segments[2], sb.segments[1], *sb.segments[3:]))
    assert S.segment_digest(swapped, "b") != chain["b"]
