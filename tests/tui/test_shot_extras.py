"""The shot form shows a shot's own LoRAs and sound, and editing the shot keeps them."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Label, TextArea

from sulphur_tui.app import create_app

from .conftest import changed_lines

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)
EXTRAS = ('loras = [{ path = "loras/grain.safetensors", strength = 0.8 }, '
          '{ repo = "Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In", '
          'path = "ltx-2-19b-lora-camera-control-dolly-in.safetensors" }]\n'
          'audio = { path = "voice.wav", start = 2.5 }\n')


async def test_the_form_shows_loras_and_sound_and_an_edit_keeps_them(story: Path) -> None:
    story.write_text(story.read_text().replace('id = "beam"\n', 'id = "beam"\n' + EXTRAS, 1))
    original = story.read_text()
    app = create_app(story, connect_worker=False, image="none")
    async with app.run_test(size=SIZE) as pilot:
        extras = app.query_one("#shot-extras", Label)
        assert not extras.display  # dawn has neither
        await pilot.press("down")  # beam
        await pilot.pause()
        assert extras.display
        shown = str(extras.render())
        assert "loras/grain.safetensors ×0.8" in shown and "ltx-2-19b-lora-camera-control-dolly-in" in shown
        assert "follows sound: voice.wav from 2.5 s" in shown
        await pilot.press("enter")
        prompt = app.query_one("#prompt", TextArea)
        prompt.move_cursor(prompt.document.end)
        await pilot.press("!")
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("f2", "down")  # storm: hidden again
        await pilot.pause()
        assert not extras.display
    diff = changed_lines(original, story.read_text())
    assert len(diff) == 2 and all(line[1:].startswith("prompt = ") for line in diff)  # loras, audio untouched
