"""Render jobs: submit and cancel them, follow the worker's events, replay recordings.

The only module of the editor that talks to the render worker, and only through
``pipeline.worker.client`` (imported where used: it is not needed to draw the editor).
Background threads post :class:`WorkerEvent` messages; the app hands each one back to
:meth:`RenderControl.on_event` on the UI thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.worker import WorkerState

from pipeline.project.storyboard import StoryboardError, unknown_presets
from pipeline.wire.protocol import (
    FINISHED,
    ErrorEvent,
    Event,
    FlickerReport,
    JobCancelled,
    JobFinished,
    JobQueued,
    JobStarted,
    PlanFallback,
    SegmentDone,
    StageFinished,
    StatusSnapshot,
)
from pipeline.worker.client import WorkerClient, WorkerError, WorkerNotRunning
from sulphur_tui.messages import WorkerConnection, WorkerEvent
from sulphur_tui.screens.takes import TakesScreen
from sulphur_tui.sources import follow_worker, paced, read_events
from sulphur_tui.status import (
    remember_flicker,
    remember_outcome,
    remember_render,
    remember_stage_time,
    segment_digest,
)

if TYPE_CHECKING:
    from sulphur_tui.app import SulphurApp
    from sulphur_tui.document import Document


#: The events the editor takes notes of (see RenderControl._note).
_NOTED = (JobQueued, JobStarted, SegmentDone, ErrorEvent, FlickerReport, StageFinished, JobFinished, JobCancelled,
          StatusSnapshot)


class RenderControl:
    """The editor's side of the render worker."""

    def __init__(self, app: SulphurApp) -> None:
        self.app = app
        self._submitted: dict[str, dict[str, str]] = {}  # job id → its shots' digests when submitted
        self._told: set[str] = set()  # jobs whose failure was notified
        self._told_presets: set[str] = set()  # unknown presets already named in a notification

    # ------------------------------------------------------------------ following
    def start(self) -> None:
        """Replay a recording, or follow the worker of this project if one runs."""
        app = self.app
        if app.replay is not None:
            self.start_replay()
        elif app.connect_worker:
            app.call_after_refresh(self.follow)

    def follow(self) -> None:
        self.app.run_worker(self._follow, name="_follow_worker", group="follow", exclusive=True, thread=True,
                            exit_on_error=False)

    def _follow(self) -> None:
        app = self.app
        assert app.doc is not None
        follow_worker(app.doc.path.parent, lambda ev, history=False: app.post_message(WorkerEvent(ev, history)),
                      lambda ok, detail: app.post_message(WorkerConnection(ok, detail)), app.stop_event)

    def ensure_following(self) -> None:
        running = [w for w in self.app.workers if w.group == "follow" and w.state == WorkerState.RUNNING]
        if not running:
            self.follow()

    def start_replay(self) -> None:
        app = self.app
        assert app.replay is not None
        events = read_events(app.replay)
        if app.replay_until is not None:
            events = events[: app.replay_until]
        app.worker_detail = f"replaying {app.replay.name}"
        if app.replay_speed > 0:
            app.run_worker(lambda: self._replay_paced(events), name="_replay_paced", group="replay",
                           exclusive=True, thread=True, exit_on_error=False)
        else:
            # Instant replay: fold everything now, draw once (snapshot tests).
            areas: set[str] = set()
            for ev in events:
                areas |= app.live.apply(ev)
            app.board.refresh_live(areas | {"segments", "timers", "flicker", "vram", "log"})
        app.board.draw_status()

    def _replay_paced(self, events: list[Event]) -> None:
        for ev in paced(events, self.app.replay_speed, self.app.stop_event):
            self.app.post_message(WorkerEvent(ev))

    # ------------------------------------------------------------------ events
    def on_event(self, ev: Event, history: bool = False) -> None:
        """Fold one event into the live state, note what was rendered, redraw, tell the user
        (not of ``history``: events from before the editor attached)."""
        app = self.app
        areas = app.live.apply(ev)
        if app.worker_detail.startswith("starting") and app.replay is None:
            app.worker_detail = "worker attached"  # it speaks: it has started
            areas.add("log")
        if app.doc is not None:
            self._note(ev, app.doc, history)
        app.board.refresh_live(areas)
        if areas & {"takes", "latent"} and isinstance(app.screen, TakesScreen):
            app.screen.refresh_live(areas)
        if not history:
            self.announce(ev)

    def _note(self, ev: Event, doc: Document, history: bool) -> None:
        """What the editor keeps of this storyboard's jobs: what each shot was rendered from, the
        digest a failure is of, the encoded video's flicker, the stage times and how the job ended.
        One worker serves the folder: another storyboard's job is not noted as this one's."""
        app = self.app
        if not isinstance(ev, _NOTED) or not self._ours(ev.job_id):
            return  # steps, samples and previews (many a second) are not noted
        saved = {s.id for s in doc.saved.segments}
        if isinstance(ev, JobQueued | JobStarted):  # renders start from the saved file
            self._submitted[ev.job_id] = {sid: segment_digest(doc.saved, sid) for sid in ev.segments if sid in saved}
        if isinstance(ev, SegmentDone) and ev.segment in saved:
            app.baseline[ev.segment] = segment_digest(doc.saved, ev.segment)
            remember_render(doc.saved, ev.segment, app.baseline[ev.segment])
        if isinstance(ev, ErrorEvent) and ev.segment in app.live.segments and ev.segment in saved:
            submitted = self._submitted.get(ev.job_id, {}).get(ev.segment)
            app.live.segments[ev.segment].failed_digest = submitted or segment_digest(doc.saved, ev.segment)
        if isinstance(ev, FlickerReport) and ev.stage == "encode" and app.replay is None:
            remember_flicker(doc.saved, ev, app.live.seams.get(ev.segment))
        if isinstance(ev, StageFinished) and ev.segment and app.replay is None and not history:
            remember_stage_time(doc.storyboard, ev.stage, ev.seconds)
        ended = isinstance(ev, JobFinished | JobCancelled | ErrorEvent) or (  # or ended unseen (the snapshot)
            isinstance(ev, StatusSnapshot) and not app.live.running and
            any(j.job_id in self._submitted and j.state in FINISHED for j in ev.jobs))
        if ended and app.replay is None and app.live.news:
            remember_outcome(doc.storyboard, app.live.news)

    def _ours(self, job_id: str) -> bool:
        """Whether ``job_id`` renders this storyboard (the live state keeps other storyboards'
        jobs apart; a job whose storyboard is not known yet, as in a bare recording, is ours)."""
        return job_id not in self.app.live.elsewhere

    def _check_presets(self, known: list[str]) -> None:
        """Name a preset of the saved storyboard that the worker does not have, on attaching, instead of
        at the first F5 (the editor holds no registry: the worker's snapshot lists its presets)."""
        doc = self.app.doc
        assert doc is not None
        for err in unknown_presets(doc.saved, known):
            # named by its file name, as F5's refusal words it
            text = str(StoryboardError(doc.saved.path.name, err.message, err.line, err.column, err.key))
            if text not in self._told_presets:
                self._told_presets.add(text)
                self.app.notify(text, title="Unknown model preset", severity="error", timeout=20)

    def announce(self, ev: Event) -> None:
        """The few events a user must not miss get a notification, not just a log line."""
        app = self.app
        if app.replay is not None or not self._ours(ev.job_id):
            return  # another storyboard's job is told in the status line and the job log only
        if isinstance(ev, ErrorEvent):
            self._told.add(ev.job_id)
            where = "/".join(x for x in (ev.segment, ev.stage) if x) or "render"
            app.notify(ev.message, title=f"{where} failed ({ev.kind})", severity="error", timeout=20)
        elif isinstance(ev, StatusSnapshot | JobQueued):
            if isinstance(ev, StatusSnapshot) and app.doc is not None:
                self._check_presets(ev.presets)
            # A job of this editor's that failed unseen (the snapshot said so); its JobQueued, which
            # the editor posts itself, may even come after that snapshot.
            for job_id in self._submitted.keys() - self._told:
                job = app.live.jobs.get(job_id)
                if job is not None and job.state == "failed":
                    self._told.add(job_id)
                    app.notify(job.error or "the job failed", title="render failed", severity="error", timeout=20)
        elif isinstance(ev, PlanFallback):
            app.notify(f"{ev.segment}/{ev.stage}: out of memory with {ev.failed_plan}; retrying with "
                       f"{ev.next_plan}", title="Leaner memory plan", severity="warning", timeout=10)
        elif isinstance(ev, JobFinished):
            path = Path(ev.path)
            if app.doc is not None and path.is_relative_to(app.doc.path.parent):
                path = path.relative_to(app.doc.path.parent)
            job = app.live.jobs.get(ev.job_id)
            if job is not None and job.seeds:
                app.notify(f"{len(job.seeds)} takes of {job.segments[0]} in {path}: t to pick one",
                           title="Takes rendered", timeout=12)
                return
            app.notify(f"{path} in {ev.seconds:.0f} s (the status line keeps it)", title="Render finished",
                       timeout=12)

    def set_worker_detail(self, detail: str) -> None:
        self.app.worker_detail = detail
        self.app.board.draw_status()

    # ------------------------------------------------------------------ jobs
    def _saved(self, what: str) -> bool:
        """Save a dirty storyboard before a job (jobs read the file); False if it cannot be."""
        app = self.app
        if app.doc is None or not app.edits.fields_good():
            return False
        if app.doc.dirty and not app.edits.save():
            app.notify(f"Save the storyboard first: {what} read the file.", severity="warning")
            return False
        return True

    def render(self, mode: str, segments: list[str]) -> None:
        """Queue a job: ``all`` shots, the listed ``segments``, or everything ``from`` one shot."""
        app = self.app
        if not self._saved("renders"):
            return
        assert app.doc is not None
        ids = [s.id for s in app.doc.storyboard.segments]
        if mode == "all":
            queued = ids
        elif mode == "from":
            queued = ids[ids.index(segments[0]):]
        else:
            queued = segments
        app.run_worker(lambda: self._submit(mode, segments, queued), name="_submit", group="submit", thread=True,
                       exit_on_error=False)

    def render_takes(self, segment: str, seeds: list[int]) -> None:
        """Queue a takes job: ``seeds`` of one shot, one after another, into its takes folder."""
        app = self.app
        if not self._saved("takes"):
            return
        app.run_worker(lambda: self._submit("takes", [segment], [segment], seeds), name="_submit_takes",
                       group="submit", thread=True, exit_on_error=False)

    def _submit(self, mode: str, segments: list[str], queued: list[str], seeds: list[int] | None = None) -> None:
        app = self.app
        assert app.doc is not None
        app.call_from_thread(self.set_worker_detail, "starting the render worker…")
        try:
            with WorkerClient.connect(app.doc.path.parent, start=True, timeout=120.0) as client:
                job_id = client.submit(app.doc.path, mode=mode, segments=segments, seeds=seeds or ())
        except WorkerError as exc:  # no worker could start (a read-only folder), or it refused the job
            app.call_from_thread(self.set_worker_detail, f"render not started: {exc}")
            app.call_from_thread(app.notify, str(exc), title="Render not started", severity="error", timeout=10)
            return
        # Show the queue at once; the worker's own JobQueued confirms it.
        app.post_message(WorkerEvent(JobQueued(job_id=job_id, storyboard=str(app.doc.path), segments=queued,
                                               seeds=seeds or [])))
        if app.connect_worker and app.replay is None:
            app.call_from_thread(self.ensure_following)

    def cancel(self) -> None:
        """Cancel this storyboard's job. Never another's: the worker takes an empty job id for
        whatever it runs, which is another storyboard's job while this one's only waits."""
        live = self.app.live
        job = live.active_job()
        if job is None:  # the snapshot on attaching lists every job: none of them is this one's
            other = live.elsewhere_line()
            self.app.notify("No render of this storyboard is running" +
                            (f" ({other}: cancel it from its own editor)." if other else "."), timeout=6)
            return
        self.app.run_worker(lambda: self._cancel(job.job_id), name="_cancel", group="cancel", thread=True,
                            exit_on_error=False)

    def _cancel(self, job_id: str) -> None:
        app = self.app
        assert app.doc is not None
        try:
            with WorkerClient.connect(app.doc.path.parent, start=False, timeout=5.0) as client:
                client.cancel(job_id)
        except WorkerNotRunning:
            app.call_from_thread(app.notify, "No render worker is running.", timeout=3)
