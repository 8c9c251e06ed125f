"""Renaming a shot's id from the editor: refused ids beside the field, its rendered files
renamed on confirm (with the manifests and anchors that name them), comments kept, undo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from pipeline.project.storyboard import load
from pipeline.wire.protocol import FlickerReport
from sulphur_tui.app import create_app
from sulphur_tui.messages import WorkerEvent
from sulphur_tui.screens import ConfirmRenameFiles, RenameScreen
from sulphur_tui.widgets.flicker import FlickerRow

from .conftest import changed_lines, fake_render
from .test_takes import write_takes

SIZE = (120, 40)
pytestmark = pytest.mark.asyncio


async def _type_id(pilot, app, new_id: str) -> None:  # noqa: ANN001
    field = app.screen.query_one("#new-id", Input)
    field.value = ""
    await pilot.press(*new_id)


def _error(app) -> str:  # noqa: ANN001
    return str(app.screen.query_one("#rename-error", Static).render())


async def test_rename_with_its_files(story: Path) -> None:
    """n on beam: a duplicate and a bad id are refused beside the field; "glow" is taken,
    its MP4, preview and takes move, manifest.json and takes.json follow, storm's video
    anchor on beam's MP4 follows, and the file keeps every comment."""
    renders = story.parent / "renders" / "story"
    fake_render(story, "beam")
    (renders / "manifest.json").write_text(json.dumps({"segments": {"beam": {"digest": "d"}}}))
    write_takes(story, "beam", [7, 8])
    story.write_text(story.read_text().replace(
        'anchor = "previous"       # default.',
        'anchor = { video = "renders/story/segments/beam.mp4" }  # default.').replace(
        '# drift_reference = "first"   #', 'drift_reference = "renders/story/previews/beam.png"   #'))
    original = story.read_text()
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "n")
        assert isinstance(app.screen, RenameScreen)
        await _type_id(pilot, app, "storm")
        assert "duplicate id 'storm'" in _error(app)
        await pilot.press("enter")
        assert isinstance(app.screen, RenameScreen)  # refused: the dialog stays
        await _type_id(pilot, app, "glow beam")
        assert "ids are 1-64 letters" in _error(app)
        await _type_id(pilot, app, "glow")
        assert _error(app) == ""
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmRenameFiles)
        moves = str(app.screen.query_one("#rename-moves", Static).render())
        assert "renders/story/segments/beam.mp4  →  renders/story/segments/glow.mp4" in moves
        assert "renders/story/previews/beam.png  →  renders/story/previews/glow.png" in moves
        assert "renders/story/takes/beam  →  renders/story/takes/glow" in moves
        await pilot.press("r")
        await pilot.pause()
        assert app.doc is not None and not app.doc.dirty
        assert [s.id for s in app.doc.storyboard.segments] == ["dawn", "glow", "storm"]
        assert app.selected == "glow"
        renamed = story.read_text()
        await pilot.press("ctrl+z")  # the id back, and the offer to move the files back
        await pilot.pause()
        assert isinstance(app.screen, ConfirmRenameFiles)
        assert "renders/story/segments/glow.mp4  →  renders/story/segments/beam.mp4" in str(
            app.screen.query_one("#rename-moves", Static).render())
        await pilot.press("r")
        await pilot.pause()
        assert (renders / "segments" / "beam.mp4").exists() and not (renders / "takes" / "glow").exists()
        assert story.read_text() == original and not app.doc.dirty
        await pilot.press("ctrl+y", "r")  # and forward again
        await pilot.pause()
        assert story.read_text() == renamed and (renders / "segments" / "glow.mp4").exists()
    assert not (renders / "segments" / "beam.mp4").exists() and (renders / "segments" / "glow.mp4").exists()
    assert (renders / "previews" / "glow.png").exists() and not (renders / "previews" / "beam.png").exists()
    takes = json.loads((renders / "takes" / "glow" / "takes.json").read_text())
    assert takes["segment"] == "glow"
    assert {Path(t["path"]) for t in takes["takes"].values()} == {
        renders / "takes" / "glow" / "seed-7.mp4", renders / "takes" / "glow" / "seed-8.mp4"}
    assert json.loads((renders / "manifest.json").read_text()) == {"segments": {"glow": {"digest": "d"}}}
    assert changed_lines(original, story.read_text()) == [
        '-drift_reference = "renders/story/previews/beam.png"   # "first" (the first segment\'s last frame) or an '
        'image path',
        '+drift_reference = "renders/story/previews/glow.png"   # "first" (the first segment\'s last frame) or an '
        'image path',
        '-id = "beam"',
        '+id = "glow"',
        '-anchor = { video = "renders/story/segments/beam.mp4" }  # default. Or { image = "still.png" } or '
        '{ video = "clip.mp4" } (its last frame), or "none"',
        '+anchor = { video = "renders/story/segments/glow.mp4" }  # default. Or { image = "still.png" } or '
        '{ video = "clip.mp4" } (its last frame), or "none"',
    ]
    load(story)  # and it parses, anchor file and all


