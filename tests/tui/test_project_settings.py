"""Pilot tests: the project settings form (F4) edits ``[project]`` as the file would hold it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.widgets import Input, Select, Static

from pipeline.project.storyboard import load
from sulphur_tui.app import SulphurApp, create_app
from sulphur_tui.screens import ProjectScreen

from .conftest import changed_lines, screen_text

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)


def make(story: Path) -> SulphurApp:
    return create_app(story, connect_worker=False, image="none")


async def fill(app: SulphurApp, **values: str) -> None:
    for key, text in values.items():
        app.screen.query_one(f"#{key}", Input).value = text


async def test_settings_apply_save_and_keep_every_comment(story: Path) -> None:
    original = story.read_text()
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        assert isinstance(app.screen, ProjectScreen)
        assert app.screen.query_one("#fps", Input).value == "24"
        assert app.screen.query_one("#output_size", Input).value == "1920x1080"
        assert app.screen.query_one("#vram_budget_gb", Input).value == ""  # not set: the GPU's free memory
        await fill(app, fps="30", vram_budget_gb="8", refine_sigmas="0.9, 0.5, 0")
        app.screen.query_one("#drift_guard", Select).value = "anchor"
        app.screen.query_one("#fps", Input).focus()
        await pilot.press("enter")  # applies
        await pilot.pause()
        assert not isinstance(app.screen, ProjectScreen)
        project = app.doc.storyboard.project
        assert (project.fps, project.vram_budget_gb, project.refine_sigmas) == (30, 8.0, (0.9, 0.5, 0.0))
        assert project.drift_guard == "anchor"
        assert "unsaved" in app.sub_title
        assert story.read_text() == original  # applied, not yet saved
        await pilot.press("ctrl+s")
        await pilot.pause()
    saved = story.read_text()
    assert load(story).project == project
    # Only the changed keys: every comment, the commented-out defaults and the order stay.
    assert changed_lines(original, saved) == [
        "-fps = 24                  # frames per second of every segment and of the final film",
        "+fps = 30                  # frames per second of every segment and of the final film",
        '+vram_budget_gb = 8',
        '+refine_sigmas = [0.9, 0.5, 0.0]',
        '+drift_guard = "anchor"',
    ]


async def test_a_bad_value_is_shown_on_its_field_and_nothing_changes(story: Path) -> None:
    original = story.read_text()
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        before = app.doc.storyboard
        for key, text, says in [
            ("fps", "0", "Frames per second: must be between 1 and 240"),
            ("fps", "twenty", "Frames per second: expected a whole number"),
            ("output_size", "1921x1080", "Film size: H.264 needs an even width and height"),
            ("draft_size", "512 by 288", "Draft size: expected WIDTHxHEIGHT"),
            ("refine_sigmas", "0.4, 0.8", "Refine sigmas: expected a non-increasing list of sigmas in [0, 1]"),
            ("vram_budget_gb", "-2", "VRAM budget GB: must be positive"),
            ("drift_strength", "1.5", "Strength: must be between 0 and 1"),
            ("preset", "", "Model preset: must not be blank"),
        ]:
            screen = app.screen
            assert isinstance(screen, ProjectScreen)
            good = screen.query_one(f"#{key}", Input).value
            await fill(app, **{key: text})
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert app.screen is screen, key  # refused: the form stays open
            assert str(screen.query_one("#error", Static).render()).startswith(says), key
            field = screen.query_one(f"#{key}", Input)
            assert field.has_class("-invalid") and app.focused is field
            await fill(app, **{key: good})
        await pilot.press("escape")
        await pilot.pause()
        assert app.doc.storyboard == before and "unsaved" not in app.sub_title
    assert story.read_text() == original


async def test_clearing_a_budget_removes_it_and_undo_brings_it_back(story: Path) -> None:
    text = story.read_text()
    at = text.index("\n", text.index("audio = true")) + 1
    story.write_text(text[:at] + "ram_budget_gb = 32        # this box's RAM\n" + text[at:])
    original = load(story).project
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        assert app.screen.query_one("#ram_budget_gb", Input).value == "32"
        await fill(app, ram_budget_gb="")
        await pilot.press("ctrl+s")  # apply and save
        await pilot.pause()
        assert app.doc.storyboard.project.ram_budget_gb is None
        assert not re.search(r"^ram_budget_gb", story.read_text(), re.M)  # the key, not its comment
        await pilot.press("ctrl+z")
        assert app.doc.storyboard.project.ram_budget_gb == 32
        await pilot.press("ctrl+s")
        await pilot.pause()
    # Back in the file (at the end of [project]: the comment went with the removed line).
    assert load(story).project == original
    assert re.search(r"^ram_budget_gb = 32$", story.read_text(), re.M)


async def test_the_palette_and_help_name_the_settings(story: Path) -> None:
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"project")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ProjectScreen)
        await pilot.press("escape")
        await pilot.press("f1")
        await pilot.pause()
        help_text = "\n".join(str(m.source) for m in app.screen.query("Markdown"))
        assert "Project settings" in help_text and "f4" in help_text


async def test_enter_on_a_checkbox_applies_and_flips_nothing(story: Path) -> None:
    """Enter on "Keep the generated audio" applies the form, as the Apply button says; Textual's
    Checkbox took Enter as a toggle and a later save wrote ``audio = false``. Space still toggles."""
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        assert isinstance(app.screen, ProjectScreen)
        app.screen.query_one("#audio").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, ProjectScreen)
        assert app.doc.storyboard.project.audio is True and not app.doc.dirty
        await pilot.press("f4")
        app.screen.query_one("#audio").focus()
        await pilot.press("space", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, ProjectScreen)
        assert app.doc.storyboard.project.audio is False and app.doc.dirty


async def test_a_field_error_is_shown_whole(story: Path) -> None:
    """The film size's message ends with its example; at 40% of the row it was cut mid-way."""
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        field = app.screen.query_one("#output_size", Input)
        field.focus()
        await pilot.press("end", "z", "z", "tab")
        await pilot.pause()
        text = "\n".join(" ".join(r.split()) for r in screen_text(app).splitlines())
        assert "1920x1080" in text.split("Film size", 1)[1].split("Draft size", 1)[0].replace("1920x1080zz", ""), text
