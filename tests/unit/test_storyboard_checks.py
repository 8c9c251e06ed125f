"""Every range a storyboard checks, the shot keys (keyframes, retake, loras, audio) and the files
it cannot read: what a user sees is the one line ``file:line:col: key: why``, exactly, and what
a good file gives is the typed value. Parsing TOML strings only (milliseconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.project import storyboard as S
from pipeline.project.audio_track import AudioTrack
from pipeline.project.keyframes import Keyframe
from pipeline.project.loras import LoraRef

MAX_SEED = 2**63 - 1
SEG = '[[segment]]\nid = "a"\nprompt = "x"\n'
#: Two shots: a key appended lands on line 8, in segment[1] (an error there must name that shot).
TWO = SEG + '\n[[segment]]\nid = "b"\nprompt = "y"\n'
#: 1.5 s at 8 fps: segment[1] has 12 frames (0..11); a key appended lands on line 11.
TIMED = '[project]\nfps = 8\n' + TWO + 'seconds = 1.5\n'
PROJECT_KEYS = ("title, fps, seed, preset, vram_budget_gb, ram_budget_gb, draft_size, refine_size, output_size, "
                "audio, steps, refine_sigmas, lora_strength, enhance, drift_guard, drift_reference, drift_strength, "
                "cache_limit_gb")
SOUND = ".aac, .flac, .m4a, .mp3, .ogg, .opus, .wav"

#: case -> (storyboard text, the one line the user reads)
REFUSED = {
    # [project] ranges: the key, its line and the words of the rule
    "project_seed_negative": ('[project]\nseed = -1\n' + SEG,
                              f"s.toml:2:1: project.seed: must be between 0 and {MAX_SEED}"),
    "project_steps_zero": ('[project]\nfps = 8\nsteps = 0\n' + SEG, "s.toml:3:1: project.steps: must be between 1 and 200"),
    "project_steps_high": ('[project]\nsteps = 201\n' + SEG, "s.toml:2:1: project.steps: must be between 1 and 200"),
    "project_lora_low": ('[project]\nlora_strength = -10.5\n' + SEG,
                         "s.toml:2:1: project.lora_strength: must be between -10 and 10"),
    "project_lora_high": ('[project]\nlora_strength = 10.5\n' + SEG,
                          "s.toml:2:1: project.lora_strength: must be between -10 and 10"),
    "project_preset_blank": ('[project]\npreset = "  "\n' + SEG, "s.toml:2:1: project.preset: must not be empty"),
    "vram_below_half_a_gib": ('[project]\nvram_budget_gb = 0.25\n' + SEG,
                              "s.toml:2:1: project.vram_budget_gb: must be between 0.5 and 100000 (GiB)"),
    "ram_past_the_cap": ('[project]\nfps = 8\n  ram_budget_gb = 100000.5\n' + SEG,
                         "s.toml:3:3: project.ram_budget_gb: must be between 0.5 and 100000 (GiB)"),
    "cache_limit_tiny": ('[project]\ncache_limit_gb = 0.05\n' + SEG,
                         "s.toml:2:1: project.cache_limit_gb: must be between 0.1 and 1000000 (GiB)"),
    "cache_limit_huge": ('[project]\ncache_limit_gb = 1000000.5\n' + SEG,
                         "s.toml:2:1: project.cache_limit_gb: must be between 0.1 and 1000000 (GiB)"),
    "output_past_8k": ('[project]\noutput_size = [8194, 1080]\n' + SEG,
                       "s.toml:2:1: project.output_size: at most 8192 pixels a side"),
    "draft_past_8k_indented": ('[project]\nfps = 8\n  draft_size = [512, 8193]\n' + SEG,
                               "s.toml:3:3: project.draft_size: at most 8192 pixels a side"),
    # a shot's ranges, in the second shot: its own line and index
    "segment_seed_negative": (TWO + 'seed = -1\n', f"s.toml:8:1: segment[1].seed: must be between 0 and {MAX_SEED}"),
    "segment_lora_low": (TWO + 'lora_strength = -10.5\n', "s.toml:8:1: segment[1].lora_strength: must be between -10 and 10"),
    "segment_lora_high": (TWO + 'lora_strength = 10.5\n', "s.toml:8:1: segment[1].lora_strength: must be between -10 and 10"),
    "segment_preset_blank": (TWO + 'preset = ""\n', "s.toml:8:1: segment[1].preset: must not be empty"),
    # seconds × fps past the 2000-frame cap, said in the user's own numbers
    "seconds_times_fps_past_the_cap": ('[project]\nfps = 24\n' + TWO + 'seconds = 83.5\n',
                                       "s.toml:10:1: segment[1].seconds: 83.5 s at 24 fps is 2004 frames; "
                                       "a shot has at most 2000"),
    # the shot keys: checked against the shot's own frame count (here from seconds × fps)
    "keyframe_past_the_last_frame": (TIMED + 'keyframes = [{ frame = 12, image = "k.png" }]\n',
                                     "s.toml:11:1: segment[1].keyframes: keyframe 1: frame 12 is outside the "
                                     "shot's 12 frames (-12..11)"),
    "retake_past_the_last_frame": (TIMED + 'retake = [2, 12]\n',
                                   "s.toml:11:1: segment[1].retake: [2, 12] must satisfy 0 <= first <= last <= 11 "
                                   "(the shot has 12 frames)"),
    "retake_of_every_frame": (TIMED + 'keyframes = [{ frame = 0, image = "k.png" }]\nretake = [0, 11]\n',
                              "s.toml:12:1: segment[1].retake: a retake of every frame is a new shot: change its "
                              "seed instead"),
    "lora_not_safetensors": (TWO + 'loras = [{ path = "style.bin" }]\n',
                             "s.toml:8:1: segment[1].loras: entry 1: style.bin: a LoRA is a .safetensors file"),
    "audio_not_a_sound": (TWO + 'audio = "song.txt"\n',
                          f"s.toml:8:1: segment[1].audio: song.txt: expected a sound file ({SOUND})"),
    # where the locator looks: names starting with X, repeated sub-tables, the end of the file
    "unknown_table_named_x": ('[Xtra]\nk = 1\n' + SEG,
                              "s.toml:1:1: Xtra: unknown top-level key (expected [project] and [[segment]])"),
    "unknown_top_level_key_indented": ('# film\n\t  bogus = 1\n' + SEG,
                                       "s.toml:2:4: bogus: unknown top-level key (expected [project] and [[segment]])"),
    # tables and keys the table index does not hold: a header of the name anywhere, quoted or
    # dotted; a key only before the first header (after it, a key of that table: not this one)
    "unknown_array_of_tables": (SEG + '\n[[notes]]\ntext = "x"\n',
                                "s.toml:5:1: notes: unknown top-level key (expected [project] and [[segment]])"),
    "unknown_dotted_table_after_a_shot_key_so_named": (
        SEG + 'bogus = 1\n  [ "bogus".x ]\ny = 2\n',
        "s.toml:5:3: bogus: unknown top-level key (expected [project] and [[segment]])"),
    "unknown_dotted_top_level_key": ('  bogus.x = 2\n' + SEG,
                                     "s.toml:1:3: bogus: unknown top-level key (expected [project] and [[segment]])"),
    "unknown_quoted_top_level_key": ("# c\n 'odd key' = 1\n" + SEG,
                                     "s.toml:2:2: odd key: unknown top-level key (expected [project] and [[segment]])"),
    "unknown_project_key_named_x": ('[project]\nfps = 8\nXmas = 1\n' + SEG,
                                    f"s.toml:3:1: project.Xmas: unknown key (allowed: {PROJECT_KEYS})"),
    "after_repeated_anchor_tables": (
        SEG + '[segment.anchor]\nimage = "a.png"\n\n[[segment]]\nid = "b"\nprompt = "y"\n[segment.anchor]\n'
        'image = "b.png"\n\n[[segment]]\nid = "c"\nprompt = "z"\nsteps = 0\n',
        "s.toml:16:1: segment[2].steps: must be between 1 and 200"),
    "syntax_error_at_the_end_of_the_file": ('[project]\nfps = ', "s.toml:2:7: TOML syntax error: Invalid value"),
    "syntax_error_at_the_end_of_a_shot": (SEG + 'seed = ', "s.toml:4:8: TOML syntax error: Invalid value"),
    # top-level values that should be tables: the line that spells them
    "project_is_a_number": ('# my film\nproject = 3\n' + SEG, "s.toml:2:1: project: [project] must be a table"),
    "segment_is_a_number": ('segment = 3\n[project]\nfps = 8\n',
                            "s.toml:1:1: segment: a storyboard needs at least one [[segment]]"),
    # [project] written as an inline table: the key inside it, on that line
    "inline_project_value": ('# film\nproject = { title = "x", fps = 0 }\n' + SEG,
                             "s.toml:2:26: project.fps: must be between 1 and 240"),
    "inline_project_quoted_key": ('project = {"fps" = 300}\n' + SEG,
                                  "s.toml:1:12: project.fps: must be between 1 and 240"),
    "inline_project_unknown_key": ('project = { fps = 24, bogus = 1 }\n' + SEG,
                                   f"s.toml:1:23: project.bogus: unknown key (allowed: {PROJECT_KEYS})"),
    "inline_project_nested_table": ('project = { x = { y = 1 } }\n' + SEG,
                                    f"s.toml:1:13: project.x: unknown key (allowed: {PROJECT_KEYS})"),
    "inline_project_key_with_x": ('project = { Xray = 1 }\n' + SEG,
                                  f"s.toml:1:13: project.Xray: unknown key (allowed: {PROJECT_KEYS})"),
    "inline_project_quoted_name": ('"project" = { fps = 0 }\n' + SEG, "s.toml:1:15: project.fps: must be between 1 and 240"),
    # a dotted key is not spelled as one name: the table's own position, indent included
    "inline_project_dotted_key": ('  project = { x.y = 1 }\n' + SEG,
                                  f"s.toml:1:3: project.x: unknown key (allowed: {PROJECT_KEYS})"),
    # nested past the parser's recursion: the first bracket past 64 levels, brackets in a comment
    # and a string before it not counted (this was a RecursionError traceback)
    "nested_too_deep": ('[project] # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n'
                        'title = "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"\n'
                        'x = ' + "[" * 5000 + "]" * 5000 + '\n' + SEG,
                        "s.toml:3:69: values nested more than 64 deep: not a storyboard"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_each_refusal_is_one_line_with_its_line_column_key_and_rule(case: str) -> None:
    text, expected = REFUSED[case]
    with pytest.raises(S.StoryboardError) as info:
        S.parse(text, "s.toml")
    assert str(info.value) == expected
    where, _, rest = expected.partition(": ")
    _, line, col = where.split(":")
    assert (info.value.path, info.value.line, info.value.column) == ("s.toml", int(line), int(col))
    assert rest == (f"{info.value.key}: " if info.value.key else "") + info.value.message  # a syntax error has no key


#: The edges of every range are accepted and arrive as written.
EDGES = [
    ('[project]\nseed = 9223372036854775807\nsteps = 1\nlora_strength = -10\nvram_budget_gb = 100000\n'
     'cache_limit_gb = 0.1\n' + SEG,
     {"seed": MAX_SEED, "steps": 1, "lora_strength": -10, "vram_budget_gb": 100000, "cache_limit_gb": 0.1}),
    ('[project]\nseed = 0\nsteps = 200\nlora_strength = 10\nram_budget_gb = 100000\ncache_limit_gb = 1000000\n'
     'output_size = [8192, 8192]\ndraft_size = [8192, 2]\n' + SEG,
     {"seed": 0, "steps": 200, "lora_strength": 10, "ram_budget_gb": 100000, "cache_limit_gb": 1000000,
      "output_size": (8192, 8192), "draft_size": (8192, 2)}),
]


@pytest.mark.parametrize(("text", "values"), EDGES)
def test_the_project_ranges_accept_their_edges(text: str, values: dict) -> None:
    project = S.parse(text, "s.toml").project
    assert {k: getattr(project, k) for k in values} == values


def test_a_shots_ranges_accept_their_edges() -> None:
    low = S.parse(SEG + 'seed = 0\nlora_strength = -10\n', "s.toml").segments[0]
    high = S.parse(SEG + f'seed = {MAX_SEED}\nlora_strength = 10\n', "s.toml").segments[0]
    assert (low.seed, low.lora_strength, high.seed, high.lora_strength) == (0, -10, MAX_SEED, 10)
    exactly = S.parse('[project]\nfps = 20\n' + SEG + 'seconds = 100\n', "s.toml")  # 2000 frames: the cap itself
    assert exactly.segments[0].frame_count(exactly.project.fps) == 2000


def test_keyframes_and_a_retake_arrive_typed_against_the_shots_frames() -> None:
    text = TIMED + ('keyframes = [{ frame = 0, image = "a.png" }, { frame = -1, image = "b.png", strength = 0.5 }]\n'
                    'retake = [2, 11]\n')
    first, second = S.parse(text, "s.toml").segments
    assert second.keyframes == (Keyframe(0, "a.png"), Keyframe(-1, "b.png", 0.5))
    assert second.retake == (2, 11)
    assert (first.keyframes, first.retake) == ((), None)


def test_loras_and_audio_arrive_typed() -> None:
    text = (SEG + 'audio = "a.flac"\n\n[[segment]]\nid = "b"\nprompt = "y"\n'
            'loras = [{ path = "style.safetensors", strength = 0.5 }, { repo = "o/n", path = "x.safetensors" }]\n'
            'audio = { path = "song.wav", start = 1.5 }\n')
    first, second = S.parse(text, "s.toml").segments
    assert first.audio == AudioTrack("a.flac") and first.loras == ()
    assert second.loras == (LoraRef("style.safetensors", 0.5), LoraRef("x.safetensors", 1.0, "o/n"))
    assert second.audio == AudioTrack("song.wav", 1.5)


def test_the_project_forms_refusal_names_the_setting_and_no_line() -> None:
    with pytest.raises(S.StoryboardError) as info:
        S.project_from_table({"fps": 8, "steps": 0}, "form")
    err = info.value
    assert (str(err), err.key, err.line, err.column) == ("form: project.steps: must be between 1 and 200",
                                                         "project.steps", 0, 0)


def test_a_new_or_renamed_shots_id_is_checked_like_the_files() -> None:
    sb = S.parse(TWO, "s.toml")
    assert S.segment_id_problem(sb, "a b") == "ids are 1-64 letters, digits, '-' or '_'"
    assert S.segment_id_problem(sb, "b") == "duplicate id 'b' (used by segment[1])"
    assert S.segment_id_problem(sb, "a", current="b") == "duplicate id 'a' (used by segment[0])"
    assert S.segment_id_problem(sb, "b", current="b") == ""  # renaming a shot to its own id
    assert S.segment_id_problem(sb, "c") == ""


def test_load_names_what_the_path_is_instead_of_a_storyboard(tmp_path: Path) -> None:
    with pytest.raises(S.StoryboardError) as info:
        S.load(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a regular file"
    afile = tmp_path / "f.toml"
    afile.write_text(SEG)
    with pytest.raises(S.StoryboardError) as info:
        S.load(afile / "x.toml")
    assert str(info.value) == f"{afile / 'x.toml'}: Not a directory"


def test_load_refuses_a_file_past_16_mib_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:  # sparse: no 16 MiB written to the disk
        fh.truncate(S.MAX_STORYBOARD_BYTES + 1)
    with pytest.raises(S.StoryboardError) as info:
        S.load(big)
    assert str(info.value) == f"{big}: larger than 16 MiB: not a storyboard"
    assert os.path.getsize(big) == S.MAX_STORYBOARD_BYTES + 1


def test_unknown_presets_are_placed_where_each_is_asked_for(tmp_path: Path) -> None:
    """The editor's check against a worker's presets: the project's and each shot's, at file:line:col."""
    path = tmp_path / "s.toml"
    path.write_text('[project]\npreset = "tiny"\n' + TWO + 'preset = "wan-typo"\n')
    sb = S.load(path)
    lines = [str(e) for e in S.unknown_presets(sb, ["tiny", "ltx23-distilled"])]
    assert lines == [f"{path}:10:1: segment[1].preset: unknown preset 'wan-typo' "
                     "(this worker has ltx23-distilled, tiny)"]
    assert S.unknown_presets(sb, ["tiny", "wan-typo"]) == []
    assert S.unknown_presets(sb, []) == [], "a worker that did not say: nothing to check against"
    path.write_text('[project]\npreset = "ltx9"\n' + SEG)
    assert [str(e) for e in S.unknown_presets(S.load(path), ["tiny"])] == [
        f"{path}:2:1: project.preset: unknown preset 'ltx9' (this worker has tiny)"]
