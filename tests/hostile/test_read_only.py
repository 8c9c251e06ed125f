"""A project on a read-only file system, through the real ``sulphur`` command.

``sulphur render`` and ``render --attach`` in a read-only folder were tracebacks
(``OSError: [Errno 30]`` from making ``renders/`` or ``.sulphur/``) and ``sulphur extend
--out`` there printed ``error: 30``. Each must be one line naming the folder, in words.
The folder is a real read-only tmpfs (root only: a chmod does not stop root).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.functional.conftest import tmpfs
from tests.hostile.conftest import QUICK, assert_one_line, sulphur, tiny_clip

pytestmark = pytest.mark.timeout(90)


@pytest.fixture()
def read_only(tmp_path: Path):  # noqa: ANN201
    """A folder holding story.toml and clip.mp4, then remounted read-only."""
    with tmpfs(tmp_path / "ro", "4m") as mnt:
        (mnt / "story.toml").write_text(QUICK.replace('"no-such-preset"', '"tiny"'))
        tiny_clip(mnt / "clip.mp4")
        takes = mnt / "renders" / "story" / "takes" / "one" / "takes.json"
        takes.parent.mkdir(parents=True)
        takes.write_text('{"takes": {"5": {"path": "seed-5.mp4", "prompt": "a red lighthouse"}}}')
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt




def _no_errno(message: str) -> None:
    assert "Errno" not in message and not any(w.strip(":").isdigit() for w in message.split()), message


def test_render_in_a_read_only_folder_is_one_line(read_only: Path) -> None:
    before = (read_only / "story.toml").read_bytes()
    result = sulphur("render", str(read_only / "story.toml"), cwd=read_only, timeout=60)
    message = assert_one_line(result, f"{read_only / 'renders'}/")  # renders/story/.lock: the first write
    assert message.endswith(": Read-only file system"), message
    _no_errno(message)
    assert (read_only / "story.toml").read_bytes() == before


def test_render_json_reports_it_as_an_error_event(read_only: Path) -> None:
    result = sulphur("render", "story.toml", "--json", cwd=read_only, timeout=60)
    assert assert_one_line(result, "renders/").endswith(": Read-only file system")
    assert '"kind":"os_error"' in result.stdout and "Read-only" in result.stdout


def test_attach_in_a_read_only_folder_is_one_line(read_only: Path) -> None:
    result = sulphur("render", "story.toml", "--attach", cwd=read_only, timeout=60)
    message = assert_one_line(result, f"{read_only / '.sulphur'}: Read-only file system")
    _no_errno(message)


def test_extend_into_a_read_only_folder_says_why(read_only: Path) -> None:
    result = sulphur("extend", "clip.mp4", "--prompt", "and then", "--model", "tiny", "--out",
                     str(read_only / "more.mp4"), cwd=read_only, timeout=60)
    message = assert_one_line(result, "Read-only file system")  # was "error: 30"
    assert str(read_only) in message
    _no_errno(message)


def test_status_of_a_file_is_refused_in_words(tmp_path: Path) -> None:
    (tmp_path / "story.toml").write_text(QUICK)
    result = sulphur("status", "--project", str(tmp_path / "story.toml"), cwd=tmp_path, timeout=30)
    message = assert_one_line(result, "story.toml")
    assert "Not a directory" in message
    _no_errno(message)


def test_demo_in_a_read_only_folder_is_one_line(read_only: Path) -> None:
    """The README's first command, run where it cannot write: was an OSError traceback."""
    result = sulphur("demo", cwd=read_only, timeout=60)
    message = assert_one_line(result, f"{read_only / 'sulphur-demo'}: Read-only file system")
    assert "--out" in message
    _no_errno(message)


def test_demo_out_a_file_is_refused_in_words(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = sulphur("demo", "--out", "notes.txt", cwd=tmp_path, timeout=60)
    assert "not a folder" in assert_one_line(result, str(tmp_path / "notes.txt"))
    assert (tmp_path / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_command_that_does_not_word_its_os_error_is_still_one_line(read_only: Path) -> None:
    """`sulphur takes --pick` into a read-only storyboard was a PermissionError traceback: the
    CLI's last net words any OSError a command lets through."""
    before = (read_only / "story.toml").read_bytes()
    result = sulphur("takes", "story.toml", "one", "--pick", "5", cwd=read_only, timeout=60)
    message = assert_one_line(result, f"sulphur takes: {read_only / 'story.toml'}: the file is read-only")
    _no_errno(message)
    assert (read_only / "story.toml").read_bytes() == before
