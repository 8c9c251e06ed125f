"""Flags that contradict each other are refused before anything runs."""

from __future__ import annotations

from pathlib import Path

from tests.hostile.conftest import sulphur

STORY = ('[project]\ntitle = "t"\nseed = 1\n\n[[segment]]\nid = "a"\nprompt = "x"\nframes = 9\n\n'
         '[[segment]]\nid = "b"\nprompt = "y"\nframes = 9\n')


def test_segment_and_from_together_are_refused_headless_as_attached(tmp_path: Path) -> None:
    """``render --segment a --from b`` rendered shot a alone without a word (``--attach`` refused it)."""
    (tmp_path / "story.toml").write_text(STORY)
    for extra in ((), ("--attach",)):
        result = sulphur("render", "story.toml", "--segment", "a", "--from", "b", *extra, cwd=tmp_path, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1].endswith("argument --from: not allowed with argument --segment")
        assert not (tmp_path / "renders").exists()


def test_counts_below_their_floor_are_refused() -> None:
    """``worker --idle-timeout -5`` started a worker that exited at once; ``flicker --worst -1``
    was taken without a word."""
    for args, says in ((("worker", "--idle-timeout", "-5"), "argument --idle-timeout: -5: must be 0.1 or more"),
                       (("flicker", "clip.mp4", "--worst", "-1"), "argument --worst: -1: must be 0 or more")):
        result = sulphur(*args, cwd=Path.cwd(), timeout=60)
        assert result.returncode == 2 and result.stderr.strip().endswith(says), result.stderr


def test_a_file_where_a_render_keeps_its_folders_is_named_before_any_stage(tmp_path: Path) -> None:
    """A file called ``.sulphur`` failed the draft with ".sulphur: File exists"; one called
    ``renders/story`` failed with "renders/story: File exists"."""
    from tests.hostile.conftest import assert_one_line

    (tmp_path / "story.toml").write_text(STORY)
    for blocker, holds in ((".sulphur", "its cache and journal"), ("renders/story", "this storyboard's renders")):
        path = tmp_path / blocker
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
        for args in (("render", "story.toml"), ("takes", "story.toml", "a", "--seeds", "2")):  # takes: Ray's path
            result = sulphur(*args, cwd=tmp_path, timeout=120)
            line = assert_one_line(result, f"{blocker}: is a file, not a folder (Sulphur keeps {holds} there")
            assert "started" not in result.stderr and path.read_text() == "mine", line
        path.unlink()
