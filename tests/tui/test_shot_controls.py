"""The shot form's per-shot controls (keyframes, retake, LoRAs, audio): typed as one line each,
checked as a load and a render would check them, saved into the file, undone in one step."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Select, TextArea

from pipeline.project.audio_track import AudioTrack
from pipeline.project.keyframes import Keyframe
from pipeline.project.loras import LoraRef
from pipeline.project.storyboard import load
from sulphur_tui.app import SulphurApp, create_app
from sulphur_tui.values import format_audio, format_loras, parse_audio_text, parse_loras_text
from tests.opens import Opens

from .conftest import changed_lines, screen_once, screen_text, type_text

SIZE = (120, 40)
EXAMPLES = Path(__file__).resolve().parents[2] / "storyboards"
HUB_REPO = "owner/camera-loras"  # a Hub LoRA is not looked for by the editor: any well-formed id

# field, what a user types, what the shot then holds, the line the save writes
EDITS: list[tuple[str, str, Any, str]] = [
    ("keyframes", "0=stills/harbour-dusk.png, -1=stills/beam.png@0.5",
     (Keyframe(0, "stills/harbour-dusk.png"), Keyframe(-1, "stills/beam.png", 0.5)),
     'keyframes = [{frame = 0, image = "stills/harbour-dusk.png"}, '
     '{frame = -1, image = "stills/beam.png", strength = 0.5}]'),
    ("retake", "5-8", (5, 8), "retake = [5, 8]"),
    ("loras", f"loras/tiny-grain.safetensors@0.8, hf://{HUB_REPO}/dolly-in.safetensors@-1.5",
     (LoraRef("loras/tiny-grain.safetensors", 0.8), LoraRef("dolly-in.safetensors", -1.5, HUB_REPO)),
     f'loras = [{{path = "loras/tiny-grain.safetensors", strength = 0.8}}, '
     f'{{repo = "{HUB_REPO}", path = "dolly-in.safetensors", strength = -1.5}}]'),
    ("audio", "sounds/harbour-bell.flac+0.25", AudioTrack("sounds/harbour-bell.flac", 0.25),
     'audio = {path = "sounds/harbour-bell.flac", start = 0.25}'),
]

# field, a value a load or a render refuses, the one line the form shows
REFUSED: list[tuple[str, str, str]] = [
    ("keyframes", "99=stills/beam.png", "keyframes: keyframe 1: frame 99 is outside the shot's 17 frames"),
    ("keyframes", "-1=stills/nope.png", "keyframes: stills/nope.png: file not found"),
    ("keyframes", "-1=loras/tiny-grain.safetensors", "keyframes: loras/tiny-grain.safetensors: not a readable image"),
    ("retake", "0-16", "retake: a retake of every frame is a new shot"),
    ("retake", "8-5", "retake: [8, 5] must satisfy 0 <= first <= last <= 16"),
    ("loras", "loras/tiny-grain.safetensors@12", "loras: entry 1: strength must be between -10 and 10"),
    ("loras", "loras/nope.safetensors@0.5", "loras: loras/nope.safetensors: file not found"),
    ("loras", "hf://owner/x.safetensors", "loras: 'hf://owner/x.safetensors': write hf://owner/name/file"),
    ("loras", "loras/tiny-grain.safetensors@strong", "loras: 'strong' is not a number"),
    ("audio", "sounds/nope.wav", "audio: sounds/nope.wav: file not found"),
    ("audio", "sounds/harbour-bell.flac+99", "audio: sounds/harbour-bell.flac: start = 99 s is past its end"),
    ("audio", "stills/beam.png", "audio: stills/beam.png: expected a sound file"),
    ("keep", "18", "keep: the shot renders 17 frames: keep between 1 and 17"),  # the render refused it
]


@pytest.fixture
def studio(story: Path) -> Path:
    """story.toml beside the example stills, LoRA and sound (real files) that creative.toml uses."""
    for folder in ("stills", "loras", "sounds"):
        shutil.copytree(EXAMPLES / folder, story.parent / folder)
    return story


def make(story: Path) -> SulphurApp:
    return create_app(story, connect_worker=False, image="none")


async def open_field(pilot, field: str, shot: int = 1) -> Input:  # noqa: ANN001
    """Select a shot (by default the second, beam: 17 frames) and focus one of its fields."""
    await pilot.press(*["down"] * shot)
    await pilot.pause()
    inp = pilot.app.query_one(f"#{field}", Input)
    inp.focus()
    await pilot.pause()
    return inp


def form_error(app: SulphurApp) -> str:
    return str(app.query_one("#field-error").render())


@pytest.mark.asyncio
@pytest.mark.parametrize(("field", "typed", "value", "line"), EDITS, ids=[e[0] for e in EDITS])
async def test_a_typed_value_is_one_undo_step_and_saves_as_its_key(
        studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, typed: str, value: Any,
        line: str) -> None:
    """Typed key by key (each keystroke checked), the value reaches the shot; one ctrl+z undoes it all,
    ctrl+y brings it back; the save adds exactly the key's line, which loads back as the same value.
    Files are found beside the storyboard, not in the working directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    original = studio.read_text()
    app = make(studio)
    async with app.run_test(size=SIZE) as pilot:
        inp = await open_field(pilot, field)
        await type_text(pilot, typed)
        await pilot.pause()
        assert form_error(app) == "" and not inp.has_class("-bad")
        assert getattr(app.doc.storyboard.segment("beam"), field) == value
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert getattr(app.doc.storyboard.segment("beam"), field) in ((), None)
        assert inp.value == "" and not app.doc.can_undo  # one step, and the field shows it
        await pilot.press("ctrl+y", "ctrl+s")
        await pilot.pause()
        assert inp.value == typed
    assert changed_lines(original, studio.read_text()) == [f"+{line}"]  # comments and order kept
    assert getattr(load(studio).segment("beam"), field) == value


