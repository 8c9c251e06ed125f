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
