"""The shot editor: every field of one ``[[segment]]``.

The editor never changes the document itself: it posts :class:`SegmentEditor.Edited`
with the changed fields and the app applies them (so undo, the palette and the dirty
marker all go through one place). Loading a shot into the fields is done with
messages prevented, so showing a shot is never mistaken for editing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, Select, TextArea

from pipeline.project.keyframes import (
    format_keyframes,
    keyframes_from_text,
    parse_keyframes,
    parse_retake,
    retake_from_text,
)
from pipeline.project.references import shot_file_problem
from pipeline.project.storyboard import DRIFT_GUARDS, Anchor, Segment, Storyboard, check_sigmas
from sulphur_tui.values import (
    format_audio,
    format_loras,
    format_sigmas,
    parse_audio_text,
    parse_loras_text,
    parse_sigmas,
)

ANCHOR_KINDS = [("previous shot", "previous"), ("image file", "image"), ("video (last frame)", "video"),
                ("none (text only)", "none")]
INHERIT = "inherit"
# Fields are validated here (see _input), not by Input: its per-keystroke -valid/-invalid
# class toggling restyles the editor on every shot change.
_OWN_VALIDATION = ["submitted"]
#: Integer fields and their ranges.
NUMBER_FIELDS = {"seed": (0, 2**63 - 1), "frames": (1, 2000), "steps": (1, 200), "keep": (1, 2000)}
#: Field id → the Segment field it sets, where that is all there is to it.
FIELD_KEYS = {"seed": "seed", "steps": "steps", "lora": "lora_strength", "sigmas": "refine_sigmas",
              "keep": "keep", "keyframes": "keyframes", "retake": "retake", "loras": "loras", "audio": "audio"}
#: Fields whose parse errors say what is wrong (the others: "not a number").
SAYS_WHY = ("sigmas", "keyframes", "retake", "loras", "audio", "anchor-path")


def _int(text: str, lo: int, hi: int) -> int | None:
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"between {lo} and {hi}")
    return value


def _float(text: str, lo: float, hi: float) -> float:
    value = float(text)
    if not lo < value <= hi:
        raise ValueError(f"in ({lo}, {hi}]")
    return value


def _rendered(frames: int) -> int:
    """The frames an LTX-2 shot of ``frames`` renders (rounded up to 8k+1), the most a ``keep``
    may keep. The presets' own rounding is the render's (the registry is out of the editor's
    reach); other families round to no more, and the render refuses at the key's line."""
    return max(9, -(-(frames - 1) // 8) * 8 + 1)


def _named_files(seg: Segment, key: str) -> list[str]:
    """The local files a shot's ``key`` names, as the storyboard spells them."""
    if key == "keyframes":
        return [kf.image for kf in seg.keyframes]
    if key == "loras":
        return [ref.path for ref in seg.loras if not ref.repo]
    if key == "anchor":
        return [seg.anchor.path] if seg.anchor.kind in ("image", "video") else []
    return [seg.audio.path] if key == "audio" and seg.audio is not None else []


class SegmentEditor(VerticalScroll):
    """Fields of the selected shot."""

    DEFAULT_CSS = """
    SegmentEditor { padding: 0 1; }
    SegmentEditor .field-label { color: $text-muted; margin-top: 1; }
    SegmentEditor #seg-title { text-style: bold; color: $accent; width: 1fr; height: 1; }
    SegmentEditor #prompt { height: 6; }
    SegmentEditor #enhanced { height: 5; }
    SegmentEditor #enhanced.-locked { border: tall $warning; }
    SegmentEditor .row { height: 1; margin-top: 1; }
    SegmentEditor .row > Label { width: auto; color: $text-muted; padding: 0 1 0 0; }
    SegmentEditor .row > Input { width: 1fr; height: 1; margin-right: 1; }
    SegmentEditor .row > Select { width: 1fr; margin-right: 1; }
    SegmentEditor .row > Button { width: auto; margin-right: 1; }
    SegmentEditor .row > Checkbox { width: auto; margin-right: 1; }
    SegmentEditor #seed { width: 10; }
    SegmentEditor #frames, SegmentEditor #seconds { width: 7; }
    SegmentEditor #steps, SegmentEditor #lora, SegmentEditor #keep { width: 8; }
    SegmentEditor #preset { width: 24; }
    SegmentEditor #anchor-kind { width: 22; }
    SegmentEditor #drift { width: 28; }
    SegmentEditor #retake { width: 9; }
    SegmentEditor Input.-bad { background: $error 30%; }
    /* docked: the message stays in sight however far the form is scrolled (80x24 shows ten rows) */
    SegmentEditor #field-error { dock: bottom; display: none; color: $error; background: $panel;
                                 width: 1fr; height: auto; max-height: 3; }
    """

    @dataclass
    class Edited(Message):
        """The user changed fields of a shot; ``coalesce`` groups keystrokes for undo."""

        editor: SegmentEditor
        segment_id: str
        changes: dict[str, Any] = field(default_factory=dict)
        coalesce: str = ""

        @property
        def control(self) -> SegmentEditor:
            return self.editor

    @dataclass
    class BrowseAnchor(Message):
        """The user wants a file picker for the anchor of ``kind`` (image/video)."""

        editor: SegmentEditor
        segment_id: str
        kind: str

        @property
        def control(self) -> SegmentEditor:
            return self.editor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.segment_id: str | None = None
        self.segment: Segment | None = None
        self.fps = 24  # the project's: a shot's frame count (keyframe and retake frames are checked against it)
        self.storyboard: Storyboard | None = None  # where the shot's files are looked for (its folder)
        # field id → what is wrong with its text; the document keeps the field's last good value,
        # so saving now would write a value the user no longer sees (see :attr:`problem`)
        self._bad: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Label("", id="seg-title")
        yield Label("Prompt", classes="field-label")
        yield TextArea("", id="prompt", soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        with Horizontal(classes="row"):
            yield Label("Enhanced prompt")
            yield Checkbox("locked", False, id="enhance-lock", compact=True,
                           tooltip="Keep this enhanced prompt as written; never re-enhance")
            yield Button("Re-enhance", id="re-enhance", compact=True,
                         tooltip="Clear it: the next render writes a new one")
        yield TextArea("", id="enhanced", soft_wrap=True, read_only=True, tab_behavior="focus")
        with Horizontal(classes="row"):
            yield Label("seed")
            yield Input(placeholder="project", id="seed", type="integer", compact=True, validate_on=_OWN_VALIDATION)
            yield Button("Random", id="randomise", compact=True, tooltip="A new random seed for this shot")
            yield Label("frames")
            yield Input(placeholder="–", id="frames", type="integer", compact=True, validate_on=_OWN_VALIDATION)
            yield Label("or secs")
            yield Input(placeholder="–", id="seconds", type="number", compact=True, validate_on=_OWN_VALIDATION)
        with Horizontal(classes="row"):
            yield Label("first frame")
            yield Select(ANCHOR_KINDS, id="anchor-kind", allow_blank=False, value="previous", compact=True)
            yield Input(placeholder="file, relative to the storyboard", id="anchor-path", compact=True, validate_on=_OWN_VALIDATION)
            yield Button("Browse…", id="browse", compact=True)
        with Horizontal(classes="row"):
            yield Label("steps")
            yield Input(placeholder="project", id="steps", type="integer", compact=True, validate_on=_OWN_VALIDATION)
            yield Label("LoRA")
            yield Input(placeholder="project", id="lora", type="number", compact=True, validate_on=_OWN_VALIDATION)
            yield Select([("drift guard: project's", INHERIT)] + [(f"drift guard: {g}", g) for g in DRIFT_GUARDS],
                         id="drift", allow_blank=False, value=INHERIT, compact=True)
        with Horizontal(classes="row"):
            yield Label("model")
            # Free text on purpose: the preset registry lives on the render side (`sulphur models`
            # lists the names); an unknown name is refused by the render with the known ones.
            yield Input(placeholder="project's preset", id="preset", compact=True, validate_on=_OWN_VALIDATION,
                        tooltip="This shot's model preset (sulphur models lists them); blank: the project's")
        with Horizontal(classes="row"):
            yield Label("refine sigmas")
            yield Input(placeholder="project", id="sigmas", compact=True, validate_on=_OWN_VALIDATION,
                        tooltip="This shot's refine sigmas, e.g. 0.85, 0.725, 0.4219, 0; blank: the project's")
            yield Label("keep")
            yield Input(placeholder="all", id="keep", type="integer", compact=True, validate_on=_OWN_VALIDATION,
                        tooltip="The film keeps this many of the shot's frames; the next shot continues from the last")
        with Horizontal(classes="row"):  # keyframes/retake
            yield Label("keyframes")
            yield Input(placeholder="none", id="keyframes", compact=True, validate_on=_OWN_VALIDATION,
                        tooltip="frame=still, …: e.g. 0=start.png, -1=end.png@0.8 (-1: the last frame; @ strength)")
            yield Label("retake")
            yield Input(placeholder="–", id="retake", compact=True, validate_on=_OWN_VALIDATION,
                        tooltip="first-last: regenerate those frames of the rendered shot, keep the rest")
        with Horizontal(classes="row"):  # loras/audio
            yield Label("LoRAs")
            yield Input(placeholder="none", id="loras", compact=True, validate_on=_OWN_VALIDATION,
                        tooltip="file@strength, …: e.g. loras/grain.safetensors@0.8, "
                                "hf://owner/name/file.safetensors@1 (a Hub file; sulphur models pull)")
        with Horizontal(classes="row"):
            yield Label("audio")
            yield Input(placeholder="none: the shot makes its own sound", id="audio", compact=True,
                        validate_on=_OWN_VALIDATION,
                        tooltip="a sound file the shot follows, e.g. voice.wav; score.flac+12.5 starts 12.5 s in")
        yield Label("", id="field-error")

    # ------------------------------------------------------------------ loading
    def load(self, sb: Storyboard, segment_id: str) -> None:
        """Show a shot; nothing posted."""
        seg = sb.segment(segment_id)
        self.segment_id, self.segment = segment_id, seg
        self.fps, self.storyboard = sb.project.fps, sb
        i = sb.index(segment_id)
        with self.prevent(TextArea.Changed, Input.Changed, Select.Changed, Checkbox.Changed):
            # Fixed-size labels: no layout pass needed (it would re-arrange the whole screen).
            self.query_one("#seg-title", Label).update(f"Shot {i + 1}/{len(sb.segments)} · {seg.id}", layout=False)
            self._set_text("#prompt", seg.prompt)
            self._set_text("#enhanced", seg.enhanced_prompt)
            enhanced = self.query_one("#enhanced", TextArea)
            enhanced.read_only = not seg.enhance_lock
            enhanced.set_class(seg.enhance_lock, "-locked")
            self.query_one("#enhance-lock", Checkbox).value = seg.enhance_lock
            self._set_input("#seed", seg.seed)
            self._set_input("#frames", seg.frames)
            self._set_input("#seconds", seg.seconds)
            self.query_one("#anchor-kind", Select).value = seg.anchor.kind
            self._set_input("#anchor-path", seg.anchor.path or None)
            self.query_one("#anchor-path", Input).disabled = seg.anchor.kind not in ("image", "video")
            self.query_one("#browse", Button).disabled = seg.anchor.kind not in ("image", "video")
            self._set_input("#steps", seg.steps)
            self._set_input("#lora", seg.lora_strength)
            self._set_input("#preset", seg.preset)
            self._set_input("#sigmas", format_sigmas(seg.refine_sigmas) if seg.refine_sigmas else None)
            self._set_input("#keep", seg.keep)
            self._set_input("#keyframes", format_keyframes(seg.keyframes) or None)
            self._set_input("#retake", f"{seg.retake[0]}-{seg.retake[1]}" if seg.retake else None)
            self.query_one("#drift", Select).value = seg.drift_guard or INHERIT
            self._set_input("#loras", format_loras(seg.loras) or None)
            self._set_input("#audio", format_audio(seg.audio) or None)
            for inp in self.query(Input):
                inp.remove_class("-bad")
            self._bad.clear()
            self._error("")

    @property
    def problem(self) -> str:
        """What is wrong with a field whose text is not a value ("" when none is): while one
        is, saving or rendering would use a value the form no longer shows."""
        return next(iter(self._bad.values()), "")

    def _error(self, text: str) -> None:
        label = self.query_one("#field-error", Label)
        if str(label.content) != text:
            label.update(text)  # a layout: its height follows the message (up to three lines)
            label.display = bool(text)
            self.call_after_refresh(self._focus_in_sight)

    def _focus_in_sight(self) -> None:
        """The message's line is docked over the form's foot: scroll the field being typed in
        out from under it (scroll_visible leaves room for docked widgets)."""
        focused = self.screen.focused
        if focused is not None and self in focused.ancestors:
            focused.scroll_visible(animate=False)

    def _set_text(self, selector: str, text: str) -> None:
        area = self.query_one(selector, TextArea)
        if area.text != text:
            area.load_text(text)

    def _set_input(self, selector: str, value: object) -> None:
        text = "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
        inp = self.query_one(selector, Input)
        if inp.value != text:
            inp.value = text

    # ------------------------------------------------------------------ editing
    def _post(self, coalesce: str = "", **changes: Any) -> None:
        if self.segment_id is None or self.segment is None:
            return
        changes = {k: v for k, v in changes.items() if getattr(self.segment, k) != v}
        if changes:
            self.segment = replace(self.segment, **changes)
            self.post_message(self.Edited(self, self.segment_id, changes, coalesce))

    @on(TextArea.Changed, "#prompt")
    def _prompt(self, event: TextArea.Changed) -> None:
        self._post(coalesce=f"prompt:{self.segment_id}", prompt=event.text_area.text)

    @on(TextArea.Changed, "#enhanced")
    def _enhanced(self, event: TextArea.Changed) -> None:
        if not event.text_area.read_only:
            self._post(coalesce=f"enhanced:{self.segment_id}", enhanced_prompt=event.text_area.text)

    @on(Checkbox.Changed, "#enhance-lock")
    def _lock(self, event: Checkbox.Changed) -> None:
        enhanced = self.query_one("#enhanced", TextArea)
        enhanced.read_only = not event.value
        enhanced.set_class(event.value, "-locked")
        self._post(enhance_lock=event.value)

    @on(Button.Pressed, "#re-enhance")
    def _re_enhance(self) -> None:
        with self.prevent(TextArea.Changed, Checkbox.Changed):
            self._set_text("#enhanced", "")
            self.query_one("#enhance-lock", Checkbox).value = False
        self._post(enhanced_prompt="", enhance_lock=False)

    @on(Button.Pressed, "#randomise")
    def _randomise(self) -> None:
        self.app.action_randomise_seed()  # type: ignore[attr-defined]

    @on(Button.Pressed, "#browse")
    def _browse(self) -> None:
        if self.segment_id:
            self.post_message(self.BrowseAnchor(self, self.segment_id, str(self.query_one("#anchor-kind",
                                                                                            Select).value)))

    @on(Input.Changed)
    def _input(self, event: Input.Changed) -> None:
        self._check(event.input)

    def _check(self, inp: Input) -> None:
        """Parse a field's text: a good value is applied, a bad one is marked and remembered."""
        text = inp.value.strip()
        key = inp.id or ""
        error = ""
        value: Any = None
        try:
            value = self._parse(key, text)
        except ValueError as exc:
            says = key in SAYS_WHY or "between" in str(exc) or "(" in str(exc)  # int()/float() messages say little
            name = "anchor" if key == "anchor-path" else key  # the storyboard's key
            error = f"{name}: {exc}" if says else f"{name}: not a number"
        inp.set_class(bool(error), "-bad")
        if error:
            self._bad[key] = error
        else:
            self._bad.pop(key, None)
        self._error(error or self.problem)  # fixed here, another field may still be wrong
        if not error:
            self._apply(key, value)

    def _parse(self, key: str, text: str) -> Any:
        """The field's text as the value its storyboard key holds (None: blank, the default);
        ValueError says what is wrong."""
        if key == "frames":
            return self._length_fits(key, _int(text, *NUMBER_FIELDS[key]) if text else None)
        if key == "keep":
            return self._keep_fits(_int(text, *NUMBER_FIELDS[key]) if text else None)
        if key in NUMBER_FIELDS:
            return _int(text, *NUMBER_FIELDS[key]) if text else None
        if key == "seconds":
            return self._length_fits(key, _float(text, 0, 120) if text else None)
        if key == "lora":
            return float(text) if text else None
        if key == "anchor-path" and self.segment is not None:
            kind = str(self.query_one("#anchor-kind", Select).value)
            if text and kind in ("image", "video"):
                self._files_exist("anchor", Anchor(kind, text))
            return text
        if key == "preset":  # free text: the preset registry lives on the render side
            return text
        if key == "sigmas":
            return check_sigmas(parse_sigmas(text)) if text else None
        if key in ("keyframes", "retake") and self.segment is not None:
            frames = self.segment.frame_count(self.fps)
            if key == "retake":
                return retake_from_text(text, frames)
            return self._files_exist(key, keyframes_from_text(text, frames))
        if key == "loras":
            return self._files_exist(key, parse_loras_text(text))
        if key == "audio":
            return self._files_exist(key, parse_audio_text(text))
        return None

    def _length_fits(self, key: str, value: int | float | None) -> int | float | None:
        """``value`` (frames or seconds) if the shot's keyframes and retake still fall inside it,
        as a load checks them; else ValueError saying which does not."""
        if self.segment is None:
            return value
        other = "seconds" if key == "frames" else "frames"
        seg = replace(self.segment, **{key: value, other: None if value is not None else getattr(self.segment, other)})
        frames = seg.frame_count(self.fps)
        if seg.keep is not None and seg.keep > _rendered(frames):
            raise ValueError(f"keep = {seg.keep} needs at least that many frames (change keep first)")
        parse_keyframes([kf.to_toml() for kf in seg.keyframes], frames)
        if seg.retake is not None:
            try:
                parse_retake(list(seg.retake), frames)
            except ValueError as exc:
                raise ValueError(f"the retake {exc}") from None
        return value

    def _keep_fits(self, keep: int | None) -> int | None:
        """``keep`` if the shot renders that many frames (the render refuses more); else ValueError."""
        frames = _rendered(self.segment.frame_count(self.fps)) if self.segment is not None else None
        if keep is not None and frames is not None and keep > frames:
            raise ValueError(f"the shot renders {frames} frames: keep between 1 and {frames}")
        return keep

    def _files_exist(self, key: str, value: Any) -> Any:
        """``value`` if the files it names are usable (the render's own check, relative to the
        storyboard's folder); else ValueError naming the file as written."""
        if self.segment is None or self.storyboard is None:
            return value
        seg = replace(self.segment, **{key: value})
        problem = shot_file_problem(self.storyboard, seg, key)
        for name in _named_files(seg, key):
            problem = problem.replace(str(self.storyboard.resolve(name)), name)
        if problem:
            raise ValueError(problem)
        return value

    def _apply(self, key: str, value: Any) -> None:
        """Post a good field's value as a change of its key (one undo step per field and shot)."""
        coalesce = f"{key}:{self.segment_id}"
        if key in ("frames", "seconds"):
            changes = {key: value}
            if value is not None:
                other = "seconds" if key == "frames" else "frames"
                changes[other] = None  # one or the other, never both
                self._clear(f"#{other}")
            self._post(coalesce=coalesce, **changes)
        elif key == "preset":
            self._post(coalesce=coalesce, preset=value or None)
        elif key in FIELD_KEYS:
            self._post(coalesce=coalesce, **{FIELD_KEYS[key]: value})
        elif key == "anchor-path":
            kind = str(self.query_one("#anchor-kind", Select).value)
            if kind in ("image", "video") and value:
                self._post(coalesce=coalesce, anchor=Anchor(kind, value))

    def _clear(self, selector: str) -> None:
        inp = self.query_one(selector, Input)
        with self.prevent(Input.Changed):
            inp.value = ""
        self._forget(inp)

    def _forget(self, inp: Input) -> None:
        """The field no longer holds what was wrong with it (cleared, disabled, or set from a
        dialog): a stale entry kept save and render refused over text no longer shown."""
        self._bad.pop(inp.id or "", None)
        inp.remove_class("-bad")
        self._error(self.problem)

    @on(Select.Changed, "#anchor-kind")
    def _anchor_kind(self, event: Select.Changed) -> None:
        kind = str(event.value)
        path_input = self.query_one("#anchor-path", Input)
        path_input.disabled = kind not in ("image", "video")
        self.query_one("#browse", Button).disabled = path_input.disabled
        if kind in ("previous", "none"):
            self._forget(path_input)
            self._post(anchor=Anchor(kind))
        elif path_input.value.strip():
            self._check(path_input)  # the same file as an image or a video: checked as that
        else:
            self._error(f"anchor: choose the {kind} file (Browse…)")

    @on(Select.Changed, "#drift")
    def _drift(self, event: Select.Changed) -> None:
        value = str(event.value)
        self._post(drift_guard=None if value == INHERIT else value)

    def set_anchor_path(self, kind: str, path: str) -> None:
        with self.prevent(Input.Changed, Select.Changed):
            self.query_one("#anchor-kind", Select).value = kind
            self._set_input("#anchor-path", path)
            self.query_one("#anchor-path", Input).disabled = False
            self.query_one("#browse", Button).disabled = False
        self._forget(self.query_one("#anchor-path", Input))
        self._post(anchor=Anchor(kind, path))