async def test_rename_keeping_file_names_then_undo(story: Path) -> None:
    """k keeps the files; with no files the id changes at once, no question. Unsaved, undo
    and redo, then ctrl+s: each renamed shot keeps its table (the comment on its seed line)."""
    renders = story.parent / "renders" / "story"
    original = story.read_text()
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "n")
        await _type_id(pilot, app, "beam-2")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmRenameFiles)  # beam has a recorded preview
        await pilot.press("k")
        await pilot.pause()
        assert (renders / "previews" / "beam.png").exists()
        assert app.doc is not None and app.doc.dirty and story.read_text() == original
        await pilot.press("ctrl+z")
        assert [s.id for s in app.doc.storyboard.segments] == ["dawn", "beam", "storm"]
        await pilot.press("ctrl+y")
        (renders / "previews" / "storm.png").unlink()
        await pilot.press("ctrl+end", "n")
        assert isinstance(app.screen, RenameScreen) and app.screen.segment_id == "storm"
        await _type_id(pilot, app, "squall")
        await pilot.press("enter")  # storm has no files now: no question
        await pilot.pause()
        assert [s.id for s in app.doc.storyboard.segments] == ["dawn", "beam-2", "squall"]
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert changed_lines(original, story.read_text()) == [
        '-id = "beam"', '+id = "beam-2"', '-id = "storm"', '+id = "squall"']
    assert "seed = 7                  # a segment's own seed" in story.read_text()


async def test_footer_help_and_palette_name_the_new_keys(story: Path) -> None:
    """At 120 columns the footer holds rename and takes beside every render key and F1;
    F1 lists them; the palette finds "Rename shot…" and it opens the dialog."""
    from textual.widgets import Markdown

    from .conftest import footer_text

    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        footer = await footer_text(pilot)
        for words in ("t Takes", "n Rename", "f5 Render", "f8 Cancel", "f1 Help", "^p palette"):
            assert words in footer, footer
        await pilot.press("f1")
        await pilot.pause()
        help_text = app.screen.query_one(Markdown).source
        assert "| `n` | Rename |" in help_text and "| `t` | Takes |" in help_text
        assert "`r` renders the next N seeds" in help_text
        await pilot.press("escape", "ctrl+p", *"rename")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, RenameScreen) and app.screen.segment_id == "dawn"


async def test_keys_typed_in_one_burst_reach_the_new_id(story: Path) -> None:
    """tmux send-keys / a paste over SSH: "n", the id and enter arrive before the dialog has
    opened. None is lost: the shot is renamed; then "r" renames its preview too."""
    from textual import events

    previews = story.parent / "renders" / "story" / "previews"
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down")  # beam
        await pilot.pause()
        for key in ["n", "g", "l", "o", "w", "enter"]:
            app._driver.send_message(events.Key(key, "\r" if key == "enter" else key))  # no wait between keys
        for _ in range(200):  # a loaded machine: give the dialogs time, not the keys
            await pilot.pause(0.1)
            if isinstance(app.screen, ConfirmRenameFiles):
                break
        field = app.screen.query("#new-id")
        assert isinstance(app.screen, ConfirmRenameFiles), field.first().value if field else app.screen
        assert app.screen.new == "glow"
        await pilot.press("r")
        await pilot.pause()
        assert [s.id for s in app.doc.storyboard.segments] == ["dawn", "glow", "storm"]
    assert (previews / "glow.png").exists() and not (previews / "beam.png").exists()
    assert [s.id for s in load(story).segments] == ["dawn", "glow", "storm"]  # renaming files saves



async def test_undoing_a_rename_keeps_that_shot_selected(story: Path) -> None:
    """ctrl+z after renaming the second shot leaves the cursor on it (it used to jump to the first)."""
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "n")
        await _type_id(pilot, app, "glow")
        await pilot.press("enter", "k")  # rename the id only
        await pilot.pause()
        assert app.selected == "glow"
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert app.selected == "beam" and app.query_one("#seg-title").render().plain.endswith("beam")
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert app.selected == "glow"


async def test_help_and_the_rename_question_fit_80_columns(story: Path) -> None:
    """At 80×24 the help's right border and the rename question's last button were cut off
    (fixed widths of 90 and 96 columns)."""
    from textual.widgets import Button

    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert app.screen.query_one("VerticalScroll").outer_size.width <= 80
        await pilot.press("escape", "down", "n")
        await _type_id(pilot, app, "beam-2")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmRenameFiles)
        for button in app.screen.query(Button):
            assert button.region.right <= 80 and button.region.width > 0, (button.label, button.region)


async def test_a_shot_renamed_with_its_files_keeps_its_flicker(story: Path) -> None:
    """The measured flicker goes with the mp4 it measured: in the panel now, and in an editor
    opened later (it stayed under the old id, and the renamed shot's row was gone)."""
    fake_render(story, "beam")
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        app.post_message(WorkerEvent(FlickerReport(job_id="j", segment="beam", stage="encode", psnr=[27.0, 31.0],
                                                   mean=29.0, median=29.0, minimum=27.0, worst=[0])))
        await pilot.pause()
        await pilot.press("down", "n")
        await _type_id(pilot, app, "glow")
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("r")  # the files too
        await pilot.pause()
        assert app.live.flicker["glow"].segment == "glow" and "beam" not in app.live.flicker
    again = create_app(story, connect_worker=False, image="none")
    async with again.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if again.query(FlickerRow):
                break
        assert [row.report.segment for row in again.query(FlickerRow)] == ["glow"]
