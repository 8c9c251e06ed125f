"""Storyboard loading, validation errors with positions, and comment-preserving saves."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.project import storyboard as S

EXAMPLE = Path(__file__).resolve().parents[2] / "storyboards" / "example.toml"

GOOD = """\
# film comment
[project]
title = "T"   # trailing comment
fps = 24

# shot one
[[segment]]
id = "a"
prompt = "a cat"
enhance_lock = false

[[segment]]
id = "b"
prompt = "a dog"  # woof
frames = 17
anchor = { image = "still.png" }
"""


def test_example_storyboard_loads() -> None:
    sb = S.load(EXAMPLE)
    assert [s.id for s in sb.segments] == ["dawn", "beam", "storm"]
    assert sb.project.output_size == (1920, 1080)
    assert sb.segments[1].frame_count(sb.project.fps) == round(0.7 * 24)


def test_unchanged_save_is_byte_identical(tmp_path: Path) -> None:
    for text in (GOOD, EXAMPLE.read_text()):
        path = tmp_path / "s.toml"
        path.write_text(text)
        S.save(S.load(path))
        assert path.read_text() == text


def test_edit_changes_only_the_edited_line(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    sb = S.load(path)
    S.save(S.with_segment(sb, "b", prompt="a wolf"))
    before, after = GOOD.splitlines(), path.read_text().splitlines()
    changed = [(x, y) for x, y in zip(before, after, strict=True) if x != y]
    assert changed == [('prompt = "a dog"  # woof', 'prompt = "a wolf"  # woof')]


def test_reorder_add_delete_keep_comments(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    sb = S.load(path)
    new = S.Segment(id="c", prompt="a bird", seconds=1.5)
    S.save(replace(sb, segments=(sb.segments[1], new)))
    text = path.read_text()
    assert "# film comment" in text and "# trailing comment" in text and "# woof" in text
    assert "\n\n\n" not in text  # moved and new tables are separated by one blank line
    again = S.load(path)
    assert [s.id for s in again.segments] == ["b", "c"]
    assert again.segments[1].seconds == 1.5
    assert again.segments[0].anchor == S.Anchor("image", "still.png")


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ('[project]\nfps = 24\n[[segment]]\nid = "a"\nprompt = "p"\nframes = 9\n  bogus = 1\n', 7, 3,
         "segment[0].bogus: unknown key"),
        ('[project]\nfps = "fast"\n', 2, 1, "project.fps: expected an integer, got a string"),
        ('[project]\ntitle = "x\n', 2, 11, "TOML syntax error"),
        ('[[segment]]\nid = "a"\nprompt = "p"\n[[segment]]\nid = "a"\nprompt = "q"\n', 5, 1, "duplicate id"),
        ('[[segment]]\nid = "a"\nprompt = "p"\nframes = true\n', 4, 1, "expected an integer, got a boolean"),
        ('[[segment]]\nid = "a"\nprompt = "p"\nanchor = "clip.txt"\n', 4, 1, "neither"),
        ('[project]\noutput_size = [1921, 1080]\n[[segment]]\nid = "a"\nprompt = "p"\n', 2, 1, "even"),
        ('[[segment]]\nid = "a"\n', 1, 1, "missing required key 'prompt'"),
        ('[[segment]]\nid = "a"\nprompt = "p"\nkeep = 0\n', 4, 1, "segment[0].keep: must be between 1 and 2000"),
    ],
)
def test_errors_name_line_column_and_key(tmp_path: Path, text: str, line: int, col: int, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(S.StoryboardError) as info:
        S.load(path)
    err = info.value
    assert (err.line, err.column) == (line, col)
    assert fragment in str(err)
    assert str(err).startswith(f"{path}:{line}:{col}: ")
    assert "\n" not in str(err)
    assert path.read_text() == text  # never written back


def test_save_refuses_to_merge_into_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    sb = S.load(path)
    broken = GOOD.replace('fps = 24', 'fps = ')
    path.write_text(broken)
    with pytest.raises(S.StoryboardError):
        S.save(S.with_segment(sb, "a", prompt="changed"))
    assert path.read_text() == broken
