"""Issue 19 item 4: the renderer's enhanced-prompt write-back, through the runner's own method."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.project.storyboard import load, parse, save, with_segment
from pipeline.wire import protocol

pytestmark = pytest.mark.timeout(60)

STORY = """\
# my film — a comment that must survive
[project]
title = "write-back"
fps = 8

[[segment]]
id = "s0"
prompt = "a lighthouse"   # inline comment

[[segment]]
id = "s1"
prompt = "the beam sweeps"
"""


def _write_back(path: Path, segment: str, text: str) -> list[protocol.Event]:
    """What a render does when the enhancer returns ``text`` (Renderer._write_enhanced itself)."""
    from pipeline.render.runner import Renderer

    events: list[protocol.Event] = []
    Renderer._write_enhanced(SimpleNamespace(sb=load(path), emit=events.append), segment, text)
    return events


def test_a_symlinked_storyboard_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real" / "story.toml"
    real.parent.mkdir()
    real.write_text(STORY)
    link = tmp_path / "story.toml"
    link.symlink_to(real)
    _write_back(link, "s0", "a tall lighthouse at dusk")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load(real).segment("s0").enhanced_prompt == "a tall lighthouse at dusk"
    assert "# inline comment" in real.read_text() and real.read_text().startswith("# my film")


def test_a_symlinked_storyboard_has_one_project_for_the_cli_and_the_editor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The link lives elsewhere under another name: the render, the worker and the editor all
    use the real file's folder (one cache, one journal, one ``renders/``), not two."""
    from sulphur_tui.document import Document

    real = tmp_path / "films" / "story.toml"
    real.parent.mkdir()
    real.write_text(STORY)
    elsewhere = tmp_path / "desk"
    elsewhere.mkdir()
    link = elsewhere / "today.toml"
    link.symlink_to(real)
    monkeypatch.chdir(elsewhere)  # as typed at a prompt: a relative name of the link
    sb = load("today.toml")
    assert sb.path == Path("today.toml")  # as typed: what messages name
    assert sb.real_path == real == Document(link).path and sb.folder == Document(link).path.parent
    assert sb.renders.root == real.parent / "renders" / "story"
    assert sb.state_dir() == real.parent / ".sulphur"
    assert sb.resolve("still.png") == real.parent / "still.png"
    with pytest.raises(Exception, match=r"^today\.toml:"):  # messages name the path as given
        link.unlink()
        link.symlink_to(tmp_path / "missing.toml")
        load("today.toml")


def test_a_read_only_storyboard_is_never_rewritten_and_the_render_goes_on(tmp_path: Path) -> None:
    story = tmp_path / "story.toml"
    story.write_text(STORY)
    os.chmod(story, 0o444)
    before = story.read_bytes()
    events = _write_back(story, "s0", "enhanced")  # must not raise
    assert story.read_bytes() == before and stat.S_IMODE(story.stat().st_mode) == 0o444
    warnings = [e for e in events if isinstance(e, protocol.Log) and e.level == "warning"]
    assert len(warnings) == 1 and "not saved" in warnings[0].message and "cache" in warnings[0].message
    assert any(isinstance(e, protocol.PromptEnhanced) for e in events)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 folder anyway")
def test_a_storyboard_in_a_read_only_folder_never_aborts_the_render(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "story.toml").write_text(STORY)
    os.chmod(folder, 0o555)
    try:
        events = _write_back(folder / "story.toml", "s0", "enhanced")
    finally:
        os.chmod(folder, 0o755)
    assert any(isinstance(e, protocol.Log) and e.level == "warning" for e in events)


def test_an_edit_saved_meanwhile_is_not_reverted(tmp_path: Path) -> None:
    """The editor saves s1 while the renderer writes s0's enhanced prompt: no write-back may
    put back an older s1 (3 of 3 did: the write merged a model loaded before the edit)."""
    from pipeline.project.writeback import set_enhanced_prompt

    story = tmp_path / "story.toml"
    story.write_text(STORY)
    stop = threading.Event()
    saved = [-1]  # the last edit the editor finished saving

    def editor() -> None:
        i = 0
        while not stop.is_set():
            save(with_segment(load(story), "s1", prompt=f"edit {i}"))
            saved[0] = i
            i += 1

    thread = threading.Thread(target=editor)
    thread.start()
    try:
        for i in range(30):
            floor = saved[0]
            assert set_enhanced_prompt(story, "s0", f"enhanced {i}") == ""
            prompt = load(story).segment("s1").prompt
            n = int(prompt.split()[-1]) if prompt.startswith("edit") else -1
            assert n >= floor, f"write-back {i} reverted the editor's edit {floor} to {prompt!r}"
    finally:
        stop.set()
        thread.join()


def test_two_writers_through_the_owner_lose_nothing(tmp_path: Path) -> None:
    from pipeline.project.writeback import set_segment_fields

    story = tmp_path / "story.toml"
    story.write_text(STORY)

    def writer(segment: str, key: str) -> None:
        for i in range(40):
            assert set_segment_fields(story, segment, **{key: f"{segment} {i}"}) == ""

    threads = [threading.Thread(target=writer, args=("s0", "enhanced_prompt")),
               threading.Thread(target=writer, args=("s1", "prompt"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sb = load(story)
    assert (sb.segment("s0").enhanced_prompt, sb.segment("s1").prompt) == ("s0 39", "s1 39")


def test_an_enhance_lock_is_respected(tmp_path: Path) -> None:
    story = tmp_path / "story.toml"
    story.write_text(STORY.replace('id = "s0"', 'id = "s0"\nenhance_lock = true\nenhanced_prompt = "mine"'))
    before = story.read_bytes()
    assert _write_back(story, "s0", "theirs") == []
    assert story.read_bytes() == before


def test_a_write_back_at_a_thousand_segments_is_fast(tmp_path: Path) -> None:
    """Item 10: each write took 4.8 s at 1000 segments (quadratic parsing)."""
    from pipeline.project.writeback import set_enhanced_prompt

    story = tmp_path / "story.toml"
    story.write_text("[project]\nfps = 8\n" + "".join(f'\n[[segment]]\nid = "s{i}"\nprompt = "shot {i}"\n'
                                                      for i in range(1000)))
    t = time.perf_counter()
    assert set_enhanced_prompt(story, "s500", "enhanced") == ""
    assert time.perf_counter() - t < 2.0
    t = time.perf_counter()
    parse(story.read_text() + "".join(f'\n[[segment]]\nid = "t{i}"\nprompt = "more"\n' for i in range(2000)))
    assert time.perf_counter() - t < 1.5, "3000 segments must parse well under a second or two"
