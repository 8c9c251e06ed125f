"""Renaming a shot: the new id (refused beside the field as the storyboard would refuse
it), then, when the shot has rendered files, whether to rename them too."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from pipeline.project.storyboard import Storyboard, segment_id_problem
from sulphur_tui.screens.dialogs import _DIALOG_CSS


class RenameScreen(ModalScreen[str | None]):
    """Asks for a shot's new id; dismisses with it (valid and different) or None."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="RenameScreen") + """
    RenameScreen #rename-error { color: $error; height: auto; margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="rename.cancel")]

    def __init__(self, sb: Storyboard, segment_id: str) -> None:
        super().__init__()
        self.sb, self.segment_id = sb, segment_id

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Rename shot “{self.segment_id}”", classes="question")
            yield Static("The id names its files: renders/…/segments/<id>.mp4, its preview and takes.",
                         classes="detail")
            yield Input(self.segment_id, id="new-id", max_length=64)
            yield Static("", id="rename-error")
            with Horizontal():
                yield Button("Rename (enter)", id="rename", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        field = self.query_one("#new-id", Input)
        field.focus()
        field.select_all()

    def problem(self) -> str:
        new_id = self.query_one("#new-id", Input).value
        return segment_id_problem(self.sb, new_id, self.segment_id)

    @on(Input.Changed, "#new-id")
    def _changed(self) -> None:
        self.query_one("#rename-error", Static).update(self.problem())

    @on(Input.Submitted, "#new-id")
    @on(Button.Pressed, "#rename")
    def _rename(self) -> None:
        problem = self.problem()
        if problem:
            self.query_one("#rename-error", Static).update(problem)
            self.query_one("#new-id", Input).focus()
            return
        new_id = self.query_one("#new-id", Input).value
        self.dismiss(None if new_id == self.segment_id else new_id)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class ConfirmRenameFiles(ModalScreen[str]):
    """The shot has rendered files: rename them too? Dismisses with "files", "id" or "cancel"."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="ConfirmRenameFiles").replace("width: 72", "width: 96")
    BINDINGS = [
        Binding("escape", "dismiss('cancel')", "Cancel", id="rename_files.cancel"),
        Binding("r", "dismiss('files')", "Rename files too", id="rename_files.yes"),
        Binding("k", "dismiss('id')", "Keep file names", id="rename_files.no"),
    ]

    def __init__(self, old: str, new: str, moves: list[tuple[str, str]], note: str = "") -> None:
        super().__init__()
        self.old, self.new, self.moves, self.note = old, new, moves, note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"The files are named “{self.old}”. Rename them to “{self.new}” too?", classes="question")
            yield Static("\n".join(f"{a}  →  {b}" for a, b in self.moves), id="rename-moves", classes="detail")
            yield Static("Kept, the old files are orphaned and the next render makes them again "
                         "(from the cache)." + (f"\n{self.note}" if self.note else ""), classes="detail")
            with Horizontal():
                yield Button("Rename files too (r)", id="files", variant="primary")
                yield Button("Keep file names (k)", id="id")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#files", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")