@pytest.mark.asyncio
@pytest.mark.parametrize(("field", "typed", "message"), REFUSED, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)])
async def test_a_bad_value_is_refused_on_the_field_and_never_written(
        studio: Path, field: str, typed: str, message: str) -> None:
    """The form says what a load or a render would say, in one line naming the file as written;
    the shot keeps its last good value and a save leaves the file as it was."""
    original = studio.read_text()
    app = make(studio)
    async with app.run_test(size=SIZE) as pilot:
        inp = await open_field(pilot, field)
        inp.value = typed
        await pilot.pause()
        assert form_error(app).startswith(message) and "\n" not in form_error(app)
        assert inp.has_class("-bad") and app.query_one("#field-error").display
        assert app.doc.storyboard == app.doc.saved  # nothing changed, nothing to undo
        await pilot.press("ctrl+s")
        await pilot.pause()
        inp.value = ""  # blank: the key's default, and the message goes
        await pilot.pause()
        assert form_error(app) == "" and not app.query_one("#field-error").display
    assert studio.read_text() == original


@pytest.mark.asyncio
async def test_the_form_shows_a_files_values_and_another_edit_keeps_their_spelling(studio: Path) -> None:
    """A shot with all four keys (spelled in the file in other ways than a save would) shows them
    in its fields; editing its prompt rewrites the prompt line only."""
    text = studio.read_text().replace('id = "beam"\n', 'id = "beam"\n'
                                      'loras = [{ path = "loras/tiny-grain.safetensors", strength = 0.8 }, '
                                      f'{{ repo = "{HUB_REPO}", path = "dolly-in.safetensors" }}]\n'
                                      'audio = { path = "sounds/harbour-bell.flac" }   # the bell\n'
                                      'keyframes = [{ frame = 16, image = "stills/beam.png", strength = 1.0 }]\n'
                                      'retake = [ 2, 4 ]\n', 1)
    studio.write_text(text)
    app = make(studio)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down")
        await pilot.pause()
        shown = {f: app.query_one(f"#{f}", Input).value for f in ("keyframes", "retake", "loras", "audio")}
        assert shown == {"keyframes": "16=stills/beam.png", "retake": "2-4",
                         "loras": f"loras/tiny-grain.safetensors@0.8, hf://{HUB_REPO}/dolly-in.safetensors@1",
                         "audio": "sounds/harbour-bell.flac"}
        await pilot.press("enter")
        prompt = app.query_one("#prompt", TextArea)
        prompt.move_cursor(prompt.document.end)
        await pilot.press("!")
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("f2", "down")  # storm has none of them: the fields are blank
        await pilot.pause()
        assert all(app.query_one(f"#{f}", Input).value == "" for f in shown)
    diff = changed_lines(text, studio.read_text())
    assert len(diff) == 2 and all(line[1:].startswith("prompt = ") for line in diff)


