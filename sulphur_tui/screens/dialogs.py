"""Small modal questions: quit with unsaved changes, file changed on disk, pick a file."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Label, Static

from pipeline.project.storyboard import IMAGE_SUFFIXES, VIDEO_SUFFIXES

_DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 72; max-width: 100%; height: auto; max-height: 90%;
    border: thick $primary; background: $panel; padding: 1 2;
}}
{name} .question {{ text-style: bold; margin-bottom: 1; }}
{name} .detail {{ color: $text-muted; margin-bottom: 1; }}
{name} Horizontal {{ height: auto; align-horizontal: right; }}
{name} Button {{ margin-left: 1; }}
"""


class ConfirmQuit(ModalScreen[str]):
    """Unsaved changes: save and quit / quit without saving / stay. Dismisses with
    "save", "discard" or "cancel"."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="ConfirmQuit")
    BINDINGS = [
        Binding("escape", "dismiss('cancel')", "Stay", id="quit.cancel"),
        Binding("s", "dismiss('save')", "Save and quit", id="quit.save"),
        Binding("d", "dismiss('discard')", "Quit without saving", id="quit.discard"),
    ]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.path.name} has unsaved changes.", classes="question")
            yield Static("Save them before quitting?", classes="detail")
            with Horizontal():
                yield Button("Save and quit (s)", id="save", variant="primary")
                yield Button("Quit without saving (d)", id="discard", variant="error")
                yield Button("Stay (esc)", id="cancel")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")


class DiskChangedDialog(ModalScreen[str]):
    """The file changed under us. Dismisses with "reload", "merge" or "keep"."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="DiskChangedDialog")
    BINDINGS = [
        Binding("r", "dismiss('reload')", "Reload from disk", id="disk.reload"),
        Binding("m", "dismiss('merge')", "Merge", id="disk.merge"),
        Binding("k,escape", "dismiss('keep')", "Keep mine", id="disk.keep"),
    ]

    def __init__(self, path: Path, dirty: bool, problem: str = "") -> None:
        super().__init__()
        self.path, self.dirty, self.problem = path, dirty, problem

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.path.name} was changed by another program.", classes="question")
            if self.problem:
                yield Static(f"The new version does not load:\n{self.problem}", classes="detail")
            mine = "your unsaved edits stay available with undo" if self.dirty else "you have no unsaved edits"
            yield Static(f"Reload takes the version on disk ({mine}). Merge keeps your edits and takes the "
                         "other program's changes to everything you did not edit (yours win where both "
                         "changed one field). Keep mine leaves the file alone until you save, and that save "
                         "will replace the other program's changes.", classes="detail")
            with Horizontal():
                yield Button("Reload (r)", id="reload", variant="primary", disabled=bool(self.problem))
                yield Button("Merge (m)", id="merge", disabled=bool(self.problem))
                yield Button("Keep mine (k)", id="keep")

    def action_dismiss(self, result: str | None = None) -> None:  # type: ignore[override]
        if result in ("reload", "merge") and self.problem:
            return  # nothing loadable to reload or merge
        self.dismiss(result)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_dismiss(event.button.id or "keep")


class _MediaTree(DirectoryTree):
    def __init__(self, path: Path, suffixes: set[str], **kwargs: object) -> None:
        super().__init__(path, **kwargs)  # type: ignore[arg-type]
        self.suffixes = suffixes

    def filter_paths(self, paths):  # noqa: ANN001, ANN201 - DirectoryTree's signature
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in self.suffixes)]


class FilePicker(ModalScreen[str | None]):
    """Pick an image or video under the storyboard's folder; dismisses with a path
    relative to that folder (what the storyboard stores), or None."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="FilePicker") + """
    FilePicker _MediaTree { height: 20; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="picker.cancel")]

    def __init__(self, root: Path, kind: str) -> None:
        super().__init__()
        self.root, self.kind = root, kind

    def compose(self) -> ComposeResult:
        suffixes = IMAGE_SUFFIXES if self.kind == "image" else VIDEO_SUFFIXES
        with Vertical():
            yield Label(f"Choose the {self.kind} the shot starts from", classes="question")
            yield _MediaTree(self.root, suffixes)
            with Horizontal():
                yield Button("Cancel (esc)", id="cancel")

    @on(DirectoryTree.FileSelected)
    def _picked(self, event: DirectoryTree.FileSelected) -> None:
        try:
            rel = event.path.resolve().relative_to(self.root.resolve())
        except ValueError:
            rel = event.path.resolve()
        self.dismiss(str(rel))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
