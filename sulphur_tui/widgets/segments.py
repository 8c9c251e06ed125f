"""The list of shots: id, first words of the prompt, length, render status."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from pipeline.project.storyboard import Segment, Storyboard
from sulphur_tui.live import SegmentLive
from sulphur_tui.status import DiskRender, segment_digest


def first_words(text: str, limit: int = 28) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def ago(mtime: float | None, now: float | None = None) -> str:
    """``now``, ``5m ago``, ``3h ago``, ``04 Dec``: at most 7 cells, so the column is never cut."""
    if mtime is None:
        return ""
    d = max(0.0, (now or time.time()) - mtime)
    if d < 60:
        return "now"
    if d < 3600:
        return f"{int(d // 60)}m ago"
    if d < 86400:
        return f"{int(d // 3600)}h ago"
    return time.strftime("%d %b", time.localtime(mtime))


def status_of(live: SegmentLive | None, disk: DiskRender | None, edited: bool = False) -> tuple[str, str]:
    """(glyph text, component class) — live state wins over what is on disk, except a failure
    the shot was ``edited`` since (the fix is not yet rendered: the row says what is on disk)."""
    if live and live.state == "rendering":
        return f"▶ {live.progress * 100:3.0f}%", "rendering"
    if live and live.state == "takes":  # takes of it render; the shot's own files are untouched
        return "▶ takes", "rendering"  # their progress is the takes screen's (t)
    if live and live.state == "queued":
        return "◷ queued", "queued"
    if live and live.state == "failed" and not edited:
        return "✖ failed", "failed"
    if disk and disk.rendered and disk.stale:
        return "◐ stale", "stale"
    if (disk and disk.rendered) or (live and live.state == "done"):
        return "● rendered", "rendered"
    return "○ new", "new"


_MOVE = Binding.Group("Move", compact=True)


class SegmentList(DataTable):
    """One row per shot. Edits are app actions, so the palette and keys share them."""

    BINDINGS = [
        Binding("a", "app.add_segment", "Add", id="segment.add"),
        Binding("c", "app.duplicate_segment", "Copy", id="segment.duplicate"),
        Binding("delete,x", "app.delete_segment", "Delete", id="segment.delete"),
        # Moving is in F1 help and the palette; the footer keeps room for the render keys.
        Binding("shift+up,K", "app.move_segment(-1)", "Move up", id="segment.move_up", group=_MOVE,
                key_display="⇧↑", show=False),
        Binding("shift+down,J", "app.move_segment(1)", "Move down", id="segment.move_down", group=_MOVE,
                key_display="⇧↓", show=False),
        Binding("t", "app.pick_take", "Takes", id="segment.takes"),
        Binding("n", "app.rename_segment", "Rename", id="segment.rename",
                tooltip="A new id for the shot (and its rendered files)"),
        # lazygit / k9s habits; the arrows, Home and End do the same.
        Binding("j", "cursor_down", "Next shot", id="segment.next", show=False),
        Binding("k", "cursor_up", "Previous shot", id="segment.previous", show=False),
        Binding("g", "scroll_top", "First shot", id="segment.first", show=False),
        Binding("G", "scroll_bottom", "Last shot", id="segment.last", show=False),
        Binding("o", "app.open_output", "Open output", id="segment.open_output", show=False),
        Binding("e", "app.edit_prompt_outside", "Prompt in $EDITOR", id="segment.editor", show=False),
        Binding("slash", "app.filter_shots", "Filter shots", id="segment.filter", show=False),
    ]
    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {
        "segment-list--rendered",
        "segment-list--stale",
        "segment-list--queued",
        "segment-list--rendering",
        "segment-list--failed",
        "segment-list--new",
        "segment-list--dim",
    }
    DEFAULT_CSS = """
    SegmentList > .segment-list--rendered { color: $success; }
    SegmentList > .segment-list--stale { color: $warning; }
    SegmentList > .segment-list--queued { color: $secondary; }
    SegmentList > .segment-list--rendering { color: $accent; text-style: bold; }
    SegmentList > .segment-list--failed { color: $error; text-style: bold; }
    SegmentList > .segment-list--new { color: $text-muted; }
    SegmentList > .segment-list--dim { color: $text-muted; }
    """

    @dataclass
    class Selected(Message):
        """The highlighted shot changed (cursor, mouse or an edit that moved it)."""

        segment_list: SegmentList
        segment_id: str

        @property
        def control(self) -> SegmentList:
            return self.segment_list

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.selected_id: str | None = None
        self._shown: tuple | None = None  # the last show()'s arguments, to redraw on resize
        self._prompt_width = 0
        self.filter_words: list[str] = []

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        self.add_column("status", key="status", width=10)
        self.add_column("id", key="id")
        self.add_column("prompt", key="prompt")
        self.add_column("length", key="length")
        self.add_column("rendered", key="rendered", width=8)

    def show(self, sb: Storyboard, disk: dict[str, DiskRender], live: dict[str, SegmentLive],
             select: str | None = None, now: float | None = None) -> None:
        """Redraw every row (a storyboard has tens of shots, not thousands)."""
        style = self.get_component_rich_style
        self._shown = (sb, disk, live, None, now)
        want = select or self.selected_id
        shown = [s for s in sb.segments if self._matches(s)]
        ids = [s.id for s in shown]
        prompt_cells = self._prompt_cells(ids)
        rows = []
        for seg in shown:
            lv = live.get(seg.id)
            edited = bool(lv and lv.state == "failed" and lv.failed_digest
                          and lv.failed_digest != segment_digest(sb, seg.id))
            glyph, cls = status_of(lv, disk.get(seg.id), edited)
            length = f"{seg.seconds:g} s" if seg.seconds is not None else f"{seg.frame_count(sb.project.fps)} f"
            d = disk.get(seg.id)
            when = d.mtime if d and d.mtime else (lv.finished_at if lv else None)
            rows.append((Text(glyph, style(f"segment-list--{cls}")), Text(seg.id, "bold"),
                         first_words(seg.prompt, prompt_cells), Text(length, style("segment-list--dim")),
                         Text(ago(when, now), style("segment-list--dim"))))
        current = [str(k.value) for k in self.rows]
        if current == ids and prompt_cells == self._prompt_width:
            for sid, row in zip(ids, rows, strict=True):
                for col, value in zip(("status", "id", "prompt", "length", "rendered"), row, strict=True):
                    self.update_cell(sid, col, value)
        else:  # a column's width is set when rows are added: rebuild when it must change
            self._prompt_width = prompt_cells
            self.clear(columns=True)  # a column keeps the widest cell it ever had: start afresh
            self._add_columns()
            for sid, row in zip(ids, rows, strict=True):
                self.add_row(*row, key=sid)
        if want in ids:
            index = ids.index(want)
            if self.cursor_row != index:
                self.move_cursor(row=index)
        self.selected_id = ids[self.cursor_row] if ids and 0 <= self.cursor_row < len(ids) else None

    def set_filter(self, text: str) -> None:
        """Show only the shots whose id or prompt holds every word of ``text`` (any case)."""
        self.filter_words = text.lower().split()
        self.border_subtitle = f"/ {text.strip()}" if self.filter_words else "F4 project settings"
        if self._shown is not None:
            self.show(*self._shown)

    def _matches(self, seg: Segment) -> bool:
        hay = f"{seg.id} {seg.prompt}".lower()
        return all(word in hay for word in self.filter_words)

    def _prompt_cells(self, ids: list[str]) -> int:
        """The prompt column takes what the others leave, so the rendered column is never cut
        (each column has a cell of padding on either side)."""
        width = self.size.width or 60
        others = (10 + 2) + (max(map(len, ids), default=2) + 2) + 2 + (6 + 2) + (8 + 2)
        return max(12, min(80, width - others))

    def on_resize(self) -> None:
        if self._shown is not None:
            self.show(*self._shown)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        sid = str(event.row_key.value)
        self.selected_id = sid
        self.post_message(self.Selected(self, sid))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        # Enter on a row jumps to its prompt.
        event.stop()
        self.app.action_edit_prompt()  # type: ignore[attr-defined]