@pytest.mark.asyncio
@pytest.mark.parametrize(("field", "name", "rest", "other", "broken"), [
    ("audio", "sounds/harbour-bell.flac", "+0.25", "stills/beam.png", "audio: sounds/harbour-bell.flac: no audio stream"),
    ("keyframes", "-1=stills/beam.png", "@0.5", "sounds/harbour-bell.flac",
     "keyframes: stills/beam.png: not a readable image"),
])
async def test_keystrokes_read_a_files_header_once_until_the_file_changes(
        studio: Path, field: str, name: str, rest: str, other: str, broken: str) -> None:
    """Typing on after a file's name resolves checks the field at every key, but opens the
    file once (the kernel counts the opens); a file changed on disk is read again at the next
    key, and the form says what is now wrong with it."""
    path = studio.parent / name.split("=")[-1]
    opens = Opens(path)
    app = make(studio)
    try:
        async with app.run_test(size=SIZE) as pilot:
            inp = await open_field(pilot, field)
            await type_text(pilot, name + rest)
            await pilot.pause()
            assert form_error(app) == "" and inp.value == name + rest
            seen = opens()
            assert seen == 1, f"{path.name} opened {seen} times while {rest!r} was typed"
            path.write_bytes((studio.parent / other).read_bytes())  # a picture for a sound, or back
            await pilot.press("backspace", rest[-1])
            await pilot.pause()
            assert form_error(app).startswith(broken), form_error(app)
            assert opens() >= 3  # the write, then the check
    finally:
        opens.close()


@pytest.mark.parametrize("loras", [
    (), (LoraRef("a.safetensors", 0.1 + 0.2), LoraRef("x/y.safetensors", -10.0, "o/n"))])
def test_lora_text_round_trips(loras: tuple[LoraRef, ...]) -> None:
    """What the field shows reads back as the same LoRAs, strengths to the last digit."""
    assert parse_loras_text(format_loras(loras)) == loras


@pytest.mark.parametrize("track", [None, AudioTrack("a+b.wav"), AudioTrack("s/score.flac", 12.345678901)])
def test_audio_text_round_trips(track: AudioTrack | None) -> None:
    """A ``+`` in a file's name is the name; after a sound file's suffix it is the start."""
    assert parse_audio_text(format_audio(track)) == track


@pytest.mark.asyncio
async def test_f1_help_gives_the_one_line_forms(story: Path) -> None:
    """What a user reads in F1 before typing into the four fields."""
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        text = " ".join((await screen_once(pilot, "Sulphur editor")).split())
        for form in ("0=start.png, -1=end.png@0.8", "40-56", "hf://owner/name/file.safetensors@1",
                     "score.flac+12.5"):
            assert form in text


# ------------------------------------------------------------------ snapshots

ALL_FOUR = ('keyframes = [{ frame = 0, image = "stills/harbour-dusk.png" }, '
            '{ frame = -1, image = "stills/beam.png", strength = 0.8 }]\n'
            'retake = [8, 16]\n'
            'loras = [{ path = "loras/tiny-grain.safetensors", strength = 0.8 }, '
            f'{{ repo = "{HUB_REPO}", path = "dolly-in.safetensors", strength = 1.0 }}]\n'
            'audio = { path = "sounds/harbour-bell.flac", start = 0.25 }\n')


