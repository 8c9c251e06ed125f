"""What a save writes into the user's file: an edit changes its own line and nothing else, what
the file spells otherwise but means the same stays as the user wrote it, a renamed shot keeps
its comments, a new key goes where a reader looks for it. Strings in, strings out (no render)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.project import storyboard as S
from pipeline.project.audio_track import AudioTrack
from pipeline.project.keyframes import Keyframe
from pipeline.project.loras import LoraRef

#: loras, audio and keyframes spelled otherwise than a save would write them (strength left out
#: or spelled 1.0, a table for a plain path), and a keyframe past frame 62 of a 121-frame shot.
SPELLED = """\
[project]
fps = 8
audio = true

[[segment]]
id = "a"
prompt = "a harbour at night"
frames = 121
keyframes = [ {frame = 100, image = "k.png", strength = 1.0} ]
loras = [ { path = "style.safetensors" } ]
audio = { path = "song.wav" }
"""


def _save(tmp_path: Path, text: str, edit=None, renames=None) -> str:  # noqa: ANN001
    path = tmp_path / "s.toml"
    path.write_text(text)
    sb = S.load(path)
    S.save(edit(sb) if edit else sb, renames=renames)
    return path.read_text()


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new), after
    return [(x, y) for x, y in zip(old, new, strict=True) if x != y]


def test_shot_keys_spelled_otherwise_stay_as_written(tmp_path: Path) -> None:
    assert _save(tmp_path, SPELLED) == SPELLED
    after = _save(tmp_path, SPELLED, lambda sb: S.with_segment(sb, "a", prompt="a harbour at dawn"))
    assert _changed_lines(SPELLED, after) == [('prompt = "a harbour at night"', 'prompt = "a harbour at dawn"')]


def test_an_edit_of_a_shot_key_is_written(tmp_path: Path) -> None:
    def edit(sb: S.Storyboard) -> S.Storyboard:
        return S.with_segment(sb, "a", keyframes=(Keyframe(100, "other.png"),), loras=(LoraRef("style.safetensors", 0.5),),
                              audio=AudioTrack("song.wav", 2.0))
    after = _save(tmp_path, SPELLED, edit)
    seg = S.parse(after, "s.toml").segments[0]
    assert (seg.keyframes, seg.loras, seg.audio) == ((Keyframe(100, "other.png"),), (LoraRef("style.safetensors", 0.5),),
                                                    AudioTrack("song.wav", 2.0))


def test_turning_the_films_sound_off_is_written(tmp_path: Path) -> None:
    after = _save(tmp_path, SPELLED, lambda sb: replace(sb, project=replace(sb.project, audio=False)))
    assert _changed_lines(SPELLED, after) == [("audio = true", "audio = false")]


ANCHORED = """\
[[segment]]
id = "a"
prompt = "x"
anchor = { video = "in.mp4" }  # the opening clip
steps = 4
"""


def test_an_edited_anchor_table_stays_inline_on_its_line_with_its_comment(tmp_path: Path) -> None:
    same_kind = _save(tmp_path, ANCHORED, lambda sb: S.with_segment(sb, "a", anchor=S.Anchor("video", "o.mp4"), steps=6))
    assert _changed_lines(ANCHORED, same_kind) == [
        ('anchor = { video = "in.mp4" }  # the opening clip', 'anchor = { video = "o.mp4" }  # the opening clip'),
        ("steps = 4", "steps = 6")]
    other_kind = _save(tmp_path, ANCHORED, lambda sb: S.with_segment(sb, "a", anchor=S.Anchor("image", "still.png")))
    assert _changed_lines(ANCHORED, other_kind) == [
        ('anchor = { video = "in.mp4" }  # the opening clip', 'anchor = {image = "still.png"}  # the opening clip')]


def test_an_anchor_turned_from_a_word_to_a_file_keeps_its_line_and_comment(tmp_path: Path) -> None:
    """``anchor = "previous"  # …`` to an image was written as a ``[segment.anchor]`` table at the
    shot's end, its line and comment deleted."""
    text = ANCHORED.replace('anchor = { video = "in.mp4" }  # the opening clip',
                            'anchor = "previous"  # the opening clip')
    saved = _save(tmp_path, text, lambda sb: S.with_segment(sb, "a", anchor=S.Anchor("image", "still.png")))
    assert _changed_lines(text, saved) == [
        ('anchor = "previous"  # the opening clip', 'anchor = {image = "still.png"}  # the opening clip')]


SECTIONS = """\
[project]
fps = 8

[[segment]]
id = "a"
prompt = "x"
# seed = 3

# ---- Act two ----
# the storm

[[segment]]
id = "b"
prompt = "y"
steps = 4
"""


