"""The editor's "merge" answer to a file changed on disk: both sides' edits survive."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.project.merging import merge_storyboards
from pipeline.project.storyboard import Segment, Storyboard, load, with_segment

EXAMPLE = Path(__file__).resolve().parents[2] / "storyboards" / "example.toml"


def _base() -> Storyboard:
    return load(EXAMPLE)  # dawn, beam, storm


def _ids(sb: Storyboard) -> list[str]:
    return [s.id for s in sb.segments]


def test_edits_to_different_fields_and_shots_are_both_kept() -> None:
    base = _base()
    mine = with_segment(base, "dawn", prompt="mine")
    theirs = with_segment(with_segment(base, "storm", seed=7), "dawn", frames=33)
    theirs = replace(theirs, project=replace(theirs.project, title="their title"))
    m = merge_storyboards(base, mine, theirs)
    dawn = m.storyboard.segment("dawn")
    assert (dawn.prompt, dawn.frames) == ("mine", 33)
    assert m.storyboard.segment("storm").seed == 7
    assert m.storyboard.project.title == "their title"
    assert set(m.taken) == {"dawn.frames", "storm.seed", "project.title"} and m.both_changed == ()


def test_where_both_changed_one_field_the_editor_wins_and_it_is_reported() -> None:
    base = _base()
    m = merge_storyboards(base, with_segment(base, "beam", prompt="mine"), with_segment(base, "beam", prompt="theirs"))
    assert m.storyboard.segment("beam").prompt == "mine"
    assert m.both_changed == ("beam.prompt",) and m.taken == ()
    same = merge_storyboards(base, with_segment(base, "beam", prompt="x"), with_segment(base, "beam", prompt="x"))
    assert same.both_changed == () and same.storyboard.segment("beam").prompt == "x"


def test_a_shot_added_on_disk_lands_after_the_shot_it_follows_there() -> None:
    base = _base()
    new = replace(base.segment("beam"), id="gulls", prompt="gulls")
    theirs = replace(base, segments=(base.segments[0], base.segments[1], new, base.segments[2]))
    mine = replace(base, segments=(base.segments[2], base.segments[0], base.segments[1]))  # storm first
    m = merge_storyboards(base, mine, theirs)
    assert _ids(m.storyboard) == ["storm", "dawn", "beam", "gulls"] and "gulls" in m.taken


def test_deletions_on_either_side() -> None:
    base = _base()
    theirs = replace(base, segments=base.segments[:2])  # storm deleted on disk
    assert _ids(merge_storyboards(base, base, theirs).storyboard) == ["dawn", "beam"]
    edited = with_segment(base, "storm", prompt="I still want it")
    assert _ids(merge_storyboards(base, edited, theirs).storyboard) == ["dawn", "beam", "storm"]
    mine = replace(base, segments=base.segments[1:])  # dawn deleted here; the disk edited beam
    m = merge_storyboards(base, mine, with_segment(base, "beam", seed=3))
    assert _ids(m.storyboard) == ["beam", "storm"] and m.storyboard.segment("beam").seed == 3


def test_a_shot_renamed_in_the_editor_still_takes_the_disks_edit_of_it() -> None:
    base = _base()
    mine = replace(base, segments=tuple(replace(s, id="sunrise") if s.id == "dawn" else s for s in base.segments))
    m = merge_storyboards(base, mine, with_segment(base, "dawn", seed=11), {"dawn": "sunrise"})
    assert _ids(m.storyboard) == ["sunrise", "beam", "storm"]
    assert m.storyboard.segment("sunrise").seed == 11 and m.taken == ("sunrise.seed",)


def test_a_shot_added_on_both_sides_under_one_id_keeps_both() -> None:
    """Two editors adding a shot both call it ``shot-4``: the file's keeps the id (the file's ids
    go on naming the file's shots), ours takes a fresh one; neither is dropped."""
    base = _base()
    mine = replace(base, segments=base.segments + (Segment(id="shot-4", prompt="mine new"),))
    theirs = replace(base, segments=base.segments + (Segment(id="shot-4", prompt="their new"),))
    m = merge_storyboards(base, mine, theirs)
    assert [(s.id, s.prompt) for s in m.storyboard.segments[3:]] == [("shot-5", "mine new"), ("shot-4", "their new")]
    assert m.taken == ("shot-4 (theirs; yours is shot-5 now)", "shot-4") and m.links == ()
    same = merge_storyboards(base, mine, mine)  # the very same shot on both sides: once
    assert _ids(same.storyboard) == ["dawn", "beam", "storm", "shot-4"]


