"""The editor's main screen: shots and the shot form on the left, the live render
panels (GPU, stage timers, flicker, preview) on the right, a status line, the footer.

It draws from the app's state (the document, the live reducer, the render folder)
and turns the widgets' own messages into document edits; it starts nothing itself.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events, on
from textual.app import ComposeResult
from textual.binding import ActiveBinding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Tab, Tabs

from sulphur_tui.messages import DocumentChanged
from sulphur_tui.screens.dialogs import FilePicker
from sulphur_tui.status import disk_states
from sulphur_tui.widgets.editor import SegmentEditor
from sulphur_tui.widgets.flicker import FlickerPanel
from sulphur_tui.widgets.joblog import JobLog
from sulphur_tui.widgets.preview import PreviewPane
from sulphur_tui.widgets.segments import SegmentList
from sulphur_tui.widgets.stages import StageTimers
from sulphur_tui.widgets.vram import GpuPanel, merge_samples

if TYPE_CHECKING:
    from sulphur_tui.app import SulphurApp

NARROW_HIDDEN = {"segment.duplicate", "segment.delete", "segment.rename"}
#: Below this many columns the footer drops the padding between keys (every key fits 120).
COMPACT_BELOW = 130
TITLES = {"joblog": "Job log · ctrl+l hides", "segments": "Shots", "editor": "Shot", "gpu": "GPU", "stages": "Render",
          "flicker": "Flicker · PSNR-Y dB", "preview": "Preview"}


class StoryboardScreen(Screen[None]):
    """The app's default screen (also under the broken-file view, empty until the file loads)."""

    app: SulphurApp  # type: ignore[assignment]
    _unmounted_areas: frozenset[str] = frozenset()  # redraws asked for before on_mount ran
    _composed = False  # on_mount has started: the widgets exist

    def compose(self) -> ComposeResult:
        yield Header()
        yield Tabs(Tab("Shots", id="tab-shots"), Tab("Render  f9", id="tab-live"), id="views")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Input(placeholder="filter shots: words of their id or prompt · esc clears", id="shot-filter",
                            compact=True)
                yield SegmentList(id="segments")
                yield SegmentEditor(id="editor")
            with Vertical(id="right"):
                yield GpuPanel(id="gpu")
                yield StageTimers(self.app.live, self.app.clock, id="stages")
                yield FlickerPanel(id="flicker")
                yield PreviewPane(self.app.image_cls, id="preview")
        yield JobLog(id="joblog")
        yield Label("", id="statusline")
        yield Footer()

    def on_mount(self) -> None:
        for widget_id, title in TITLES.items():
            self.query_one(f"#{widget_id}").border_title = title
        self.query_one("#segments").border_subtitle = "F4 project settings"
        self._composed = True
        self.app.begin()
        if self._unmounted_areas:
            areas, self._unmounted_areas = set(self._unmounted_areas), frozenset()
            self.refresh_live(areas)

    # ------------------------------------------------------------------ narrow terminals
    def on_resize(self, event: events.Resize) -> None:
        """Below 130 columns the footer drops its padding so every key of the shot list, the
        render keys and F1 stay in it at 120; below 100 it also hides a few (active_bindings)."""
        narrow = event.size.width < 100
        footer = self.query_one(Footer)
        footer.compact = event.size.width < COMPACT_BELOW
        footer.show_command_palette = not narrow
        self.refresh_bindings()

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """What the footer lists: below 100 columns without copy, delete and rename (their keys
        still work; F1 and the palette list them), so F5–F8 and F1 fit 80 columns."""
        bindings = super().active_bindings
        if self.size.width >= 100:
            return bindings
        return {key: (b._replace(binding=replace(b.binding, show=False)) if b.binding.id in NARROW_HIDDEN else b)
                for key, b in bindings.items()}

    def toggle_log(self) -> None:
        self.toggle_class("-log")

    def toggle_view(self) -> None:
        tabs = self.query_one("#views", Tabs)
        tabs.active = "tab-shots" if tabs.active == "tab-live" else "tab-live"

    @on(Tabs.TabActivated, "#views")
    def _view_chosen(self, event: Tabs.TabActivated) -> None:
        self.set_class(event.tab.id == "tab-live", "-live")
        if event.tab.id == "tab-shots":
            self.query_one(SegmentList).focus()

    # ------------------------------------------------------------------ drawing
    def refresh_document(self, select: str | None = None, editor: bool = False) -> None:
        """Redraw what depends on the storyboard value."""
        app = self.app
        doc = app.doc
        if doc is None or not self._widgets_alive():
            return
        sb = doc.storyboard
        ids = [s.id for s in sb.segments]
        if select in ids:
            app.selected = select
        elif app.selected not in ids:
            app.selected = ids[0]
        app.renders = disk_states(sb, app.baseline)
        seglist = self.query_one(SegmentList)
        seglist.show(sb, app.renders, app.live.segments, select=app.selected, now=app.clock())
        if editor and app.selected:
            self.query_one(SegmentEditor).load(sb, app.selected)
        app.sub_title = f"{sb.project.title} — {doc.path.name}" + (" ● unsaved" if doc.dirty else "")
        self.draw_gpus()

    def draw_gpus(self) -> None:
        app = self.app
        project = app.doc.storyboard.project if app.doc else None
        samples = merge_samples(app.local_gpus, app.live.worker_gpus)
        for panel in self.query(GpuPanel):  # none while the app is shutting down
            panel.show(samples, project.vram_budget_gb if project else None, app.gpu_reason)
            panel.show_host(app.host, project.ram_budget_gb if project else None)

    def _widgets_alive(self) -> bool:
        """False once the app closes: its widgets are gone while worker events, the worker
        link's news and disk polls still arrive."""
        return bool(self.query("#statusline"))

    def draw_status(self) -> None:
        app = self.app
        if not self._widgets_alive():
            return
        bits = [app.worker_detail]
        if app.live.news:
            news = app.live.news
            if app.doc is not None:  # the worker names files by absolute path
                news = news.replace(f"{app.doc.path.parent}{os.sep}", "")
            bits.append(news)
        if elsewhere := app.live.elsewhere_line():
            bits.append(elsewhere)
        self.query_one("#statusline", Label).update(" · ".join(bits))

    def refresh_live(self, areas: set[str]) -> None:
        """Redraw the areas the live reducer says changed (held until the screen is mounted:
        a worker's first events can arrive before it is)."""
        if not self._composed:
            self._unmounted_areas = self._unmounted_areas | areas
            return
        app = self.app
        if not areas or app.doc is None or not self._widgets_alive():
            return
        sb = app.doc.storyboard
        if "disk" in areas:
            app.renders = disk_states(sb, app.baseline)
        if areas & {"segments", "disk"}:
            self.query_one(SegmentList).show(sb, app.renders, app.live.segments, now=app.clock())
        if areas & {"timers", "jobs"}:
            self.query_one(StageTimers).redraw()
        if "flicker" in areas:
            self.query_one(FlickerPanel).show(app.live.flicker, [s.id for s in sb.segments], app.live.seams)
        if "vram" in areas:
            self.draw_gpus()
        if "preview" in areas and app.live.preview is not None:
            p = app.live.preview
            path = Path(p.path)
            if not path.is_absolute():  # the runner writes paths relative to the storyboard's folder
                path = app.doc.path.parent / path
            self.query_one(PreviewPane).show(path, f"{p.segment} · after {p.stage}")
        if "latent" in areas and app.live.latent is not None:
            lp = app.live.latent
            timer = app.live.timers.get(lp.stage)
            of = f"/{timer.total}" if timer is not None and timer.total and lp.segment == app.live.timer_segment else ""
            # "latent": no decoder ran; the colours are a projection (F1 says so)
            self.query_one(PreviewPane).show_rgb(lp.width, lp.height, lp.rgb,
                                                 f"{lp.segment} · {lp.stage} step {lp.step}{of} · latent")
        if "journal" in areas:
            self.query_one(JobLog).catch_up(app.live, app.doc.path.parent)
        if "log" in areas:
            self.draw_status()
        if "enhanced" in areas:
            app.disk.poll()  # the worker wrote an enhanced prompt into the file

    def tick(self) -> None:
        if self.app.live.running:
            for timers in self.query(StageTimers):  # none while the app shuts down
                timers.redraw()

    def show_segment_frame(self, segment_id: str) -> None:
        """Idle: the preview follows the selection (the runner keeps each shot's last
        frame); while rendering it follows the render."""
        app = self.app
        if app.live.running or app.doc is None:
            return
        frame = app.doc.storyboard.render_dir() / "previews" / f"{segment_id}.png"
        if frame.exists():
            self.query_one(PreviewPane).show(frame, f"{segment_id} · last frame of its render")

    # ------------------------------------------------------------------ filtering the shots
    def action_filter_shots(self) -> None:
        """/ : a filter line above the shots; typing narrows the list, Enter goes back to it."""
        field = self.query_one("#shot-filter", Input)
        field.display = True
        field.focus()

    @on(Input.Changed, "#shot-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(SegmentList).set_filter(event.value)

    @on(Input.Submitted, "#shot-filter")
    def _filter_done(self) -> None:
        self.query_one(SegmentList).focus()

    def on_key(self, event: events.Key) -> None:
        field = self.query_one("#shot-filter", Input)
        if event.key == "escape" and field.display and (self.focused is field or field.value):
            event.stop()
            field.value = ""
            field.display = False
            self.query_one(SegmentList).focus()

    @property
    def field_problem(self) -> str:
        """The shot form's bad field, if any (see :attr:`SegmentEditor.problem`)."""
        editors = self.query(SegmentEditor)
        return editors.first().problem if editors else ""

    # ------------------------------------------------------------------ the widgets' messages
    @on(SegmentList.Selected)
    def _selected(self, event: SegmentList.Selected) -> None:
        app = self.app
        editor = self.query_one(SegmentEditor)
        if app.doc is None or (event.segment_id == app.selected and editor.segment_id == event.segment_id):
            return
        app.selected = event.segment_id
        app.doc.break_coalescing()
        editor.load(app.doc.storyboard, event.segment_id)
        self.show_segment_frame(event.segment_id)

    @on(SegmentEditor.Edited)
    def _edited(self, event: SegmentEditor.Edited) -> None:
        doc = self.app.doc
        if doc is None or event.segment_id not in {s.id for s in doc.storyboard.segments}:
            return
        if doc.edit_segment(event.segment_id, coalesce=event.coalesce, **event.changes):
            self.app.post_message(DocumentChanged(reason="edit"))

    @on(SegmentEditor.BrowseAnchor)
    def _browse(self, event: SegmentEditor.BrowseAnchor) -> None:
        def picked(rel: str | None) -> None:
            if rel:
                self.query_one(SegmentEditor).set_anchor_path(event.kind, rel)

        self.app.push_screen(FilePicker(self.app.path.parent, event.kind), picked)
