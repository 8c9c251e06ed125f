"""``sulphur extend``, ``takes`` and ``render --attach`` refuse bad flags and paths up front.

Each refusal: exit 2, one line naming the flag (or the file), no traceback, nothing written,
nothing rendered. Before, ``extend --out FOLDER`` rendered the whole continuation and then
failed naming a temp file, ``--out /no/such/dir/x.mp4`` made the folders, ``--prompt=`` named
a storyboard the user never made and left it behind, ``takes --seed -5`` rendered a take
``--pick`` then refused, and ``render --attach`` called a FIFO "file not found".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import checkout_env
from tests.hostile.conftest import QUICK, ROOT, assert_one_line, sulphur, tiny_clip

pytestmark = pytest.mark.timeout(120)

MAX_SEED = 2**63 - 1




def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (a folder as ``None``, a FIFO as ``b"fifo"``) and its bytes."""
    out: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = None if p.is_dir() else b"fifo" if p.is_fifo() else p.read_bytes()
    return out


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    tiny_clip(tmp_path / "clip.mp4")
    (tmp_path / "sub").mkdir()
    (tmp_path / "afile").write_text("a file, not a folder\n")
    os.mkfifo(tmp_path / "pipe.mp4")
    return tmp_path


@pytest.mark.parametrize(("out", "says"), [
    ("sub", "--out sub: is a folder; give a file name such as sub/clip-extended.mp4"),
    (".", "--out .: not a file name; give one such as clip-extended.mp4"),
    ("no/such/dir/o.mp4", "--out no/such/dir/o.mp4: folder no/such/dir does not exist"),
    ("afile/o.mp4", "--out afile/o.mp4: afile is not a folder"),
    ("pipe.mp4", "--out pipe.mp4: is a FIFO (named pipe), not a regular file"),
], ids=["folder", "dot", "missing-folder", "file-as-folder", "fifo"])
def test_extend_refuses_an_unwritable_out_before_rendering(out: str, says: str, project: Path) -> None:
    before = _tree(project)
    result = sulphur("extend", "clip.mp4", "--prompt", "and then", "--model", "tiny", "--out", out,
                     cwd=project, timeout=90)
    assert result.returncode == 2
    assert assert_one_line(result, "--out") == f"sulphur extend: {says}"
    assert _tree(project) == before  # no folders made, no .extend.toml, no renders/ or cache


@pytest.mark.parametrize("prompt", ["", "   "], ids=["empty", "blank"])
def test_extend_refuses_an_empty_prompt_naming_the_flag(prompt: str, project: Path) -> None:
    before = _tree(project)
    result = sulphur("extend", "clip.mp4", f"--prompt={prompt}", "--model", "tiny", "--out", "e1.mp4",
                     cwd=project, timeout=60)
    assert result.returncode == 2
    assert assert_one_line(result, "--prompt") == "sulphur extend: --prompt: must not be empty"
    assert _tree(project) == before


@pytest.mark.parametrize("earlier", [None, b"# an earlier extension's storyboard\n"], ids=["new", "earlier"])
def test_a_refused_extend_render_leaves_the_storyboard_as_it_was(earlier: bytes | None, tmp_path: Path) -> None:
    """The default preset's weights are not on disk: the render is refused after the storyboard
    was written; it used to stay behind (or an earlier one stayed overwritten)."""
    tiny_clip(tmp_path / "clip.mp4")
    story = tmp_path / "e1.extend.toml"
    if earlier is not None:
        story.write_bytes(earlier)
    env = checkout_env({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SULPHUR_HOME": str(tmp_path / "home")})
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "extend", "clip.mp4", "--prompt", "and then",
                             "--out", "e1.mp4"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert result.returncode == 1 and "is missing" in result.stderr, result.stderr[-2000:]
    assert (story.read_bytes() if story.exists() else None) == earlier
    assert not (tmp_path / "e1.mp4").exists()


@pytest.mark.parametrize("flags", [("--seed", "-5"), ("--seed", str(MAX_SEED + 1)), ("--seed", "3", "--seed", "-1"),
                                   ("--pick", "-5")], ids=["negative", "too-big", "second", "pick"])
def test_takes_refuses_a_seed_out_of_range_before_rendering(flags: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "story.toml").write_text(QUICK)
    before = _tree(tmp_path)
    result = sulphur("takes", "story.toml", "one", *flags, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    bad = flags[-2:]
    assert assert_one_line(result, bad[0]).endswith(f"{bad[0]} {bad[1]}: must be between 0 and {MAX_SEED}")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("count", ["0", "17", "100000"])
def test_takes_refuses_a_take_count_outside_one_to_sixteen(count: str, tmp_path: Path) -> None:
    (tmp_path / "story.toml").write_text(QUICK)
    before = _tree(tmp_path)
    result = sulphur("takes", "story.toml", "one", "--seeds", count, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert assert_one_line(result, "--seeds").endswith(f"--seeds {count}: must be between 1 and 16")
    assert _tree(tmp_path) == before


def test_takes_help_and_readme_give_the_take_limit() -> None:
    result = sulphur("takes", "--help", cwd=ROOT, timeout=30)
    assert "at most 16" in " ".join(result.stdout.split())
    assert "`--seeds` is 1 to 16" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero", "missing"])
def test_attach_words_a_storyboard_that_is_not_a_file_as_render_does(kind: str, tmp_path: Path) -> None:
    (tmp_path / "h").mkdir()
    story = tmp_path / "h" / "story.toml"
    if kind == "fifo":
        os.mkfifo(story)
    elif kind == "directory":
        story.mkdir()
    name = "/dev/zero" if kind == "dev-zero" else "h/story.toml"
    before = _tree(tmp_path)
    headless = sulphur("render", name, cwd=tmp_path, timeout=30)
    attached = sulphur("render", name, "--attach", cwd=tmp_path, timeout=30)
    assert attached.returncode == headless.returncode == 2
    assert assert_one_line(attached, name) == assert_one_line(headless, name)
    if kind != "missing":
        assert "not a regular file" in attached.stderr
    assert _tree(tmp_path) == before  # no worker started, no .sulphur/ made
