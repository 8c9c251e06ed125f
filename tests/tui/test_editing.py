"""Pilot tests: a user edits a storyboard with the keyboard and saves it."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import TextArea

from pipeline.project.storyboard import load
from sulphur_tui.app import SulphurApp, create_app
from sulphur_tui.screens import ConfirmQuit, DiskChangedDialog
from sulphur_tui.widgets.segments import SegmentList

from .conftest import changed_lines, type_text

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)


def make(story: Path, **kw: object) -> SulphurApp:
    return create_app(story, connect_worker=False, image="none", **kw)


def ids(app: SulphurApp) -> list[str]:
    assert app.doc is not None
    return [s.id for s in app.doc.storyboard.segments]


def row_ids(app: SulphurApp) -> list[str]:
    return [str(k.value) for k in app.query_one(SegmentList).rows]


async def test_edit_prompt_undo_save_keeps_comments(story: Path) -> None:
    original = story.read_text()
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down")  # beam
        assert app.selected == "beam"
        await pilot.press("enter")  # enter on a shot jumps to its prompt
        prompt = app.query_one("#prompt", TextArea)
        assert app.focused is prompt
        prompt.cursor_blink = False
        prompt.move_cursor(prompt.document.end)
        await type_text(pilot, " at night")
        await pilot.pause()
        assert app.doc.storyboard.segment("beam").prompt.endswith("sweeps over the sea at night")
        assert "unsaved" in app.sub_title
        # A second edit elsewhere, then undo it: only the prompt edit remains.
        await pilot.press("f2", "down")  # storm
        await pilot.press("ctrl+r")  # randomise storm's seed
        assert app.doc.storyboard.segment("storm").seed is not None
        await pilot.press("ctrl+z")
        assert app.doc.storyboard.segment("storm").seed is None
        assert app.doc.storyboard.segment("beam").prompt.endswith("at night")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "unsaved" not in app.sub_title
    saved = story.read_text()
    assert changed_lines(original, saved) == [
        '-prompt = "The camera slowly pushes in as the lighthouse beam sweeps over the sea"',
        '+prompt = "The camera slowly pushes in as the lighthouse beam sweeps over the sea at night"',
    ]


async def test_add_move_delete_undo_redo(story: Path) -> None:
    original = story.read_text()
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        assert row_ids(app) == ["dawn", "beam", "storm"]
        await pilot.press("a")  # after dawn
        new = app.selected
        assert ids(app) == ["dawn", new, "beam", "storm"]
        assert row_ids(app) == ids(app)
        await pilot.press("shift+down")
        assert ids(app) == ["dawn", "beam", new, "storm"]
        await pilot.press("up", "c")  # duplicate beam
        dup = app.selected
        assert ids(app) == ["dawn", "beam", dup, new, "storm"]
        await pilot.press("delete")  # the duplicate
        assert ids(app) == ["dawn", "beam", new, "storm"]
        await pilot.press("ctrl+z")
        assert ids(app) == ["dawn", "beam", dup, new, "storm"]
        await pilot.press("ctrl+y")
        assert ids(app) == ["dawn", "beam", new, "storm"]
        # Delete dawn, move storm to the top.
        await pilot.press("ctrl+home", "delete")
        assert ids(app) == ["beam", new, "storm"]
        await pilot.press("ctrl+end", "shift+up", "shift+up", "shift+up")  # stops at the top
        assert ids(app) == ["storm", "beam", new]
        assert row_ids(app) == ids(app)
        await pilot.press("ctrl+s")
        await pilot.pause()
    sb = load(story)
    assert [s.id for s in sb.segments] == ["storm", "beam", new]
    from dataclasses import replace

    from pipeline.project.storyboard import parse

    assert replace(sb.segment("beam")) == parse(original, story).segment("beam")  # untouched shot, same values
    text = story.read_text()
    # Every comment outside the deleted shot survives the reorder.
    dawn_block = original[original.index('id = "dawn"'):original.index('[[segment]]\nid = "beam"')]
    for line in original.splitlines():
        if "#" in line and line.strip() and line not in dawn_block:
            comment = line[line.index("#"):]
            assert comment in text, comment


async def test_delete_last_shot_is_refused(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("delete", "delete", "delete")
        assert len(ids(app)) == 1


async def test_quit_asks_about_unsaved_changes(story: Path) -> None:
    before = story.read_text()
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a", "ctrl+q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("escape")
        assert not isinstance(app.screen, ConfirmQuit) and app.is_running
        await pilot.press("ctrl+q", "d")
        await pilot.pause()
    assert app.return_value == 0
    assert story.read_text() == before  # discarded, never written


async def test_quit_save(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a", "ctrl+q", "s")
        await pilot.pause()
    assert len(load(story).segments) == 4


async def test_seed_and_length_fields(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#seed").focus()
        await type_text(pilot, "42")
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").seed == 42
        app.query_one("#seconds").focus()
        await type_text(pilot, "1.5")
        await pilot.pause()
        seg = app.doc.storyboard.segment("dawn")
        assert (seg.frames, seg.seconds) == (None, 1.5)  # seconds replaces frames
        app.query_one("#frames").focus()
        await type_text(pilot, "5000")
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").frames == 500  # 5000 is out of range: not taken
        assert "frames" in str(app.query_one("#field-error").render())
        await pilot.press("ctrl+z")
        assert app.doc.storyboard.segment("dawn").frames is None


async def test_a_field_that_is_not_a_value_stops_save_and_render(story: Path) -> None:
    """Cleared (the default: 49 frames) then typed 0: the form shows "frames 0" and an error, the
    document still holds the blank. ctrl+s and F5 must refuse rather than write and render 49
    frames the user never asked for; once the field is fixed, the save goes through."""
    original = story.read_text()
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        app.query_one("#frames").focus()
        await pilot.press("end", "backspace", "backspace", "0")
        await pilot.pause()
        assert app.query_one("#frames").value == "0"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert story.read_text() == original
        assert any("frames" in n and "Fix the field" in n for n in notes), notes
        refused = len(notes)
        await pilot.press("f5")
        await pilot.pause()
        assert story.read_text() == original
        assert len(notes) == refused + 1 and "Fix the field" in notes[-1], notes
        await pilot.press("backspace", "9")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert load(story).segment("dawn").frames == 9
        removed, added = changed_lines(original, story.read_text())
        assert removed.startswith("-frames = 17") and added.startswith("+frames = 9")
        assert "# frame count" in added  # the key kept its place and its comment


async def test_external_change_reload(story: Path) -> None:
    app = make(story, poll_disk=0.05)
    async with app.run_test(size=SIZE) as pilot:
        text = story.read_text().replace("gulls calling", "gulls crying")
        story.write_text(text)
        for _ in range(400):  # up to 20 s on a loaded machine; a break ends it at once
            await pilot.pause(0.05)
            if isinstance(app.screen, DiskChangedDialog):
                break
        assert isinstance(app.screen, DiskChangedDialog)
        await pilot.press("r")
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").prompt.endswith("gulls crying")
        assert app.query_one("#prompt", TextArea).text.endswith("gulls crying")
        assert not app.doc.dirty
        toasts = [n.message for n in app._notifications]
        assert "Reloaded from disk" in toasts, toasts  # no "your edits are one undo away": there were none


@pytest.mark.parametrize(("answer", "dawn_ends"), [("k", "gulls calling"), ("m", "gulls crying")],
                         ids=["keep-mine", "merge"])
async def test_external_change_keep_mine_or_merge_never_silent(story: Path, answer: str, dawn_ends: str) -> None:
    """Keep mine: our version replaces theirs on save. Merge: our new shot and the other
    program's prompt edit both reach the file. Either way nothing is written until ctrl+s."""
    app = make(story, poll_disk=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")  # an unsaved edit of ours: a fourth shot
        story.write_text(story.read_text().replace("gulls calling", "gulls crying"))
        for _ in range(400):  # up to 20 s on a loaded machine; a break ends it at once
            await pilot.pause(0.05)
            if isinstance(app.screen, DiskChangedDialog):
                break
        assert isinstance(app.screen, DiskChangedDialog)
        await pilot.press(answer)
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").prompt.endswith(dawn_ends) and app.doc.dirty
        assert "crying" in story.read_text() and len(load(story).segments) == 3  # nothing written yet
        await pilot.press("ctrl+s")
        await pilot.pause()
    sb = load(story)
    assert len(sb.segments) == 4 and sb.segment("dawn").prompt.endswith(dawn_ends)


async def test_merge_from_the_palette_without_waiting_for_the_dialog(story: Path) -> None:
    """The command palette's "Merge with the file on disk": at once, and says so when there is
    nothing to merge."""
    app = make(story, poll_disk=3600)  # no polling: no dialog comes
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("a")
        await app.run_action("merge_disk")
        await pilot.pause()
        assert [n.message for n in app._notifications][-1].startswith("The file on disk has not changed")
        story.write_text(story.read_text().replace("gulls calling", "gulls crying"))
        await app.run_action("merge_disk")
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").prompt.endswith("gulls crying") and len(app.doc.storyboard.segments) == 4
        assert [n.message for n in app._notifications][-1].startswith("Merged: took the file's changes to dawn.prompt")


async def test_save_asks_when_file_changed_since(story: Path) -> None:
    """ctrl+s right after someone else's write: a question, not an overwrite."""
    app = make(story, poll_disk=3600)  # no polling: only the save itself can notice
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        story.write_text(story.read_text().replace("gulls calling", "gulls crying"))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, DiskChangedDialog)
    assert "crying" in story.read_text() and len(load(story).segments) == 3


