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
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from pipeline.project.files import real_target
from pipeline.project.storyboard import StoryboardError
from pipeline.telemetry.gpu import GpuMonitor
from pipeline.telemetry.host import HostSample, sample_host
from pipeline.wire.protocol import VramSample
from sulphur_tui.commands import SulphurCommands
from sulphur_tui.controllers import DiskWatcher, Editing, RenderControl
from sulphur_tui.document import Document
from sulphur_tui.keys import APP_BINDINGS
from sulphur_tui.live import LiveState
from sulphur_tui.messages import DocumentChanged, GpuSamples, WorkerConnection, WorkerEvent
from sulphur_tui.screens import BrokenFileScreen, ConfirmQuit, HelpScreen, TakesScreen
from sulphur_tui.screens.storyboard import StoryboardScreen
from sulphur_tui.sources import close_followers
from sulphur_tui.status import (
    DiskRender,
    remembered_baseline,
    remembered_flicker,
    remembered_outcome,
    remembered_stage_times,
)
from sulphur_tui.widgets.preview import image_widget_class
from sulphur_tui.widgets.segments import SegmentList

GPU_EVERY_S = 1.0
DISK_POLL_S = 1.0
RENDERS_POLL_S = 3.0


class SulphurApp(App[int]):
    """The editor: state, keys, background threads. Build it with :func:`create_app`.

    Drawing is the :class:`StoryboardScreen`'s; editing, the file on disk and render jobs
    are the controllers'; the actions here only route keys and palette entries to them.
    """

    CSS_PATH = "app.tcss"
    TITLE = "Sulphur"
    COMMANDS = App.COMMANDS | {SulphurCommands}
    # Over SSH terminals are often 80 columns: the live panel narrows so the editor keeps room.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = APP_BINDINGS  # sulphur_tui/keys.py: every key of the editor in one list

    def __init__(self, storyboard_path: Path, *, gpu: GpuMonitor | None = None, connect_worker: bool = True,
                 replay: Path | None = None, replay_until: int | None = None, replay_speed: float = 0.0,
                 image: str = "halfblock", clock: Callable[[], float] | None = None,
                 poll_disk: float = DISK_POLL_S, host: Callable[[], HostSample | None] | None = None) -> None:
        super().__init__()
        # realpath, not resolve(): a loop of symlinks is the broken-file view's to name, and
        # resolve() raises RuntimeError on one (Python 3.11)
        self.path = real_target(storyboard_path)
        self.gpu = gpu or GpuMonitor()
        self.connect_worker = connect_worker
        self._routed_on: weakref.WeakKeyDictionary[events.Key, Screen] = weakref.WeakKeyDictionary()
        self.replay = Path(replay) if replay is not None else None
        self.replay_until, self.replay_speed = replay_until, replay_speed
        self.image_cls = image_widget_class(image) if image != "none" else None
        self._clock = clock
        self.poll_disk = poll_disk
        self.doc: Document | None = None
        self.load_error: StoryboardError | None = None
        self.live = LiveState("" if self.replay is not None else str(self.path))
        self.local_gpus: list[VramSample] = []
        self.host: HostSample | None = None
        self.host_sampler = host or sample_host
        self.gpu_reason = ""
        self.baseline: dict[str, str] = {}  # segment id -> digest when rendered
        self.renders: dict[str, DiskRender] = {}
        self.selected: str | None = None
        self.worker_detail = "not attached to a render worker"
        self.stop_event = threading.Event()
        self.edits, self.disk, self.jobs = Editing(self), DiskWatcher(self), RenderControl(self)
        self.board = StoryboardScreen(id="storyboard")
        try:
            self.doc = Document(self.path)
        except StoryboardError as exc:
            self.load_error = exc

    def get_default_screen(self) -> Screen:
        return self.board

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own palette entries, less its "Quit" (it exits at once, unsaved edits
        and all): the palette's one "Quit" is ours, which asks."""
        return (c for c in super().get_system_commands(screen) if c.title != "Quit")

    def clock(self) -> float:
        """Wall time live; the newest event's time in a replay (so redraws are stable)."""
        if self._clock:
            return self._clock()
        return self.live.last_ts if self.replay else time.time()

    def begin(self) -> None:
        """The screen is up: start sampling, then the editor or the broken-file view."""
        # Background threads start after the first frame: their imports and NVML's
        # start-up would otherwise compete with it for the interpreter.
        self.call_after_refresh(self._sample_gpus)
        if self.doc is None:
            assert self.load_error is not None
            self.sub_title = self.path.name
            self.push_screen(BrokenFileScreen(self.load_error))
            self.set_interval(self.poll_disk, self.disk.poll_broken)
            return
        self.start_document()

    def start_document(self) -> None:
        assert self.doc is not None
        sb = self.doc.storyboard
        # What each render on disk was made from (status.py says how that is known).
        self.baseline = remembered_baseline(sb)
        if self.replay is None:  # a replay draws only what it replays
            for stage, runs in remembered_stage_times(sb).items():
                self.live.history.setdefault(stage, []).extend(runs)
            self.live.news = self.live.news or remembered_outcome(sb)  # the worker may have gone since
            for seg, (report, seam) in remembered_flicker(sb).items():  # the renders on disk, measured
                self.live.flicker.setdefault(seg, report)
                if seam is not None:
                    self.live.seams.setdefault(seg, seam)
            self.board.refresh_live({"flicker"})
        self.selected = sb.segments[0].id
        self.board.refresh_document(select=self.selected, editor=True)
        self.set_interval(self.poll_disk, self.disk.poll)
        self.set_interval(RENDERS_POLL_S, self.disk.poll_renders)
        self.set_interval(0.5, self.board.tick)
        self.jobs.start()
        self.board.draw_status()  # the remembered outcome, before any worker speaks
        self.board.query_one(SegmentList).focus()

    _NEEDS_DOCUMENT = {"save", "undo", "redo", "render_all", "render_segment", "render_from", "add_segment",
                       "duplicate_segment", "delete_segment", "move_segment", "randomise_seed", "open_output",
                       "reload", "merge_disk", "cancel_render", "pick_take", "rename_segment"}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide editing actions while there is no loaded storyboard (broken-file view)."""
        if action in self._NEEDS_DOCUMENT and self.doc is None:
            return False
        return True

    # ------------------------------------------------------------------ background
    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False)
    def _sample_gpus(self) -> None:
        """NVML and the host's RAM and CPU every second in a thread (driver calls can stall);
        one message per reading. The first NVML call initialises it: slow on some machines."""
        gpu, ok = self.gpu, self.gpu.available
        while not self.stop_event.is_set():
            host = self.host_sampler()
            self.post_message(GpuSamples(gpu.sample() if ok else [], "" if ok else gpu.reason, host))
            if not ok and host is None:
                return  # nothing that changes: one message says so
            self.stop_event.wait(GPU_EVERY_S)

    @on(GpuSamples)
    def _gpu_samples(self, message: GpuSamples) -> None:
        self.local_gpus, self.host = message.samples, message.host
        if not message.samples:
            self.gpu_reason = message.reason
        if self.doc is not None:
            self.board.draw_gpus()

    @on(WorkerEvent)
    def _worker_event(self, message: WorkerEvent) -> None:
        self.jobs.on_event(message.event, message.history)

    @on(TakesScreen.Render)
    def _render_takes(self, message: TakesScreen.Render) -> None:
        self.jobs.render_takes(message.segment, message.seeds)

    @on(WorkerConnection)
    def _worker_connection(self, message: WorkerConnection) -> None:
        if not message.connected:
            self.board.refresh_live(self.live.worker_lost())
        self.jobs.set_worker_detail(message.detail)

    @on(DocumentChanged)
    def _document_changed(self, message: DocumentChanged) -> None:
        self.board.refresh_document(select=message.select, editor=message.reason != "edit")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place background failures surface."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(f"{event.worker.name}: {event.worker.error}", title="Background task failed",
                        severity="error", timeout=8)

    def _poll_disk(self) -> None:
        self.disk.poll()

    def on_unmount(self) -> None:
        close_followers(self.stop_event)

    async def on_event(self, event: events.Event) -> None:
        """Keys typed in a burst (tmux send-keys, a paste over SSH) are all routed to the widget
        focused when they arrive; the first may open a dialog (``n``: rename) before the others
        come back up to the app, whose bindings then look at the dialog: they were lost, or ran
        the wrong thing. A key that comes back to another screen than the one it was routed on
        is sent again, to the screen now on top."""
        if isinstance(event, events.Key):
            if not event.is_forwarded:
                self._routed_on[event] = self.screen
            elif self._routed_on.get(event, self.screen) is not self.screen:
                self.post_message(events.Key(event.key, event.character))
                return
        await super().on_event(event)

    # ------------------------------------------------------------------ actions (keys and palette)
    def action_save(self) -> bool:
        return self.edits.save()

    def action_undo(self) -> None:
        self.edits.undo()

    def action_redo(self) -> None:
        self.edits.redo()

    def action_reload(self) -> None:
        self.edits.reload()

    def action_merge_disk(self) -> None:
        self.disk.merge()

    def action_retry_load(self) -> None:
        self.disk.poll_broken()

    def action_add_segment(self) -> None:
        self.edits.add_segment()

    def action_duplicate_segment(self) -> None:
        self.edits.duplicate_segment()

    def action_delete_segment(self) -> None:
        self.edits.delete_segment()

    def action_move_segment(self, delta: int) -> None:
        self.edits.move_segment(delta)

    def action_randomise_seed(self) -> None:
        self.edits.randomise_seed()

    def action_pick_take(self) -> None:
        self.edits.pick_take()

    def action_rename_segment(self) -> None:
        self.edits.rename_segment()

    def action_project_settings(self) -> None:
        self.edits.project_settings()

    def action_edit_prompt(self) -> None:
        self.edits.edit_prompt()

    def action_edit_prompt_outside(self) -> None:
        self.edits.edit_prompt_outside()

    def action_open_output(self) -> None:
        self.edits.open_output()

    def action_render_all(self) -> None:
        self.jobs.render("all", [])

    def action_render_segment(self) -> None:
        if self.selected:
            self.jobs.render("segments", [self.selected])

    def action_render_from(self) -> None:
        if self.selected:
            self.jobs.render("from", [self.selected])

    def action_cancel_render(self) -> None:
        self.jobs.cancel()

    def action_filter_shots(self) -> None:
        self.board.action_filter_shots()

    def action_toggle_log(self) -> None:
        self.board.toggle_log()

    def action_toggle_view(self) -> None:
        self.board.toggle_view()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self.doc is not None and self.doc.dirty:
            def answered(choice: str | None) -> None:
                if choice == "save":
                    self._save_and_quit()
                elif choice == "discard":
                    self.exit(0)

            self.push_screen(ConfirmQuit(self.doc.path), answered)
            return
        self.exit(0)


    def _save_and_quit(self) -> None:
        """Save, then quit. A file changed on disk is asked about first; whatever the answer
        (reload, merge, keep mine), the save and the quit follow it, as the user asked."""
        if self.doc is None or not self.doc.dirty or self.action_save():
            self.exit(0)
        elif self.disk.asking:
            self.disk.then = self._save_and_quit


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
        if not _a.replay.is_file():
            _p.exit(2, f"error: {_a.replay}: no such recording\n")
        sys.exit(int(create_app(_a.storyboard, replay=_a.replay, replay_speed=_a.speed).run() or 0))
    sys.exit(main(_a))
