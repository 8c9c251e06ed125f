"""The keyframes and retake keys of a [[segment]]: parsed, checked, written back, files checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline.project import storyboard as S
from pipeline.project.keyframes import Keyframe, retake_seed
from pipeline.project.references import check_references

BOARD = """\
[project]
fps = 8

[[segment]]
id = "a"
prompt = "a red fox in the snow"
frames = 17
# the shot lands on the next one's planned first frame
keyframes = [{ frame = 0, image = "start.png" }, { frame = -1, image = "end.png", strength = 0.5 }]
retake = [5, 8]
"""


def test_the_keys_parse_into_typed_values() -> None:
    seg = S.parse(BOARD, "b.toml").segments[0]
    assert seg.keyframes == (Keyframe(0, "start.png"), Keyframe(-1, "end.png", 0.5))
    assert [k.index(17) for k in seg.keyframes] == [0, 16]
    assert seg.retake == (5, 8)


@pytest.mark.parametrize(("line", "message"), [
    ('keyframes = [{ frame = 17, image = "a.png" }]', "keyframes: keyframe 1: frame 17 is outside the shot's 17 frames"),
    ('keyframes = [{ frame = -18, image = "a.png" }]', "keyframes: keyframe 1: frame -18 is outside"),
    ('keyframes = [{ frame = 2 }]', "keyframes: keyframe 1: image must be a file path"),
    ('keyframes = [{ frame = 2, image = "a.png", strength = 1.5 }]', "strength must be a number between 0 and 1"),
    ('keyframes = [{ frame = 2, image = "a.png", strength = nan }]', "strength must be a number between 0 and 1"),
    ('keyframes = [{ frame = 2.0, image = "a.png" }]', "frame must be an integer"),
    ('keyframes = [{ frame = 2, image = "a.png", at = 3 }]', "unknown key 'at'"),
    ('keyframes = [{ frame = 16, image = "a.png" }, { frame = -1, image = "b.png" }]',
     "keyframe 2: frame 16 already has keyframe 1"),
    ('keyframes = ["a.png"]', "keyframe 1: expected { frame = N"),
    ('keyframes = { frame = 1, image = "a.png" }', "expected an array of"),
    ("retake = [8, 5]", "retake: [8, 5] must satisfy 0 <= first <= last <= 16"),
    ("retake = [5, 17]", "retake: [5, 17] must satisfy"),
    ("retake = [5]", "retake: expected [first, last]"),
    ("retake = [0, 16]", "retake: a retake of every frame is a new shot"),
])
def test_bad_values_are_one_line_naming_file_line_column_and_key(line: str, message: str) -> None:
    key = "retake" if line.startswith("retake") else "keyframes"
    text = BOARD.replace("retake = [5, 8]" if key == "retake" else BOARD.splitlines()[8], line)
    with pytest.raises(S.StoryboardError) as err:
        S.parse(text, "b.toml")
    where = text.splitlines().index(line) + 1
    assert str(err.value).startswith(f"b.toml:{where}:1: segment[0].{key}: "), str(err.value)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_frame_range_follows_seconds_and_fps() -> None:
    text = BOARD.replace("frames = 17", "seconds = 1.0").replace("retake = [5, 8]", "retake = [2, 7]")
    assert S.parse(text, "b.toml").segments[0].retake == (2, 7)  # 1 s at 8 fps: frames 0..7
    with pytest.raises(S.StoryboardError, match="retake: \\[2, 8\\] must satisfy"):
        S.parse(text.replace("retake = [2, 7]", "retake = [2, 8]"), "b.toml")


def test_saving_keeps_the_keys_and_their_comment_and_undo_removes_them(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(BOARD)
    sb = S.load(path)
    assert S.save(sb) == BOARD  # unchanged: byte-identical
    S.save(S.with_segment(sb, "a", retake=None, keyframes=()))
    text = path.read_text()
    assert "retake" not in text and "keyframes =" not in text and "# the shot lands" in text
    S.save(S.with_segment(S.load(path), "a", keyframes=(Keyframe(-1, "end.png", 0.25),), retake=(1, 2)))
    seg = S.load(path).segments[0]
    assert seg.keyframes == (Keyframe(-1, "end.png", 0.25),) and seg.retake == (1, 2)
    assert "[[segment.keyframes]]" not in path.read_text()  # inline tables, as a person writes them


def test_keyframe_stills_are_checked_like_anchors(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(BOARD)
    Image.new("RGB", (64, 64)).save(tmp_path / "start.png")
    sb = S.load(path)
    with pytest.raises(S.StoryboardError) as err:
        check_references(sb)
    assert str(err.value) == f"{path}:9:1: segment[0].keyframes: {tmp_path / 'end.png'}: file not found"
    (tmp_path / "end.png").write_text("not a picture")
    with pytest.raises(S.StoryboardError, match="segment\\[0\\].keyframes: .*not a readable image"):
        check_references(sb)
    Image.new("RGB", (64, 64)).save(tmp_path / "end.png")
    check_references(sb)
    check_references(sb, set())  # a render that drafts no shot reads none of its stills


def test_a_retake_has_noise_of_its_own_per_span() -> None:
    seeds = {retake_seed(3, (5, 8)), retake_seed(3, (5, 9)), retake_seed(4, (5, 8)), 3}
    assert len(seeds) == 4 and retake_seed(3, (5, 8)) == retake_seed(3, (5, 8))
    assert all(0 <= s < 2**63 for s in seeds)


def test_the_example_storyboard_parses_and_its_stills_are_usable() -> None:
    sb = S.load(Path(__file__).resolve().parents[2] / "storyboards" / "creative.toml")
    check_references(sb)
    assert any(s.keyframes for s in sb.segments) and any(s.retake for s in sb.segments)


@pytest.mark.parametrize("preset", ["tiny-wan-ti2v", "tiny-ltxv", "tiny-svd", "tiny-cogvideox", "wan22-ti2v-5b"])
@pytest.mark.parametrize("key", ["keyframes", "retake"])
def test_other_families_refuse_the_keys_in_one_line(preset: str, key: str, tmp_path: Path) -> None:
    from pipeline.render.errors import RenderError
    from pipeline.render.job import RenderJob

    text = BOARD.replace("frames = 17", f'frames = 17\npreset = "{preset}"')
    text = text.replace("retake = [5, 8]\n", "") if key == "keyframes" else text.replace(BOARD.splitlines()[8], "")
    path = tmp_path / "b.toml"
    path.write_text(text)
    with pytest.raises(RenderError) as err:
        RenderJob.resolve(S.load(path))
    line = text.splitlines().index(next(t for t in text.splitlines() if t.startswith(key))) + 1
    assert str(err.value).startswith(f"{path}:{line}:1: segment[0].{key}: preset {preset} (")
    assert "cannot honour" in str(err.value) and "\n" not in str(err.value)
    path.write_text(text.replace(f'preset = "{preset}"', 'preset = "tiny"'))
    RenderJob.resolve(S.load(path))  # the same shot on LTX-2 is accepted


def test_the_editor_line_round_trips_and_refuses_what_the_file_would() -> None:
    from pipeline.project.keyframes import format_keyframes, keyframes_from_text, retake_from_text

    kfs = (Keyframe(0, "stills/a.png"), Keyframe(-1, "b.png", 0.8))
    assert format_keyframes(kfs) == "0=stills/a.png, -1=b.png@0.8"
    assert keyframes_from_text(format_keyframes(kfs), 17) == kfs
    assert keyframes_from_text("", 17) == ()
    assert retake_from_text("5-8", 17) == retake_from_text(" 5, 8 ", 17) == (5, 8)
    assert retake_from_text("", 17) is None
    for bad, says in (("3", "write frame=image"), ("x=a.png", "'x' is not an integer"),
                      ("1=a.png@hi", "'hi' is not a number"), ("17=a.png", "outside the shot's 17 frames")):
        with pytest.raises(ValueError, match=says):
            keyframes_from_text(bad, 17)
    for bad, says in (("8-5", "must satisfy"), ("5", "two frame numbers"), ("-2-3", "not an integer")):
        with pytest.raises(ValueError, match=says):
            retake_from_text(bad, 17)


def test_a_retake_is_conditioned_on_whole_latent_frames_around_its_span() -> None:
    import numpy as np

    from pipeline.stages.conditions import latent_index, retake_conditions

    assert [latent_index(f, 8) for f in (0, 1, 8, 9, 16)] == [0, 1, 1, 2, 2]
    frames = np.arange(17, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)

    def placed(span: tuple[int, int]) -> list[tuple[int, int, list[int]]]:
        return [(c.index, c.frame, [int(f[0, 0, 0]) for f in c.frames])
                for c in retake_conditions(frames, span, 8)]

    # frames 0-4 before the span on latent 0; after it, latent 2 (frames 9-16) is the first wholly past 8
    assert placed((5, 8)) == [(0, 0, [0, 1, 2, 3, 4]), (2, 9, list(range(9, 17)))]
    assert placed((5, 9)) == [(0, 0, [0, 1, 2, 3, 4])]  # frames 10-16 share latent 2 with 9: left to the model
    assert placed((0, 3)) == [(2, 9, list(range(9, 17)))]