@pytest.mark.parametrize(("answer", "dawn_ends", "shots"), [("m", "gulls crying", 4), ("k", "gulls calling", 4),
                                                      ("r", "gulls crying", 3)], ids=["merge", "keep-mine", "reload"])
async def test_save_and_quit_over_a_changed_file_follows_the_answer(story: Path, answer: str, dawn_ends: str,
                                                                    shots: int) -> None:
    """ctrl+q, s with the file changed on disk: the question, then the save and the quit the
    user asked for (merge and then stay open, doing neither, was the old behaviour). After a
    reload the user's edits are an undo step: the editor stays open rather than lose them."""
    app = make(story, poll_disk=3600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        story.write_text(story.read_text().replace("gulls calling", "gulls crying"))
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, DiskChangedDialog) and app.is_running
        await pilot.press(answer)
        await pilot.pause()
        assert app.is_running == (answer == "r")
        if answer == "r":
            assert app.doc.can_undo  # the fourth shot is one ctrl+z away
    assert app.return_code == (None if answer == "r" else 0)
    sb = load(story)
    assert len(sb.segments) == shots and sb.segment("dawn").prompt.endswith(dawn_ends)


async def test_save_right_after_the_worker_wrote_a_prompt_saves(story: Path) -> None:
    """The worker's enhanced prompt reached the file just before ctrl+s: the save took it in
    and then returned without saving or a word (and Save and quit neither saved nor quit)."""
    from pipeline.project.writeback import set_enhanced_prompt

    app = make(story, poll_disk=3600)  # no polling: only the save itself can notice
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        set_enhanced_prompt(story, "dawn", "A lighthouse, golden hour, long lens")
        await pilot.press("ctrl+q", "s")
        await pilot.pause()
    assert app.return_code == 0
    sb = load(story)
    assert len(sb.segments) == 4 and sb.segment("dawn").enhanced_prompt == "A lighthouse, golden hour, long lens"


