"""The latest decoded frame, drawn in the terminal.

Drawing goes through textual-image; its half-cell renderer (two pixels per cell with
``▀`` and fg/bg colours) works over plain SSH, and a terminal that speaks sixel or the
kitty protocol gets real pixels when the app is started with the auto renderer.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label, Static

THUMB_WIDTH = 320


def image_widget_class(kind: str = "halfcell") -> type[Widget] | None:
    """The textual-image widget class to draw with; None when textual-image is missing.

    "auto" queries the terminal (sixel / kitty graphics) and must be called before the
    app starts, which is what ``main`` does.
    """
    try:
        if kind == "auto":
            from textual_image.widget import Image
        elif kind == "unicode":
            from textual_image.widget import UnicodeImage as Image
        else:
            from textual_image.widget import HalfcellImage as Image
    except ImportError:
        return None
    return Image


class PreviewPane(Vertical):
    """Caption + image; the caption says which segment and stage the frame is from."""

    DEFAULT_CSS = """
    PreviewPane { height: 1fr; min-height: 6; }
    PreviewPane > #preview-caption { color: $text-muted; height: 1; padding: 0 1; }
    PreviewPane > #preview-image { width: 1fr; height: auto; max-height: 100%; }
    PreviewPane > #preview-empty { color: $text-muted; padding: 0 1; height: 1fr; }
    """

    def __init__(self, image_cls: type[Widget] | None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.image_cls = image_cls
        self.path: Path | None = None

    def compose(self) -> ComposeResult:
        yield Label("", id="preview-caption")
        if self.image_cls is None:
            yield Static("Preview needs the textual-image package (pip install textual-image).",
                         id="preview-empty")
        else:
            yield Static("No frame yet: the preview follows the render.", id="preview-empty")
            image = self.image_cls(id="preview-image")
            image.display = False
            yield image

    def show(self, path: Path, caption: str) -> None:
        """Decode off the UI thread (a 1080p PNG takes tens of ms), then draw."""
        if self.image_cls is None:
            return
        self._load(path, caption)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self, path: Path, caption: str) -> None:
        try:
            from PIL import Image as PILImage

            with PILImage.open(path) as im:  # load now: the worker may overwrite the file
                frame = im.convert("RGB")
            # The terminal shows at most a few hundred pixels across: shrink once here
            # instead of at every redraw.
            frame.thumbnail((THUMB_WIDTH, THUMB_WIDTH))
        except (OSError, ValueError) as exc:
            self.app.call_from_thread(self._caption, f"Preview unreadable: {exc}")
            return
        self.app.call_from_thread(self._draw, path, frame, caption)

    def _caption(self, text: str) -> None:
        self.query_one("#preview-caption", Label).update(text)

    def _draw(self, path: Path, frame: object, caption: str) -> None:
        self.path = path
        image = self.query_one("#preview-image")
        image.image = frame  # type: ignore[attr-defined]
        image.display = True
        self.query_one("#preview-empty").display = False
        self.query_one("#preview-caption", Label).update(caption)