def test_a_new_key_goes_under_the_shots_own_comments_above_the_next_sections(tmp_path: Path) -> None:
    def edit(sb: S.Storyboard) -> S.Storyboard:
        return S.with_segment(S.with_segment(sb, "a", prompt="z", seed=5, steps=6), "b", steps=8)
    after = _save(tmp_path, SECTIONS, edit)
    assert after == SECTIONS.replace("# seed = 3\n", "# seed = 3\nseed = 5\nsteps = 6\n").replace(
        "steps = 4", "steps = 8").replace('"x"', '"z"')  # the edited prompt stays on its line
    tight = SECTIONS.replace("\n# ---- Act two ----\n# the storm\n", "")  # no section notes: the key goes last
    assert _save(tmp_path, tight, lambda sb: S.with_segment(sb, "a", steps=6)) == tight.replace(
        "# seed = 3\n", "# seed = 3\nsteps = 6\n")
    last = SECTIONS + "# seed = 9\n"  # the file ends in the last shot's commented-out key
    assert _save(tmp_path, last, lambda sb: S.with_segment(sb, "b", seed=1)) == last + "seed = 1\n"


def test_a_first_setting_goes_under_the_project_tables_own_notes(tmp_path: Path) -> None:
    text = '[project]\n# title = "draft"\n\n# ---- Act one ----\n\n[[segment]]\nid = "a"\nprompt = "x"\n'
    after = _save(tmp_path, text, lambda sb: replace(sb, project=replace(sb.project, fps=8)))
    assert after == text.replace('"draft"\n', '"draft"\nfps = 8\n')


RENAMED = """\
[project]
fps = 8

[[segment]]
id = "a"   # the opening
prompt = "x"
steps = 4  # keep it quick
"""


def test_a_renamed_shot_keeps_its_table_and_comments(tmp_path: Path) -> None:
    after = _save(tmp_path, RENAMED, lambda sb: S.with_segment(sb, "a", id="intro"), renames={"a": "intro"})
    assert after == RENAMED.replace('id = "a"', 'id = "intro"')


def test_a_shot_added_and_renamed_since_the_last_save_is_added(tmp_path: Path) -> None:
    def add(sb: S.Storyboard) -> S.Storyboard:
        return replace(sb, segments=(*sb.segments, S.Segment(id="storm", prompt="y")))
    after = _save(tmp_path, RENAMED, add, renames={"shot-2": "storm"})  # shot-2 was never in the file
    assert after == RENAMED + '\n[[segment]]\nid = "storm"\nprompt = "y"\n'


def test_blank_lines_between_shots_survive_an_unchanged_save_and_a_move(tmp_path: Path) -> None:
    text = '[project]\nfps = 8\n\n\n[[segment]]\nid = "a"\nprompt = "x"\n\n\n\n[[segment]]\nid = "b"\nprompt = "y"\n\n\n'
    assert _save(tmp_path, text) == text
    moved = _save(tmp_path, text, lambda sb: replace(sb, segments=sb.segments[::-1]))
    assert moved == '[project]\nfps = 8\n\n\n[[segment]]\nid = "b"\nprompt = "y"\n\n[[segment]]\nid = "a"\nprompt = "x"\n'


def test_a_file_without_a_project_table_is_saved_without_one(tmp_path: Path) -> None:
    text = '# one shot\n[[segment]]\nid = "a"\nprompt = "x"\n'
    assert _save(tmp_path, text) == text
    assert _save(tmp_path, text, lambda sb: S.with_segment(sb, "a", prompt="y")) == text.replace('"x"', '"y"')


def test_shot_keys_of_a_new_shot_are_written_as_inline_tables() -> None:
    shot = S.Segment(id="a", prompt="x", frames=9, keyframes=(Keyframe(0, "a.png"), Keyframe(-1, "b.png", 0.5)),
                     retake=(2, 5), loras=(LoraRef("s.safetensors", 0.5), LoraRef("x.safetensors", 1.0, "o/n")),
                     audio=AudioTrack("song.wav", 1.5))
    sb = S.Storyboard(Path("s.toml"), S.Project(fps=8), (shot,))
    text = S.render_toml(sb, "")
    assert S.parse(text, "s.toml") == sb
    assert "[segment." not in text  # inline tables on the shot's lines, no [[segment.keyframes]] tables


def test_a_crlf_file_keeps_crlf_after_a_new_key_a_new_shot_and_a_write_back(tmp_path: Path) -> None:
    """A storyboard a Windows editor wrote came back with mixed endings: tomlkit ends the lines it
    adds with LF (a new shot, a new key, the enhancer's write-back)."""
    from pipeline.project.writeback import set_enhanced_prompt

    path = tmp_path / "s.toml"
    path.write_bytes(SPELLED.replace("\n", "\r\n").encode())
    sb = S.load(path)
    shot = replace(sb.segments[0], id="b", prompt="the lamp goes out", seed=9)
    S.save(replace(sb, segments=(replace(sb.segments[0], seed=3), shot)), path)
    assert set_enhanced_prompt(path, "b", "an enhanced prompt") == ""
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") > SPELLED.count("\n")  # only CRLF, and lines were added
    saved = S.load(path)
    assert [(s.id, s.seed) for s in saved.segments] == [("a", 3), ("b", 9)]
    assert saved.segment("b").enhanced_prompt == "an enhanced prompt"


def test_an_lf_file_stays_lf() -> None:
    text = S.render_toml(replace(S.parse(SPELLED), project=replace(S.parse(SPELLED).project, seed=4)), SPELLED)
    assert "\r" not in text and "seed = 4\n" in text