async def test_broken_file_view_then_fixed(story: Path) -> None:
    good = story.read_text()
    story.write_text(good.replace("frames = 17               # frame count", "frames = \"many\"", 1))
    app = make(story, poll_disk=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        from sulphur_tui.screens import BrokenFileScreen

        assert isinstance(app.screen, BrokenFileScreen)
        where = str(app.screen.query_one("#where").render())
        err = app.load_error
        assert err is not None and err.line > 0
        assert f"story.toml:{err.line}:{err.column}" in where
        story.write_text(good)
        for _ in range(400):  # up to 20 s on a loaded machine; a break ends it at once
            await pilot.pause(0.05)
            if app.doc is not None:
                break
        await pilot.pause()
        assert app.doc is not None and not isinstance(app.screen, BrokenFileScreen)
        assert row_ids(app) == ["dawn", "beam", "storm"]


async def test_command_palette_lists_every_action(story: Path) -> None:
    from sulphur_tui.commands import COMMANDS

    app = make(story)
    async with app.run_test(size=SIZE):
        for _title, _help, action in COMMANDS:
            name = action.split("(")[0]
            assert hasattr(app, f"action_{name}"), name
        bound = {b.action.removeprefix("app.").split("(")[0] for b in app.BINDINGS + SegmentList.BINDINGS}
        in_palette = {a.split("(")[0] for _t, _h, a in COMMANDS}
        # moving the cursor (j/k/g/G, like the arrows) is not a command
        assert bound - {"focus", "cursor_down", "cursor_up", "scroll_top", "scroll_bottom"} <= \
            in_palette | {"help", "quit"}


async def test_help_screen(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        from sulphur_tui.screens import HelpScreen

        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_anchor_and_enhanced_prompt_lock(story: Path) -> None:
    from PIL import Image
    from textual.widgets import Checkbox, Select

    Image.new("RGB", (32, 18), (200, 120, 40)).save(story.parent / "still.png")  # the field reads its header
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+end")  # storm
        app.query_one("#anchor-kind", Select).value = "image"
        await pilot.pause()
        assert app.doc.storyboard.segment("storm").anchor.kind == "previous"  # no file yet: nothing changes
        assert app.query_one("#anchor-path").disabled is False
        app.query_one("#anchor-path").focus()
        await type_text(pilot, "still.png")
        await pilot.pause()
        anchor = app.doc.storyboard.segment("storm").anchor
        assert (anchor.kind, anchor.path) == ("image", "still.png")
        # The enhanced prompt is read-only until locked; locked, it is the user's.
        enhanced = app.query_one("#enhanced", TextArea)
        assert enhanced.read_only
        app.query_one("#enhance-lock", Checkbox).value = True
        await pilot.pause()
        assert not enhanced.read_only and app.doc.storyboard.segment("storm").enhance_lock
        enhanced.focus()
        await type_text(pilot, "Rain")
        await pilot.pause()
        assert app.doc.storyboard.segment("storm").enhanced_prompt == "Rain"
        await pilot.press("ctrl+s")
        await pilot.pause()
    seg = load(story).segment("storm")
    assert (seg.anchor.kind, seg.anchor.path, seg.enhanced_prompt, seg.enhance_lock) == \
        ("image", "still.png", "Rain", True)


async def test_vram_bar_from_worker_samples(story: Path) -> None:
    """Without local NVML the worker's own readings draw the bar, with the budget marked."""
    from pipeline.wire.protocol import VramSample
    from sulphur_tui.messages import WorkerEvent
    from sulphur_tui.widgets.vram import VramBar

    story.write_text(story.read_text().replace("# vram_budget_gb = 8 ", "vram_budget_gb = 8   "))
    gib = 1024**3
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        assert not app.query(VramBar)
        app.post_message(WorkerEvent(VramSample(gpu=0, name="NVIDIA H100", used=12 * gib, total=80 * gib,
                                                utilisation=87, temperature=64, torch_allocated=9 * gib,
                                                torch_reserved=10 * gib)))
        await pilot.pause()
        bar = app.query_one(VramBar)
        text = str(bar.render())
        assert "GPU0" in text and "12.0/80.0 GiB" in text and "87%" in text and "64°C" in text
        assert "torch 9.0 alloc / 10.0 reserved" in text and "budget 8 GiB" in text
        assert "│" in text.splitlines()[1]  # the budget mark inside the bar
        assert text.splitlines()[1].count("█") < text.splitlines()[1].count("░")  # 12 of 80 GiB used


async def test_keep_mine_over_a_broken_file(story: Path) -> None:
    """The disk copy breaks; the user keeps theirs; saving writes a loadable file with
    the original comments (merged into the last text that parsed)."""
    app = make(story, poll_disk=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        story.write_text(story.read_text() + "\nx = [\n")
        for _ in range(400):  # up to 20 s on a loaded machine; a break ends it at once
            await pilot.pause(0.05)
            if isinstance(app.screen, DiskChangedDialog):
                break
        assert isinstance(app.screen, DiskChangedDialog) and app.screen.problem
        await pilot.press("r")  # nothing loadable to reload: stays open
        assert isinstance(app.screen, DiskChangedDialog)
        await pilot.press("k", "ctrl+s")
        await pilot.pause()
    sb = load(story)
    assert len(sb.segments) == 4
    assert "# Each [[segment]] is one shot." in story.read_text()


async def test_worker_written_enhanced_prompt_is_taken_quietly(story: Path) -> None:
    """The worker merge-writes an enhanced prompt while the user has unsaved edits elsewhere:
    no question, the new prompt shows up, the user's edits stay unsaved, nothing is lost."""
    from pipeline.project.storyboard import save, with_segment

    app = make(story, poll_disk=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+end", "a")  # our unsaved edit: a 4th shot
        save(with_segment(load(story), "beam", enhanced_prompt="A slow push-in, the beam sweeping the sea."))
        for _ in range(20):
            await pilot.pause(0.05)
        assert not isinstance(app.screen, DiskChangedDialog)
        assert app.doc.storyboard.segment("beam").enhanced_prompt.startswith("A slow push-in")
        assert len(app.doc.storyboard.segments) == 4 and app.doc.dirty
        await pilot.press("ctrl+s")
        await pilot.pause()
    sb = load(story)
    assert len(sb.segments) == 4 and sb.segment("beam").enhanced_prompt.startswith("A slow push-in")


async def test_command_palette_runs_an_action(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await type_text(pilot, "Add shot")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert len(ids(app)) == 4


async def test_file_picker_sets_the_anchor(story: Path) -> None:
    from sulphur_tui.screens import FilePicker

    (story.parent / "stills").mkdir()
    (story.parent / "stills" / "cliff.png").write_bytes(b"")
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+end")  # storm
        app.query_one("#anchor-kind").value = "image"
        await pilot.pause()
        app.query_one("#browse").press()
        await pilot.pause(0.3)
        assert isinstance(app.screen, FilePicker)
        tree = app.screen.query_one("_MediaTree")
        tree.focus()
        labels = []
        for _ in range(8):  # walk down to the png, opening the folder on the way
            await pilot.press("down")
            await pilot.pause(0.1)
            node = tree.cursor_node
            labels.append(str(node.label) if node else "")
            if node and str(node.label).endswith("stills"):
                await pilot.press("enter")
                await pilot.pause(0.2)
            if node and str(node.label) == "cliff.png":
                await pilot.press("enter")
                break
        await pilot.pause(0.2)
        anchor = app.doc.storyboard.segment("storm").anchor
        assert (anchor.kind, anchor.path) == ("image", "stills/cliff.png"), labels


async def test_a_shot_can_name_its_own_model_preset(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+end")  # storm
        app.query_one("#preset").focus()
        await type_text(pilot, "tiny-ltxv")
        await pilot.pause()
        assert app.doc.storyboard.segment("storm").preset == "tiny-ltxv"
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert load(story).segment("storm").preset == "tiny-ltxv"
    assert load(story).segment("dawn").preset is None
    assert 'preset = "tiny-ltxv"' in story.read_text()


async def test_a_shot_can_set_its_own_refine_sigmas(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down")  # beam
        field = app.query_one("#sigmas")
        field.focus()
        await type_text(pilot, "0.9, 0.4")  # on the way to 0.9, 0.45: "0.9, 0.4" is already valid
        await pilot.pause()
        assert app.doc.storyboard.segment("beam").refine_sigmas == (0.9, 0.4)
        await type_text(pilot, "5")  # 0.45
        await type_text(pilot, ", 1")  # rising again: refused, the last good value stays
        await pilot.pause()
        assert app.doc.storyboard.segment("beam").refine_sigmas == (0.9, 0.45)
        assert "non-increasing" in str(app.query_one("#field-error").render())
        assert field.has_class("-bad")
        await pilot.press("backspace")
        await type_text(pilot, "0")
        await pilot.pause()
        assert app.doc.storyboard.segment("beam").refine_sigmas == (0.9, 0.45, 0.0)
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert load(story).segment("beam").refine_sigmas == (0.9, 0.45, 0.0)
    assert load(story).segment("dawn").refine_sigmas is None
    assert "refine_sigmas = [0.9, 0.45, 0.0]" in story.read_text()


async def test_a_shot_can_keep_only_its_first_frames(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        field = app.query_one("#keep")
        field.focus()
        await type_text(pilot, "9")
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").keep == 9
        await pilot.press("backspace")
        await type_text(pilot, "0")  # "0": not a frame count
        await pilot.pause()
        assert app.doc.storyboard.segment("dawn").keep is None  # blank in between: the last good value
        assert "keep: between 1 and 2000" in str(app.query_one("#field-error").render())
        await pilot.press("backspace")
        await type_text(pilot, "12")
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert load(story).segment("dawn").keep == 12
    assert "keep = 12" in story.read_text()
