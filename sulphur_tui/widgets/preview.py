"""The latest decoded frame, drawn in the terminal.

By default two pixels per cell with ``▀`` and fg/bg colours, which works over plain SSH
and costs nothing at start-up. ``SULPHUR_TUI_IMAGES=auto`` hands drawing to textual-image,
which probes the terminal and uses sixel or the kitty graphics protocol where offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Label, Static
from textual.worker import get_current_worker

# Deferred imports: textual_image, PIL — the preview panel draws pictures only in a terminal that can show them

THUMB_WIDTH = 320


class HalfBlockImage(Widget):
    """An RGB frame as ``▀`` cells: the top pixel is the foreground, the bottom one the
    background. Any 256/true-colour terminal shows it, over SSH too, and it needs no
    terminal probing (so it costs nothing at start-up, unlike graphics protocols)."""

    DEFAULT_CSS = """
    HalfBlockImage { width: 1fr; height: auto; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._image: Any = None
        self._cache: tuple[tuple[int, int], list[Strip]] | None = None

    @property
    def image(self) -> Any:
        return self._image

    @image.setter
    def image(self, value: Any) -> None:  # a PIL RGB image
        self._image, self._cache = value, None
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if self._image is None:
            return 0
        w, h = self._image.size
        rows = round(width * h / w / 2)  # cells are about twice as tall as wide
        return max(1, min(rows, container.height or rows))

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self._image is None or not width or not height:
            return Strip.blank(width)
        if self._cache is None or self._cache[0] != (width, height):
            self._cache = ((width, height), self._strips(width, height))
        strips = self._cache[1]
        return strips[y] if y < len(strips) else Strip.blank(width)

    def _strips(self, width: int, height: int) -> list[Strip]:
        small = self._image.resize((width, height * 2))
        px = small.load()
        strips = []
        for row in range(height):
            segs = []
            for x in range(width):
                top, bottom = px[x, 2 * row], px[x, 2 * row + 1]
                segs.append(Segment("▀", Style(color=Color.from_rgb(*top[:3]), bgcolor=Color.from_rgb(*bottom[:3]))))
            strips.append(Strip(segs, width))
        return strips


def image_widget_class(kind: str = "halfblock") -> type[Widget] | None:
    """The widget class that draws frames.

    "halfblock" (default) is :class:`HalfBlockImage`. "auto", "sixel", "tgp", "unicode"
    use textual-image; "auto" probes the terminal for sixel / kitty graphics and must be
    called before the app starts, which is what ``main`` does.
    """
    if kind in ("halfblock", "halfcell"):
        return HalfBlockImage
    try:
        if kind == "auto":
            from textual_image.widget import Image
        elif kind == "unicode":
            from textual_image.widget import UnicodeImage as Image
        elif kind == "tgp":
            from textual_image.widget import TGPImage as Image
        elif kind == "sixel":
            from textual_image.widget import SixelImage as Image
        else:
            return HalfBlockImage
    except ImportError:
        return HalfBlockImage
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
            yield Static("Previews are switched off.", id="preview-empty")
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

    def show_rgb(self, width: int, height: int, rgb: bytes, caption: str) -> None:
        """A small picture sent in an event (the sampler's latent): drawn at once."""
        if self.image_cls is None or len(rgb) != width * height * 3:
            return
        from PIL import Image as PILImage

        self.workers.cancel_group(self, "default")  # an older file must not draw over it
        self._draw(None, PILImage.frombytes("RGB", (width, height), rgb), caption)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self, path: Path, caption: str) -> None:
        try:
            from PIL import Image as PILImage

            with PILImage.open(path) as im:  # load now: the worker may overwrite the file
                frame = im.convert("RGB")
            # The terminal shows at most a few hundred pixels across: shrink once here
            # instead of at every redraw.
            frame.thumbnail((THUMB_WIDTH, THUMB_WIDTH))
        except FileNotFoundError:
            return  # not written here (a replay away from its render, a file since removed): no frame, no error
        except (OSError, ValueError) as exc:
            self.app.call_from_thread(self._caption, f"Preview unreadable: {exc}")
            return
        if not get_current_worker().is_cancelled:  # a newer frame was asked for meanwhile
            self.app.call_from_thread(self._draw, path, frame, caption)

    def _caption(self, text: str) -> None:
        self.query_one("#preview-caption", Label).update(text)

    def _draw(self, path: Path | None, frame: object, caption: str) -> None:
        if not self.query("#preview-image"):
            return  # the pane went (its screen closed) while the frame decoded
        self.path = path
        image = self.query_one("#preview-image")
        image.image = frame  # type: ignore[attr-defined]
        image.display = True
        self.query_one("#preview-empty").display = False
        self.query_one("#preview-caption", Label).update(caption)