def creative_with_all_four(tmp_path: Path) -> Path:
    """storyboards/creative.toml and its files, its "night" shot using all four controls."""
    folder = tmp_path / "creative"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("example.toml"))
    story = folder / "creative.toml"
    text = story.read_text()
    story.write_text(text.replace('loras = [{ path = "loras/tiny-grain.safetensors", strength = 0.8 }]\n', ALL_FOUR))
    return story


async def show_the_controls(pilot, typed: str = "") -> None:  # noqa: ANN001
    """Select "night", focus its audio field (the form scrolls down to the four controls), type."""
    await pilot.press("down", "down", "down")
    await pilot.pause()
    audio = pilot.app.query_one("#audio", Input)
    for widget in [*pilot.app.query(TextArea), *pilot.app.query(Input)]:
        widget.cursor_blink = False
    audio.focus()
    # Focusing scrolls the form (animated) to centre the field; a person types after that, and
    # typing first would race the message's own scroll against it.
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    if typed:
        audio.value = typed
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_the_controls_filled(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:  # noqa: ANN001
    """A shot with keyframes, a retake, two LoRAs (one on the Hub) and a sound, in its form."""
    app = make(creative_with_all_four(tmp_path))
    assert snap_compare(app, terminal_size=size, run_before=show_the_controls)


def test_the_controls_refusing_a_file(snap_compare, tmp_path: Path) -> None:  # noqa: ANN001
    """At 80x24 the field's message stays in sight at the foot of the form, naming the file."""
    app = make(creative_with_all_four(tmp_path))

    async def run_before(pilot) -> None:  # noqa: ANN001
        await show_the_controls(pilot, "sounds/harbour-bel.flac")

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.asyncio
async def test_a_new_key_stays_with_its_shot_above_the_next_sections_comments(tmp_path: Path) -> None:
    """creative.toml heads each section with a comment block after a blank line: a key the form
    adds to the shot above it goes under that shot's keys, not under the next section's heading."""
    story = creative_with_all_four(tmp_path)
    story.write_text(story.read_text().replace(ALL_FOUR, ""))  # night: id, prompt, seconds
    app = make(story)
    async with app.run_test(size=SIZE) as pilot:
        inp = await open_field(pilot, "audio", shot=3)  # night
        inp.value = "sounds/harbour-bell.flac"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
    text = story.read_text()
    assert 'seconds = 2\naudio = "sounds/harbour-bell.flac"\n\n# ------' in text
    assert load(story).segment("night").audio == AudioTrack("sounds/harbour-bell.flac")


@pytest.mark.asyncio
async def test_at_80_columns_the_save_toast_leaves_the_status_line_readable(studio: Path) -> None:
    """The toast (half the width at 80 columns) sits above the status line, not over its tail."""
    app = make(studio)
    status = "no render worker running (F5 starts one) · the last job ended: film.mp4"
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        inp = await open_field(pilot, "retake")
        inp.value = "2-4"
        await pilot.press("ctrl+s")
        app.query_one("#statusline").update(status)
        await pilot.pause(0.2)
        rows = screen_text(app).splitlines()
        assert any("Saved story.toml" in row for row in rows)
        assert rows[-2].strip() == status


@pytest.mark.asyncio
@pytest.mark.parametrize(("field", "typed", "message"), [
    ("frames", "9", "frames: keyframe 1: frame 16 is outside the shot's 9 frames"),
    ("seconds", "0.25", "seconds: keyframe 1: frame 16 is outside the shot's 6 frames"),
])
async def test_a_shorter_shot_is_refused_while_its_keyframes_or_retake_fall_outside(
        studio: Path, field: str, typed: str, message: str) -> None:
    """A length that would leave a keyframe (or the retake) past the shot's end is refused on the
    length field, as a load would refuse the file; without them it is taken."""
    app = make(studio)
    async with app.run_test(size=SIZE) as pilot:
        keyframes = await open_field(pilot, "keyframes")
        keyframes.value = "16=stills/beam.png"
        app.query_one("#retake", Input).value = "12-14"
        await pilot.pause()
        app.query_one(f"#{field}", Input).value = typed
        await pilot.pause()
        assert form_error(app).startswith(message)
        assert app.doc.storyboard.segment("beam").frame_count(24) == 17
        length = app.query_one(f"#{field}", Input)
        keyframes.value = length.value = ""
        await pilot.pause()
        length.value = typed  # typed again: checked again
        await pilot.pause()
        assert form_error(app).startswith(f"{field}: the retake [12, 14] must satisfy 0 <= first <= last")
        app.query_one("#retake", Input).value = length.value = ""
        await pilot.pause()
        length.value = typed
        await pilot.pause()
        assert form_error(app) == ""
        assert app.doc.storyboard.segment("beam").frame_count(24) == (9 if field == "frames" else 6)
        await pilot.press("ctrl+s")
        await pilot.pause()
    load(studio)  # the file still loads


@pytest.mark.asyncio
async def test_an_anchor_file_and_a_length_below_keep_are_refused_on_their_fields(studio: Path) -> None:
    """A missing anchor image, and frames lowered below the shot's keep, were taken and only
    refused by the render (``segment[2].anchor: …: file not found``, ``bad_keep``)."""
    original = studio.read_text()
    app = make(studio)
    async with app.run_test(size=SIZE) as pilot:
        await open_field(pilot, "keep")
        app.query_one("#keep", Input).value = "12"
        await pilot.pause()
        assert app.doc.storyboard.segment("beam").keep == 12
        app.query_one("#frames", Input).value = "9"
        await pilot.pause()
        assert form_error(app).startswith("frames: keep = 12 needs at least that many frames")
        assert app.doc.storyboard.segment("beam").frame_count(24) == 17
        app.query_one("#anchor-kind", Select).value = "image"
        await pilot.pause()
        path = app.query_one("#anchor-path", Input)
        path.value = "stills/nope.png"
        await pilot.pause()
        assert form_error(app) == "anchor: stills/nope.png: file not found", form_error(app)
        assert path.has_class("-bad")
        path.value = "stills/beam.png"
        await pilot.pause()
        assert not path.has_class("-bad")
        assert app.doc.storyboard.segment("beam").anchor.path == "stills/beam.png"
    assert studio.read_text() == original


@pytest.mark.asyncio
@pytest.mark.parametrize("then", ["browse", "previous", "other-field"])
async def test_a_field_no_longer_wrong_stops_blocking_the_save(studio: Path, then: str) -> None:
    """A bad anchor path, then a good file from Browse…, the anchor set back to "previous", or
    frames typed (which clears a bad seconds field): the old error kept ctrl+s refused over text
    the form no longer showed."""
    from pipeline.project.storyboard import load as load_board
    from sulphur_tui.widgets.editor import SegmentEditor

    app = make(studio)
    async with app.run_test(size=SIZE) as pilot:
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        await open_field(pilot, "seed")
        if then == "other-field":
            app.query_one("#seconds", Input).value = "500"
            await pilot.pause()
            app.query_one("#frames", Input).value = "9"
        else:
            app.query_one("#anchor-kind", Select).value = "image"
            await pilot.pause()
            app.query_one("#anchor-path", Input).value = "stills/nope.png"
            await pilot.pause()
            assert "file not found" in form_error(app)
            if then == "browse":
                app.query_one(SegmentEditor).set_anchor_path("image", "stills/beam.png")
            else:
                app.query_one("#anchor-kind", Select).value = "previous"
        await pilot.pause()
        assert form_error(app) == "" and not app.query(".-bad"), form_error(app)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not any("Fix the field" in n for n in notes), notes
    beam = load_board(studio).segment("beam")
    assert {"browse": beam.anchor.path == "stills/beam.png", "previous": beam.anchor.kind == "previous",
            "other-field": beam.frames == 9}[then]
