"""The editor's merge with a file changed on disk, through the Document two editors share."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.project.storyboard import StoryboardError, load
from sulphur_tui.document import Document

EXAMPLE = Path(__file__).resolve().parents[2] / "storyboards" / "example.toml"


@pytest.fixture
def story(tmp_path: Path) -> Path:
    path = tmp_path / "story.toml"
    path.write_text(EXAMPLE.read_text())
    return path


def test_two_editors_adding_a_shot_keep_both_shots(story: Path) -> None:
    me, other = Document(story), Document(story)
    mine = me.add_segment(None)
    me.edit_segment(mine, prompt="my new shot")
    theirs = other.add_segment(None)
    other.edit_segment(theirs, prompt="their new shot")
    other.save()
    assert mine == theirs and me.disk_changed()
    merge = me.merge_disk()
    me.save()
    sb = load(story)
    assert [(s.id, s.prompt) for s in sb.segments[-2:]] == [("shot-5", "my new shot"), ("shot-4", "their new shot")]
    assert merge.taken[0] == "shot-4 (theirs; yours is shot-5 now)"


def test_renaming_into_an_id_the_other_editor_added(story: Path) -> None:
    me, other = Document(story), Document(story)
    dawn = me.storyboard.segment("dawn")
    me.rename_segment("dawn", "gulls")
    new = other.add_segment(None)
    other.rename_segment(new, "gulls")
    other.edit_segment("gulls", prompt="their gulls")
    other.save()
    me.merge_disk()
    me.save()
    sb = load(story)
    assert sb.segment("gulls-2").prompt == dawn.prompt and sb.segment("gulls").prompt == "their gulls"
    assert "dawn" not in [s.id for s in sb.segments]


def test_a_merge_after_keeping_mine_over_a_broken_file_still_takes_the_disks_edits(story: Path) -> None:
    text = story.read_text()
    doc = Document(story)
    doc.edit_segment("beam", prompt="my beam")
    story.write_text(text + "\n[[[broken")
    doc.keep_mine()
    story.write_text(text.replace("frames = 17", "frames = 33", 1))  # fixed, with an edit of its own
    merge = doc.merge_disk()
    assert doc.storyboard.segment("beam").prompt == "my beam"
    assert doc.storyboard.segment("dawn").frames == 33 and merge.taken == ("dawn.frames",)


def test_a_merge_that_would_not_load_is_refused_and_changes_nothing(story: Path) -> None:
    """Each side loads alone: a 60 s shot at 24 fps (1440 frames), and 240 fps with a 17-frame shot."""
    doc = Document(story)
    doc.edit_segment("dawn", frames=None, seconds=60.0)
    before = doc.storyboard
    story.write_text(story.read_text().replace("fps = 24", "fps = 240", 1))
    with pytest.raises(StoryboardError, match="frames; a shot has at most"):
        doc.merge_disk()
    assert doc.storyboard == before and doc.disk_changed()  # still mine, still to be answered


def test_a_second_merge_still_knows_the_shot_given_a_fresh_id(story: Path) -> None:
    """Both add ``shot-4``; ours becomes ``shot-5``. Their next edit of their ``shot-4`` lands on
    their shot, also after an undo and redo of ours, and a save keeps their table's comment."""
    me, other = Document(story), Document(story)
    me.edit_segment(me.add_segment(None), prompt="mine new")
    other.edit_segment(other.add_segment(None), prompt="their new")
    other.save()
    story.write_text(story.read_text().replace('prompt = "their new"', 'prompt = "their new"  # theirs'))
    me.merge_disk()
    me.rename_segment("shot-5", "harbour")
    me.undo()  # the rename, then the merge, and both back
    me.undo()
    me.redo()
    me.redo()
    other = Document(story)
    other.edit_segment("shot-4", seed=99)
    other.save()
    merge = me.merge_disk()
    assert merge.taken == ("shot-4.seed",)
    me.save()
    sb = load(story)
    assert [(s.id, s.prompt, s.seed) for s in sb.segments[3:]] == [("harbour", "mine new", None),
                                                                   ("shot-4", "their new", 99)]
    assert 'prompt = "their new"  # theirs' in story.read_text()


def test_deleting_the_files_shot_after_a_merge_reports_its_later_edit(story: Path) -> None:
    """Both add ``shot-4``; ours becomes ``shot-5``. We then delete the file's ``shot-4`` and
    the other program edits it: a conflict, not an edit of our ``shot-5``."""
    me, other = Document(story), Document(story)
    me.edit_segment(me.add_segment(None), prompt="mine")
    other.edit_segment(other.add_segment(None), prompt="theirs")
    other.save()
    me.merge_disk()
    me.delete_segment("shot-4")
    other = Document(story)
    other.edit_segment("shot-4", frames=33)
    other.save()
    merge = me.merge_disk()
    assert merge.both_changed == ("shot-4 (deleted here, changed there)",) and merge.taken == ()
    assert me.storyboard.segment("shot-5").frames != 33


def test_undoing_a_merge_forgets_the_file_version_it_took_in(story: Path) -> None:
    """After the undo the file reads as changed again, and a later merge starts from the old
    base: the other program's shot is never taken for ours."""
    me, other = Document(story), Document(story)
    me.edit_segment(me.add_segment(None), prompt="mine")
    other.edit_segment(other.add_segment(None), prompt="theirs")
    other.save()
    me.merge_disk()
    assert not me.disk_changed()
    me.undo()
    assert me.disk_changed() and [s.prompt for s in me.storyboard.segments][-1] == "mine"
    other = Document(story)
    other.edit_segment("shot-4", frames=33)
    other.save()
    me.merge_disk()
    me.save()
    sb = load(story)
    assert [(s.id, s.prompt) for s in sb.segments[3:]] == [("shot-5", "mine"), ("shot-4", "theirs")]
    assert sb.segment("shot-4").frames == 33 != sb.segment("shot-5").frames
    me.undo()  # and a redo takes the merge in again
    me.redo()
    assert not me.disk_changed()
