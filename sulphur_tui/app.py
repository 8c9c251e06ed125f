"""``sulphur edit story.toml``: the storyboard editor with live render telemetry.

One factory, :func:`create_app`, builds the app for the CLI, the tests and the
benchmarks. Background work (NVML sampling, following the worker, submitting renders)
runs in thread workers that only post messages; widgets are touched on the UI thread.

Never imports torch: the only pipeline modules used are protocol, storyboard, client
and gpu (a test checks ``sys.modules``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Label, TextArea
from textual.worker import Worker, WorkerState

from pipeline.project.storyboard import Storyboard, StoryboardError
from pipeline.telemetry.gpu import GpuMonitor
from pipeline.wire.protocol import (
    ErrorEvent,
    Event,
    JobFinished,
    JobQueued,
    PlanFallback,
    SegmentDone,
    StageFinished,
    VramSample,
)
from sulphur_tui.commands import SulphurCommands
from sulphur_tui.document import NEW_PROMPT, Document, only_enhanced_prompts_differ
from sulphur_tui.live import LiveState
from sulphur_tui.messages import DocumentChanged, GpuSamples, WorkerConnection, WorkerEvent
from sulphur_tui.screens import (
    BrokenFileScreen,
    ConfirmQuit,
    DiskChangedDialog,
    FilePicker,
    HelpScreen,
    ProjectEdit,
    ProjectScreen,
)
from sulphur_tui.screens.takes import Take, TakesScreen
from sulphur_tui.sources import close_followers, follow_worker, paced, read_events
from sulphur_tui.status import (
    DiskRender,
    disk_states,
    output_path,
    remember_render,
    remember_stage_time,
    remembered_baseline,
    remembered_stage_times,
    segment_digest,
)
from sulphur_tui.widgets.editor import SegmentEditor
from sulphur_tui.widgets.flicker import FlickerPanel
from sulphur_tui.widgets.preview import PreviewPane, image_widget_class
from sulphur_tui.widgets.segments import SegmentList
from sulphur_tui.widgets.stages import StageTimers
from sulphur_tui.widgets.vram import GpuPanel, merge_samples

GPU_EVERY_S = 1.0
DISK_POLL_S = 1.0
RENDERS_POLL_S = 3.0


class SulphurApp(App[int]):
    """The editor. Build it with :func:`create_app`."""

    CSS_PATH = "app.tcss"
    TITLE = "Sulphur"
    COMMANDS = App.COMMANDS | {SulphurCommands}
    # Over SSH terminals are often 80 columns: the live panel narrows so the editor keeps room.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="save"),
        # ^z / ^y are what every editor uses: listed in F1 help, kept out of the footer so the
        # render keys fit 120 columns.
        Binding("ctrl+z", "undo", "Undo", id="undo", priority=True, show=False),
        Binding("ctrl+y", "redo", "Redo", id="redo", priority=True, show=False),
        Binding("f5", "render_all", "Render", id="render.all", tooltip="Render every shot that changed"),
        Binding("f6", "render_segment", "Render shot", id="render.segment"),
        Binding("f7", "render_from", "Render from", id="render.from", tooltip="Render this shot and every later one"),
        Binding("f8", "cancel_render", "Cancel", id="render.cancel"),
        Binding("ctrl+n", "add_segment", "Add shot", id="segment.add_anywhere", show=False),
        Binding("ctrl+r", "randomise_seed", "Randomise seed", id="segment.randomise", show=False),
        Binding("f2", "focus('segments')", "Shots", id="focus.segments", show=False),
        Binding("f3", "edit_prompt", "Prompt", id="focus.prompt", show=False),
        # Out of the footer (full at 120 columns): named on the Shots panel, in F1 help, the palette.
        Binding("f4", "project_settings", "Project settings", id="project.settings", show=False,
                tooltip="Frame rate, sizes, model preset, memory budgets, drift guard"),
        Binding("f1", "help", "Help", id="help"),
        # Textual's quit key, in F1 help and the palette; out of the footer so F1 fits 120
        # columns. Not a priority binding, so a screen's own visible ctrl+q (the broken-file
        # screen) shows in its footer; no widget here binds ctrl+q, so it always reaches us.
        Binding("ctrl+q", "quit", "Quit", id="quit", show=False),
    ]

    def __init__(self, storyboard_path: Path, *, gpu: GpuMonitor | None = None, connect_worker: bool = True,
                 replay: Path | None = None, replay_until: int | None = None, replay_speed: float = 0.0,
                 image: str = "halfblock", clock: Callable[[], float] | None = None,
                 poll_disk: float = DISK_POLL_S) -> None:
        super().__init__()
        self.path = Path(storyboard_path).resolve()
        self.gpu = gpu or GpuMonitor()
        self.connect_worker = connect_worker
        self.replay = Path(replay) if replay is not None else None
        self.replay_until, self.replay_speed = replay_until, replay_speed
        self.image_cls = image_widget_class(image) if image != "none" else None
        self._clock = clock
        self.poll_disk = poll_disk
        self.doc: Document | None = None
        self.load_error: StoryboardError | None = None
        self.live = LiveState()
        self.local_gpus: list[VramSample] = []
        self.gpu_reason = ""
        self.baseline: dict[str, str] = {}  # segment id -> digest when rendered
        self.renders: dict[str, DiskRender] = {}
        self.selected: str | None = None
        self.worker_detail = "not attached to a render worker"
        self._asking_disk = False
        self._over_broken = False
        self._stop = threading.Event()
        try:
            self.doc = Document(self.path)
        except StoryboardError as exc:
            self.load_error = exc

    # ------------------------------------------------------------------ layout
    def clock(self) -> float:
        """Wall time live; the newest event's time in a replay (so redraws are stable)."""
        if self._clock:
            return self._clock()
        return self.live.last_ts if self.replay else time.time()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield SegmentList(id="segments")
                yield SegmentEditor(id="editor")
            with Vertical(id="right"):
                yield GpuPanel(id="gpu")
                yield StageTimers(self.live, self.clock, id="stages")
                yield FlickerPanel(id="flicker")
                yield PreviewPane(self.image_cls, id="preview")
        yield Label("", id="statusline")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#segments").border_title = "Shots"
        self.query_one("#segments").border_subtitle = "F4 project settings"
        self.query_one("#editor").border_title = "Shot"
        self.query_one("#gpu").border_title = "GPU"
        self.query_one("#stages").border_title = "Render"
        self.query_one("#flicker").border_title = "Flicker · PSNR-Y dB"
        self.query_one("#preview").border_title = "Preview"
        # Background threads start after the first frame: their imports and NVML's
        # start-up would otherwise compete with it for the interpreter.
        self.call_after_refresh(self._sample_gpus)
        if self.doc is None:
            assert self.load_error is not None
            self.sub_title = self.path.name
            self.push_screen(BrokenFileScreen(self.load_error))
            self.set_interval(self.poll_disk, self._poll_broken)
            return
        self._start_document()

    def _start_document(self) -> None:
        assert self.doc is not None
        sb = self.doc.storyboard
        # What each render on disk was made from (status.py says how that is known).
        self.baseline = remembered_baseline(sb)
        if self.replay is None:  # a replay draws only what it replays
            for stage, runs in remembered_stage_times(sb).items():
                self.live.history.setdefault(stage, []).extend(runs)
        self.selected = sb.segments[0].id
        self.refresh_document(select=self.selected, editor=True)
        self.set_interval(self.poll_disk, self._poll_disk)
        self.set_interval(RENDERS_POLL_S, self._poll_renders)
        self.set_interval(0.5, self._tick)
        if self.replay is not None:
            self._start_replay()
        elif self.connect_worker:
            self.call_after_refresh(self._follow_worker)
        self.query_one(SegmentList).focus()

    _NEEDS_DOCUMENT = {"save", "undo", "redo", "render_all", "render_segment", "render_from", "add_segment",
                       "duplicate_segment", "delete_segment", "move_segment", "randomise_seed", "open_output",
                       "reload", "cancel_render", "pick_take"}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide editing actions while there is no loaded storyboard (broken-file view)."""
        if action in self._NEEDS_DOCUMENT and self.doc is None:
            return False
        return True

    # ------------------------------------------------------------------ drawing
    def refresh_document(self, select: str | None = None, editor: bool = False) -> None:
        """Redraw what depends on the storyboard value."""
        doc = self.doc
        if doc is None:
            return
        sb = doc.storyboard
        ids = [s.id for s in sb.segments]
        if select in ids:
            self.selected = select
        elif self.selected not in ids:
            self.selected = ids[0]
        self.renders = disk_states(sb, self.baseline)
        seglist = self.query_one(SegmentList)
        seglist.show(sb, self.renders, self.live.segments, select=self.selected, now=self.clock())
        if editor and self.selected:
            self.query_one(SegmentEditor).load(sb, self.selected)
        self.sub_title = f"{sb.project.title} — {doc.path.name}" + (" ● unsaved" if doc.dirty else "")
        self._draw_gpus()

    def _draw_gpus(self) -> None:
        budget = self.doc.storyboard.project.vram_budget_gb if self.doc else None
        samples = merge_samples(self.local_gpus, self.live.worker_gpus)
        for panel in self.query(GpuPanel):  # none while the app is shutting down
            panel.show(samples, budget, self.gpu_reason)

    def _draw_status(self) -> None:
        bits = [self.worker_detail]
        if self.live.log:
            bits.append(self.live.log[-1])
        self.query_one("#statusline", Label).update(" · ".join(bits))

    def refresh_live(self, areas: set[str]) -> None:
        if not areas or self.doc is None:
            return
        if "disk" in areas:
            self.renders = disk_states(self.doc.storyboard, self.baseline)
        if areas & {"segments", "disk"}:
            self.query_one(SegmentList).show(self.doc.storyboard, self.renders, self.live.segments,
                                             now=self.clock())
        if areas & {"timers", "jobs"}:
            self.query_one(StageTimers).refresh()
        if "flicker" in areas:
            self.query_one(FlickerPanel).show(self.live.flicker, [s.id for s in self.doc.storyboard.segments])
        if "vram" in areas:
            self._draw_gpus()
        if "preview" in areas and self.live.preview is not None:
            p = self.live.preview
            path = Path(p.path)
            if not path.is_absolute():  # the runner writes paths relative to the storyboard's folder
                path = self.doc.path.parent / path
            self.query_one(PreviewPane).show(path, f"{p.segment} · after {p.stage}")
        if "log" in areas:
            self._draw_status()
        if "enhanced" in areas:
            self._poll_disk()  # the worker wrote an enhanced prompt into the file

    def _tick(self) -> None:
        if self.live.running:
            self.query_one(StageTimers).refresh()

    # ------------------------------------------------------------------ background
    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False)
    def _sample_gpus(self) -> None:
        """NVML every second in a thread (driver calls can stall); one message per reading."""
        gpu = self.gpu
        if not gpu.available:  # the first call initialises NVML: slow on some machines
            self.post_message(GpuSamples([], gpu.reason))
            return
        while not self._stop.is_set():
            self.post_message(GpuSamples(gpu.sample()))
            self._stop.wait(GPU_EVERY_S)

    @on(GpuSamples)
    def _gpu_samples(self, message: GpuSamples) -> None:
        self.local_gpus = message.samples
        if not message.samples:
            self.gpu_reason = message.reason
        if self.doc is not None:
            self._draw_gpus()

    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def _follow_worker(self) -> None:
        assert self.doc is not None
        follow_worker(self.doc.path.parent, lambda ev: self.post_message(WorkerEvent(ev)),
                      lambda ok, detail: self.post_message(WorkerConnection(ok, detail)), self._stop)

    @work(thread=True, exclusive=True, group="replay", exit_on_error=False)
    def _replay_paced(self, events: list[Event]) -> None:
        for ev in paced(events, self.replay_speed, self._stop):
            self.post_message(WorkerEvent(ev))

    def _start_replay(self) -> None:
        assert self.replay is not None
        events = read_events(self.replay)
        if self.replay_until is not None:
            events = events[: self.replay_until]
        self.worker_detail = f"replaying {self.replay.name}"
        if self.replay_speed > 0:
            self._replay_paced(events)
        else:
            # Instant replay: fold everything now, draw once (snapshot tests).
            areas: set[str] = set()
            for ev in events:
                areas |= self.live.apply(ev)
            self.refresh_live(areas | {"segments", "timers", "flicker", "vram", "log"})
        self._draw_status()

    @on(WorkerEvent)
    def _worker_event(self, message: WorkerEvent) -> None:
        ev = message.event
        areas = self.live.apply(ev)
        if isinstance(ev, SegmentDone) and self.doc is not None:
            seg = ev.segment
            # Rendered from the saved file (renders always start from a saved file).
            if any(s.id == seg for s in self.doc.saved.segments):
                self.baseline[seg] = segment_digest(self.doc.saved, seg)
                remember_render(self.doc.saved, seg, self.baseline[seg])
        if isinstance(ev, StageFinished) and ev.segment and self.doc is not None and self.replay is None:
            remember_stage_time(self.doc.storyboard, ev.stage, ev.seconds)
        self.refresh_live(areas)
        self._announce(ev)

    def _announce(self, ev: Event) -> None:
        """The few events a user must not miss get a notification, not just a log line."""
        if self.replay is not None:
            return
        if isinstance(ev, ErrorEvent):
            where = "/".join(x for x in (ev.segment, ev.stage) if x) or "render"
            self.notify(ev.message, title=f"{where} failed ({ev.kind})", severity="error", timeout=20)
        elif isinstance(ev, PlanFallback):
            self.notify(f"{ev.segment}/{ev.stage}: out of memory with {ev.failed_plan}; retrying with "
                        f"{ev.next_plan}", title="Leaner memory plan", severity="warning", timeout=10)
        elif isinstance(ev, JobFinished):
            self.notify(Path(ev.path).name + f" in {ev.seconds:.0f} s", title="Render finished", timeout=6)

    @on(WorkerConnection)
    def _worker_connection(self, message: WorkerConnection) -> None:
        self.worker_detail = message.detail
        self._draw_status()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place background failures surface."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(f"{event.worker.name}: {event.worker.error}", title="Background task failed",
                        severity="error", timeout=8)

    # ------------------------------------------------------------------ disk
    def _poll_renders(self) -> None:
        if self.doc is not None:
            fresh = disk_states(self.doc.storyboard, self.baseline)
            if fresh != self.renders:
                self.renders = fresh
                self.refresh_live({"segments"})

    def _poll_disk(self) -> None:
        doc = self.doc
        if doc is None or self._asking_disk or not doc.disk_changed():
            return
        try:
            fresh = doc.read_disk()
            problem = ""
        except (StoryboardError, OSError) as exc:
            fresh, problem = None, str(exc)
        if fresh is not None and only_enhanced_prompts_differ(doc.saved, fresh):
            # The worker wrote enhanced prompts: take them unless the user edited the
            # same field since the last save (then it is a real conflict: ask).
            mine = {s.id: s for s in doc.storyboard.segments}
            clash = [s.id for s, old in zip(fresh.segments, doc.saved.segments, strict=True)
                     if s.enhanced_prompt != old.enhanced_prompt and s.id in mine
                     and mine[s.id].enhanced_prompt != old.enhanced_prompt]
            if not clash:
                self._adopt_enhanced(fresh)
                return
        self._asking_disk = True
        self.push_screen(DiskChangedDialog(doc.path, doc.dirty, problem), self._disk_answer)

    def _adopt_enhanced(self, fresh: Storyboard) -> None:
        doc = self.doc
        assert doc is not None
        # Only the prompts the worker rewrote: the others may carry the user's unsaved edits.
        new = {s.id: s.enhanced_prompt for s, old in zip(fresh.segments, doc.saved.segments, strict=True)
               if s.enhanced_prompt != old.enhanced_prompt}
        if not doc.dirty:
            doc.adopt_external(fresh)
        else:
            segs = tuple(replace(s, enhanced_prompt=new.get(s.id, s.enhanced_prompt)) for s in doc.storyboard.segments)
            mine = replace(doc.storyboard, segments=segs)
            doc.adopt_external(fresh)
            doc.storyboard = mine  # still dirty with the user's own edits, now on top of the new prompts
        self.refresh_document(editor=True)

    def _disk_answer(self, answer: str | None) -> None:
        self._asking_disk = False
        doc = self.doc
        if doc is None:
            return
        if answer == "reload":
            try:
                doc.reload()
            except StoryboardError as exc:
                self.notify(str(exc), title="Reload failed", severity="error")
                return
            self._over_broken = False
            self.refresh_document(editor=True)
            self.notify("Reloaded from disk" + (" (your edits are one undo away)" if doc.can_undo else ""))
        else:
            try:
                doc.read_disk()
                self._over_broken = False
            except (StoryboardError, OSError):
                self._over_broken = True
            doc.keep_mine()
            self.refresh_document()
            self.notify("Kept your version; saving will replace the file on disk.")

    def _poll_broken(self) -> None:
        """The broken-file view: open the editor as soon as the file loads."""
        if self.doc is not None:
            return
        try:
            self.doc = Document(self.path)
        except StoryboardError as exc:
            if str(exc) != str(self.load_error):
                self.load_error = exc
                if isinstance(self.screen, BrokenFileScreen):
                    self.screen.show(exc)
            return
        self.load_error = None
        if isinstance(self.screen, BrokenFileScreen):
            self.pop_screen()
        self.refresh_bindings()
        self._start_document()
        self.notify(f"{self.path.name} loads now.")

    def action_retry_load(self) -> None:
        self._poll_broken()

    # ------------------------------------------------------------------ editing
    @on(SegmentList.Selected)
    def _selected(self, event: SegmentList.Selected) -> None:
        editor = self.query_one(SegmentEditor)
        if self.doc is None or (event.segment_id == self.selected and editor.segment_id == event.segment_id):
            return
        self.selected = event.segment_id
        self.doc.break_coalescing()
        editor.load(self.doc.storyboard, event.segment_id)
        self._show_segment_frame(event.segment_id)

    def _show_segment_frame(self, segment_id: str) -> None:
        """Idle: the preview follows the selection (the runner keeps each shot's last
        frame); while rendering it follows the render."""
        if self.live.running or self.doc is None:
            return
        frame = self.doc.storyboard.render_dir() / "previews" / f"{segment_id}.png"
        if frame.exists():
            self.query_one(PreviewPane).show(frame, f"{segment_id} · last frame of its render")

    @on(SegmentEditor.Edited)
    def _edited(self, event: SegmentEditor.Edited) -> None:
        if self.doc is None:
            return
        if event.segment_id not in {s.id for s in self.doc.storyboard.segments}:
            return
        if self.doc.edit_segment(event.segment_id, coalesce=event.coalesce, **event.changes):
            self.post_message(DocumentChanged(reason="edit"))

    @on(DocumentChanged)
    def _document_changed(self, message: DocumentChanged) -> None:
        self.refresh_document(select=message.select, editor=message.reason != "edit")

    @on(SegmentEditor.BrowseAnchor)
    def _browse(self, event: SegmentEditor.BrowseAnchor) -> None:
        root = self.path.parent

        def picked(rel: str | None) -> None:
            if rel:
                self.query_one(SegmentEditor).set_anchor_path(event.kind, rel)

        self.push_screen(FilePicker(root, event.kind), picked)

    def _changed(self, select: str | None = None) -> None:
        self.post_message(DocumentChanged(select=select, reason="structure"))

    def action_add_segment(self) -> None:
        if self.doc:
            self._changed(self.doc.add_segment(self.selected))

    def action_duplicate_segment(self) -> None:
        if self.doc and self.selected:
            self._changed(self.doc.duplicate_segment(self.selected))

    def action_delete_segment(self) -> None:
        if self.doc and self.selected:
            nxt = self.doc.delete_segment(self.selected)
            if nxt is None:
                self.notify("A storyboard needs at least one shot.", severity="warning")
                return
            self.notify(f"Deleted {self.selected} (ctrl+z brings it back)")
            self._changed(nxt)

    def action_move_segment(self, delta: int) -> None:
        if self.doc and self.selected and self.doc.move_segment(self.selected, delta):
            self._changed(self.selected)

    def action_randomise_seed(self) -> None:
        if self.doc and self.selected:
            self.doc.randomise_seed(self.selected)
            self._changed(self.selected)

    def action_pick_take(self) -> None:
        """The takes of the selected shot (``sulphur takes``); the picked one becomes its seed + locked prompt."""
        if self.doc is None or not self.selected:
            return
        # The list's cursor, not self.selected: keys typed in a burst (tmux, SSH) run
        # this before the list's Selected message for the last cursor move arrives.
        seglist = self.query_one(SegmentList)
        rows = seglist.ordered_rows
        segment_id = str(rows[seglist.cursor_row].key.value) if 0 <= seglist.cursor_row < len(rows) else self.selected

        def picked(take: Take | None) -> None:
            if take is not None:
                self._use_take(segment_id, take)

        self.push_screen(TakesScreen(self.doc.storyboard, segment_id, self.image_cls), picked)

    def _use_take(self, segment_id: str, take: Take) -> None:
        doc = self.doc
        if doc is None or segment_id not in {s.id for s in doc.storyboard.segments}:
            return
        # Saving would also write the user's other unsaved edits: only do that when asked.
        others_unsaved = doc.dirty
        doc.break_coalescing()
        if not doc.edit_segment(segment_id, seed=take.seed, enhanced_prompt=take.prompt, enhance_lock=True):
            self.notify(f"{segment_id} already uses take {take.seed}.", timeout=3)
            return
        self._changed(segment_id)
        if others_unsaved:
            self.notify(f"{segment_id} uses take {take.seed} once saved (ctrl+s, with your other edits); "
                        "the next render continues from it.", title="Take picked")
        elif self.action_save():
            self.notify(f"{segment_id} now uses take {take.seed}: the next render continues from it.",
                        title="Take picked")
        else:
            self.notify(f"{segment_id} uses take {take.seed} in the editor, not yet on disk.",
                        title="Take picked", severity="warning")

    def action_project_settings(self) -> None:
        """The ``[project]`` form; what it returns is one undoable edit."""
        if self.doc is None:
            return

        def applied(edit: ProjectEdit | None) -> None:
            doc = self.doc
            if edit is None or doc is None:
                return
            doc.break_coalescing()
            changed = doc.apply(replace(doc.storyboard, project=edit.project), "edit project settings")
            if changed:
                self._changed()
            if edit.save:
                self.action_save()
            elif changed:
                self.notify("Every shot renders again with the new settings once saved (ctrl+s); "
                            "ctrl+z undoes.", title="Project settings changed", timeout=4)

        self.push_screen(ProjectScreen(self.doc.storyboard.project), applied)

    def action_undo(self) -> None:
        if self.doc is None:
            return
        label = self.doc.undo()
        if label is None:
            self.notify("Nothing to undo.", timeout=2)
        else:
            self._changed()

    def action_redo(self) -> None:
        if self.doc is None:
            return
        label = self.doc.redo()
        if label is None:
            self.notify("Nothing to redo.", timeout=2)
        else:
            self._changed()

    def action_save(self) -> bool:
        doc = self.doc
        if doc is None:
            return False
        if doc.disk_changed():
            self._poll_disk()  # ask first: never overwrite someone else's change silently
            return False
        try:
            doc.save(over_broken=self._over_broken)
        except StoryboardError as exc:
            self.notify(str(exc), title="Not saved", severity="error", timeout=10)
            return False
        except OSError as exc:
            self.notify(f"{exc}", title="Not saved", severity="error", timeout=10)
            return False
        self._over_broken = False
        self.refresh_document()
        self.notify(f"Saved {doc.path.name}", timeout=2)
        return True

    def action_reload(self) -> None:
        if self.doc is None:
            return
        try:
            self.doc.reload()
        except StoryboardError as exc:
            self.notify(str(exc), title="Reload failed", severity="error")
            return
        self.refresh_document(editor=True)

    def action_edit_prompt(self) -> None:
        """Focus the prompt, cursor at the end; a new shot's placeholder is selected so
        typing replaces it."""
        area = self.query_one("#prompt", TextArea)
        area.focus()
        if area.text == NEW_PROMPT:
            area.select_all()
        else:
            area.move_cursor(area.document.end)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self.doc is not None and self.doc.dirty:
            def answered(choice: str | None) -> None:
                if choice == "save" and self.action_save():
                    self.exit(0)
                elif choice == "discard":
                    self.exit(0)

            self.push_screen(ConfirmQuit(self.doc.path), answered)
            return
        self.exit(0)

    # ------------------------------------------------------------------ rendering
    def _render(self, mode: str, segments: list[str]) -> None:
        doc = self.doc
        if doc is None:
            return
        if doc.dirty and not self.action_save():
            self.notify("Save the storyboard first: renders read the file.", severity="warning")
            return
        sb = doc.storyboard
        ids = [s.id for s in sb.segments]
        if mode == "all":
            queued = ids
        elif mode == "from":
            queued = ids[ids.index(segments[0]):]
        else:
            queued = segments
        self._submit(mode, segments, queued)

    @work(thread=True, group="submit", exit_on_error=False)
    def _submit(self, mode: str, segments: list[str], queued: list[str]) -> None:
        from pipeline.worker.client import WorkerClient

        assert self.doc is not None
        self.call_from_thread(self._set_worker_detail, "starting the render worker…")
        with WorkerClient.connect(self.doc.path.parent, start=True, timeout=120.0) as client:
            job_id = client.submit(self.doc.path, mode=mode, segments=segments)
        # Show the queue at once; the worker's own JobQueued confirms it.
        self.post_message(WorkerEvent(JobQueued(job_id=job_id, storyboard=str(self.doc.path), segments=queued)))
        if self.connect_worker and self.replay is None:
            self.call_from_thread(self._ensure_following)

    def _set_worker_detail(self, detail: str) -> None:
        self.worker_detail = detail
        self._draw_status()

    def _ensure_following(self) -> None:
        running = [w for w in self.workers if w.group == "follow" and w.state == WorkerState.RUNNING]
        if not running:
            self._follow_worker()

    def action_render_all(self) -> None:
        self._render("all", [])

    def action_render_segment(self) -> None:
        if self.selected:
            self._render("segments", [self.selected])

    def action_render_from(self) -> None:
        if self.selected:
            self._render("from", [self.selected])

    def action_cancel_render(self) -> None:
        job = self.live.active_job()
        self._cancel(job.job_id if job else "")

    @work(thread=True, group="cancel", exit_on_error=False)
    def _cancel(self, job_id: str) -> None:
        from pipeline.worker.client import WorkerClient, WorkerNotRunning

        assert self.doc is not None
        try:
            with WorkerClient.connect(self.doc.path.parent, start=False, timeout=5.0) as client:
                client.cancel(job_id)
        except WorkerNotRunning:
            self.call_from_thread(self.notify, "No render is running.", timeout=3)

    def action_open_output(self) -> None:
        if self.doc is None:
            return
        target = output_path(self.doc.storyboard, self.selected)
        opener = _desktop_opener()
        if opener is None or not target.exists():
            self.notify(str(target), title="Output" if target.exists() else "Not rendered yet — output goes to",
                        timeout=10)
            return
        subprocess.Popen([opener, str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        self.notify(f"Opening {target.name}", timeout=3)

    # ------------------------------------------------------------------ exit
    def on_unmount(self) -> None:
        close_followers(self._stop)


def _desktop_opener() -> str | None:
    """xdg-open / open where a desktop can show the file; None over plain SSH."""
    if sys.platform == "darwin":
        return shutil.which("open")
    if os.environ.get("SSH_CONNECTION") and not os.environ.get("DISPLAY"):
        return None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    return shutil.which("xdg-open")


def create_app(storyboard_path: str | os.PathLike[str], **options: object) -> SulphurApp:
    """The app, as the CLI, the tests and the benchmarks build it (see SulphurApp.__init__)."""
    return SulphurApp(Path(storyboard_path), **options)  # type: ignore[arg-type]


def main(args: argparse.Namespace) -> int:
    """``sulphur edit FILE`` (``--serve`` is pipeline.cli.serve: token and Origin checks)."""
    path = Path(args.storyboard)
    # Half blocks by default (everywhere, SSH included, no start-up cost);
    # SULPHUR_TUI_IMAGES=auto lets textual-image probe for sixel / kitty graphics.
    image = os.environ.get("SULPHUR_TUI_IMAGES") or "halfblock"
    app = create_app(path, image=image)
    result = app.run()
    return int(result or 0)


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="python -m sulphur_tui.app")
    _p.add_argument("storyboard", type=Path)
    _p.add_argument("--replay", type=Path, default=None, help="draw a recorded event stream (JSONL)")
    _p.add_argument("--speed", type=float, default=1.0, help="replay speed (0: all at once)")
    _a = _p.parse_args()
    if _a.replay:
        sys.exit(int(create_app(_a.storyboard, replay=_a.replay, replay_speed=_a.speed).run() or 0))
    sys.exit(main(_a))