def test_renaming_a_shot_to_an_id_the_disk_just_added_keeps_both_shots() -> None:
    base = _base()
    mine = replace(base, segments=tuple(replace(s, id="gulls") if s.id == "dawn" else s for s in base.segments))
    theirs = replace(base, segments=base.segments + (Segment(id="gulls", prompt="their gulls", seed=99),))
    m = merge_storyboards(base, mine, theirs, {"dawn": "gulls"})
    assert m.storyboard.segment("gulls-2") == replace(base.segment("dawn"), id="gulls-2")
    assert m.storyboard.segment("gulls").prompt == "their gulls" and m.links == ()


def test_a_shots_length_and_the_frames_inside_it_merge_as_one() -> None:
    """frames on one side, seconds or a retake on the other: never both in the result."""
    base = _base()
    m = merge_storyboards(base, with_segment(base, "dawn", frames=49, seconds=None),
                          with_segment(base, "dawn", frames=None, seconds=3.0))
    dawn = m.storyboard.segment("dawn")
    assert (dawn.frames, dawn.seconds) == (49, None) and m.both_changed == ("dawn.frames/dawn.seconds",)
    m = merge_storyboards(base, with_segment(base, "dawn", frames=9), with_segment(base, "dawn", retake=(10, 16)))
    assert m.storyboard.segment("dawn").retake is None and m.storyboard.segment("dawn").frames == 9


def test_a_shot_renamed_on_disk_takes_its_new_id_unless_renamed_here_too() -> None:
    base = _base()
    theirs = replace(base, segments=tuple(replace(s, id="morning") if s.id == "dawn" else s for s in base.segments))
    m = merge_storyboards(base, with_segment(base, "dawn", prompt="mine"), theirs)
    assert _ids(m.storyboard) == ["morning", "beam", "storm"] and m.storyboard.segment("morning").prompt == "mine"
    assert m.taken == ("morning.id",)
    mine = replace(base, segments=tuple(replace(s, id="sunrise") if s.id == "dawn" else s for s in base.segments))
    m = merge_storyboards(base, mine, theirs, {"dawn": "sunrise"})
    assert _ids(m.storyboard) == ["sunrise", "beam", "storm"] and m.both_changed == ("sunrise.id",)
    assert m.links == (("morning", "sunrise"),)  # the file's name of our shot, for the next save


def test_the_disks_new_order_stands_unless_the_editor_reordered() -> None:
    base = _base()
    theirs = replace(base, segments=(base.segments[2], base.segments[0], base.segments[1]))
    m = merge_storyboards(base, with_segment(base, "beam", seed=5), theirs)
    assert _ids(m.storyboard) == ["storm", "dawn", "beam"] and "the order of the shots" in m.taken
    mine = replace(base, segments=(base.segments[1], base.segments[0], base.segments[2]))
    assert _ids(merge_storyboards(base, mine, theirs).storyboard) == ["beam", "dawn", "storm"]


def test_a_shot_deleted_here_but_changed_there_is_reported() -> None:
    base = _base()
    mine = replace(base, segments=base.segments[1:])
    m = merge_storyboards(base, mine, with_segment(base, "dawn", seed=8))
    assert _ids(m.storyboard) == ["beam", "storm"] and m.both_changed == ("dawn (deleted here, changed there)",)


def test_a_fresh_id_is_always_a_valid_one() -> None:
    from pipeline.project.merging import _fresh_id
    from pipeline.project.storyboard import segment_id_problem

    for wanted in ("shot-4", "a-" + "9" * 62, "x" * 64, "q-999999"):
        new = _fresh_id(wanted, {wanted})
        assert new != wanted and not segment_id_problem(_base(), new), new
