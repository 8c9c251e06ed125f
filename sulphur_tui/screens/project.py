"""The project settings form: every key of ``[project]``, checked as the file would be.

The form turns each field's text into the TOML value the file would hold (sizes as
``[w, h]``, blanks left out so the preset's or the machine's default applies) and hands
the table to :func:`pipeline.project.storyboard.project_from_table`: one validator for files and
for this form, so the form cannot accept what a load would refuse. It dismisses with
the new :class:`~pipeline.project.storyboard.Project` (the app applies it as one undoable edit,
and saves when asked) or None.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from pipeline.project.storyboard import DRIFT_GUARDS, Project, StoryboardError, project_from_table
from sulphur_tui.values import format_sigmas, format_size, parse_sigmas, parse_size


class FieldError(ValueError):
    """A field's text is not a value of its kind."""


def _text(text: str) -> str:
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FieldError("expected a whole number") from None


def _number(text: str) -> float:
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)  # written back as typed: `vram_budget_gb = 8`, not 8.0
    try:
        return float(text)
    except ValueError:
        raise FieldError("expected a number") from None


def _size(text: str) -> list[int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise FieldError(str(exc)) from None


def _sigmas(text: str) -> list[float]:
    try:
        return parse_sigmas(text)
    except ValueError as exc:
        raise FieldError(str(exc)) from None


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return format_size(value)
    if isinstance(value, tuple):
        return format_sigmas(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    parse: Callable[[str], Any]
    blank: str = ""  # what a blank field means; "" = the field is required
    tip: str = ""


SECTIONS: list[tuple[str, list[Field]]] = [
    ("Film", [
        Field("title", "Title", _text, tip="Shown in the editor's title bar"),
        Field("fps", "Frames per second", _int, tip="Of every shot and of the film"),
        Field("output_size", "Film size", _size, tip="Final width x height (even numbers for H.264)"),
    ]),
    ("Model", [
        Field("preset", "Model preset", _text, tip="`sulphur models` lists them"),
        Field("seed", "Project seed", _int, tip="A shot without its own seed uses this + its position"),
        Field("draft_size", "Draft size", _size, blank="the preset's", tip="Pass 1 width x height"),
        Field("refine_size", "Refine size", _size, blank="twice the draft", tip="Pass 2 width x height"),
        Field("steps", "Draft steps", _int, blank="the preset's", tip="Pass 1 denoising steps"),
        Field("refine_sigmas", "Refine sigmas", _sigmas, blank="the preset's",
              tip="Pass 2 manual sigmas, non-increasing, in [0, 1]"),
        Field("lora_strength", "LoRA strength", _number, blank="the preset's",
              tip="Strength of the distilled LoRA"),
    ]),
    ("Memory", [
        Field("vram_budget_gb", "VRAM budget GB", _number, blank="the GPU's free memory",
              tip="Every stage plans within this"),
        Field("ram_budget_gb", "RAM budget GB", _number, blank="the available host memory",
              tip="Host memory for offloaded weights"),
    ]),
    ("Drift guard", [
        Field("drift_reference", "Reference", _text, tip='"first" (the first shot\'s last frame) or an image path'),
        Field("drift_strength", "Strength", _number, tip="0 to 1"),
    ]),
]
FIELDS = {f.key: f for _, group in SECTIONS for f in group}
# Number fields refuse letters as they are typed (Textual's restricted Input types).
INPUT_TYPES: dict[Callable[[str], Any], str] = {_int: "integer", _number: "number"}
FLAGS = {"audio": "Keep the generated audio", "enhance": "Enhance prompts with the LLM"}


@dataclass(frozen=True)
class ProjectEdit:
    project: Project
    save: bool  # ctrl+s: apply and write the file, as ctrl+s does everywhere else


class FormCheckbox(Checkbox, inherit_bindings=False):
    """Space toggles; Enter is left to the form (apply), as the Apply button says. Textual's
    Checkbox toggles on Enter too, which flipped a setting the user meant to apply."""

    BINDINGS = [Binding("space", "toggle_button", "Toggle", show=False)]


class ProjectScreen(ModalScreen[ProjectEdit | None]):
    """Edit ``[project]``; Enter in a field (or Apply) applies, ctrl+s applies and saves,
    Escape leaves it unchanged."""

    DEFAULT_CSS = """
    ProjectScreen { align: center middle; }
    ProjectScreen > Vertical {
        width: 80; max-width: 100%; height: 90%; border: thick $primary; background: $panel; padding: 0 1;
    }
    ProjectScreen .question { text-style: bold; margin: 1 0 0 1; }
    ProjectScreen VerticalScroll { height: 1fr; padding: 0 1; }
    ProjectScreen .section { color: $accent; text-style: bold; margin-top: 1; }
    ProjectScreen .row { height: auto; margin-top: 1; }
    ProjectScreen .row > Label { width: 20; color: $text-muted; }
    ProjectScreen .row > Input { width: 1fr; height: 1; }
    ProjectScreen .row > Select { width: 1fr; }
    ProjectScreen .row > Checkbox { width: 1fr; }
    ProjectScreen Input.-invalid { background: $error 30%; }
    ProjectScreen .row > .field-error { width: auto; max-width: 45%; height: auto; color: $error; padding-left: 1; }
    ProjectScreen #error { color: $error; height: auto; margin: 1 1 0 1; }
    ProjectScreen #buttons { height: auto; align-horizontal: right; margin: 1 0; }
    ProjectScreen Button { margin-left: 1; }
    """
    AUTO_FOCUS = "Input"  # the first field, not the scroll container around the form
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="project.cancel"),
        Binding("enter", "apply", "Apply", show=False, id="project.apply"),  # what a field's Enter does
        Binding("ctrl+s", "apply(True)", "Apply and save", id="project.save", priority=True),
    ]

    def __init__(self, project: Project) -> None:
        super().__init__()
        self.project = project
        self._initial: dict[str, object] = {}
        self._discard_armed = False

    def on_mount(self) -> None:
        self._initial = self._values()

    def _values(self) -> dict[str, object]:
        return {w.id or "": getattr(w, "value", None) for w in self.query("Input, Checkbox, Select")}

    def action_cancel(self) -> None:
        """Esc: leave; with changes not applied, the first Esc asks and the second discards."""
        if self._values() == self._initial or self._discard_armed:
            self.dismiss(None)
            return
        self._discard_armed = True
        self.query_one("#error", Static).update("Changes not applied: Esc again discards them, Enter applies.")

    @on(Input.Blurred)
    def _left_field(self, event: Input.Blurred) -> None:
        """A field says what is wrong with it as soon as it is left, beside it."""
        f = FIELDS.get(event.input.id or "")
        if f is None:
            return
        text = event.input.value.strip()
        problem = "must not be blank" if not text and not f.blank else ""
        if text and not problem:
            try:
                f.parse(text)
            except FieldError as exc:
                problem = str(exc)
        event.input.set_class(bool(problem), "-invalid")
        note = event.input.parent.query_one(".field-error", Label) if event.input.parent else None
        if note is not None:
            note.update(problem)

    def compose(self) -> ComposeResult:
        values = asdict(self.project)
        with Vertical():
            yield Label("Project settings", classes="question")
            with VerticalScroll():
                for title, group in SECTIONS:
                    yield Label(title, classes="section")
                    for f in group:
                        with Horizontal(classes="row"):
                            yield Label(f.label)
                            yield Input(_show(values[f.key]), id=f.key, compact=True, tooltip=f.tip or None,
                                        placeholder=f"blank: {f.blank}" if f.blank else "",
                                        type=INPUT_TYPES.get(f.parse, "text"))  # type: ignore[arg-type]
                            yield Label("", classes="field-error")
                    if title == "Model":
                        with Horizontal(classes="row"):
                            yield Label("")
                            yield FormCheckbox(FLAGS["enhance"], self.project.enhance, id="enhance", compact=True)
                    elif title == "Film":
                        with Horizontal(classes="row"):
                            yield Label("")
                            yield FormCheckbox(FLAGS["audio"], self.project.audio, id="audio", compact=True)
                    elif title == "Drift guard":
                        with Horizontal(classes="row"):
                            yield Label("Mode")
                            yield Select([(g, g) for g in DRIFT_GUARDS], value=self.project.drift_guard,
                                         allow_blank=False, id="drift_guard", compact=True)
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Apply (enter)", id="apply", variant="primary")
                yield Button("Apply and save (ctrl+s)", id="save")
                yield Button("Cancel (esc)", id="cancel")

    def table(self) -> dict[str, Any]:
        """The form as a ``[project]`` table; raises FieldError with the key in ``args[1]``.

        A field whose value did not change keeps the value it had, not its text's reading:
        ``drift_strength = 1.0`` shows as "1" and must not come back as the integer 1
        (every shot's digest, hence its rendered/stale state, would change)."""
        current = asdict(self.project)
        raw: dict[str, Any] = {}
        for key, f in FIELDS.items():
            text = self.query_one(f"#{key}", Input).value.strip()
            if not text:
                if not f.blank:
                    raise FieldError("must not be blank", key)
                continue  # left out: the default applies
            try:
                value = f.parse(text)
            except FieldError as exc:
                raise FieldError(str(exc), key) from None
            was = current.get(key)
            same = list(was) == value if isinstance(was, tuple) else (was == value and type(was) is not bool)
            raw[key] = (list(was) if isinstance(was, tuple) else was) if same else value
        for key in FLAGS:
            raw[key] = self.query_one(f"#{key}", Checkbox).value
        raw["drift_guard"] = self.query_one("#drift_guard", Select).value
        return raw

    def action_apply(self, save: bool = False) -> None:
        for field_input in self.query(Input):
            field_input.remove_class("-invalid")
        try:
            project = project_from_table(self.table())
        except FieldError as exc:
            self._refuse(exc.args[1], exc.args[0])
            return
        except StoryboardError as exc:
            self._refuse(exc.key.removeprefix("project."), exc.message)
            return
        self.dismiss(ProjectEdit(project, save))

    def _refuse(self, key: str, message: str) -> None:
        label = FIELDS[key].label if key in FIELDS else key
        self.query_one("#error", Static).update(f"{label}: {message}")
        if key in FIELDS:
            field_input = self.query_one(f"#{key}", Input)
            field_input.add_class("-invalid")
            field_input.focus()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#apply")
    def _apply_pressed(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_apply(save=True)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
