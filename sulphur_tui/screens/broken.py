"""A storyboard that does not load: where and why, instead of a traceback.

The file is watched; as soon as it loads (fixed in another editor) the app switches to
the normal editor.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Static

from pipeline.project.files import read_regular
from pipeline.project.storyboard import MAX_STORYBOARD_BYTES, StoryboardError

CONTEXT_LINES = 3


def excerpt(path: Path, line: int, column: int) -> Text:
    """The lines around the error with a caret under the column."""
    if not line:  # no place to show (a FIFO, a folder, a missing file): never open it
        return Text("")
    try:
        lines = read_regular(path, MAX_STORYBOARD_BYTES).decode("utf-8", errors="replace").splitlines()
    except (OSError, ValueError):
        return Text("")
    out = Text()
    lo, hi = max(1, line - CONTEXT_LINES), min(len(lines), line + CONTEXT_LINES)
    width = len(str(hi))
    for n in range(lo, hi + 1):
        style = "bold" if n == line else "dim"
        out.append(f"{n:>{width}} │ ", "dim")
        out.append(lines[n - 1] + "\n", style)
        if n == line:
            out.append(" " * (width + 3 + max(0, column - 1)) + "^ here\n", "bold red")
    return out


class BrokenFileScreen(Screen[None]):
    BINDINGS = [
        Binding("r", "app.retry_load", "Try again", id="broken.retry"),
        Binding("ctrl+q", "app.quit", "Quit", id="broken.quit"),
    ]
    DEFAULT_CSS = """
    BrokenFileScreen > Vertical { padding: 1 2; }
    BrokenFileScreen #where { text-style: bold; color: $error; }
    BrokenFileScreen #what { margin: 1 0; }
    BrokenFileScreen #source { border: round $error; padding: 0 1; height: auto; }
    BrokenFileScreen #hint { color: $text-muted; margin-top: 1; }
    """

    def __init__(self, error: StoryboardError) -> None:
        super().__init__()
        self.error = error

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Label("", id="where")
            yield Static("", id="what")
            yield Static("", id="source")
            yield Static("Fix the file in any editor: this view reloads it as soon as it loads. "
                         "Nothing is written while it is broken.", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.show(self.error)

    def show(self, error: StoryboardError) -> None:
        self.error = error
        e = error
        where = f"{Path(e.path).name}:{e.line}:{e.column}" if e.line else Path(e.path).name
        self.query_one("#where", Label).update(f"This storyboard does not load — {where}")
        self.query_one("#what", Static).update(f"{e.key + ': ' if e.key else ''}{e.message}")
        src = excerpt(Path(e.path), e.line, e.column)
        self.query_one("#source", Static).update(src)
        self.query_one("#source", Static).display = bool(src.plain)
