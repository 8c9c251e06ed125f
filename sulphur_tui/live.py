"""What the worker is doing, folded from protocol events.

A plain reducer with no Textual in it: the app feeds it every event (live from the
worker or replayed from a recorded JSONL) and redraws the parts :meth:`LiveState.apply`
says changed. Time comes from the events' own ``ts`` where it matters, so a replay
draws the same timers every time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import PurePath

from pipeline.wire.protocol import (
    FINISHED,
    STAGES,
    DriftReport,
    ErrorEvent,
    Event,
    FlickerReport,
    JobCancelled,
    JobFinished,
    JobInfo,
    JobQueued,
    JobStarted,
    LatentPreview,
    Log,
    PlanFallback,
    Preview,
    PromptEnhanced,
    SegmentDone,
    StageCached,
    StageFinished,
    StageStarted,
    StatusSnapshot,
    StepProgress,
    TakeFinished,
    TakeStarted,
    VramSample,
)

# Share of a segment's render time per stage, for the "rendering 42%" glyph. Rough
# on purpose: it only has to move monotonically and end at 100%.
STAGE_WEIGHT = {"enhance": 0.05, "draft": 0.45, "refine": 0.25, "upscale": 0.15, "encode": 0.10}


@dataclass
class StageTimer:
    stage: str
    # pending | running | done | cached | failed | stopped (cancelled, worker gone) | skipped
    state: str = "pending"
    started: float = 0.0
    seconds: float = 0.0
    step: int = 0
    total: int = 0
    plan: str = ""
    peak_allocated: int = 0


@dataclass
class SegmentLive:
    state: str = ""  # "" | queued | rendering | takes (a takes job of it runs) | done | failed
    stage: str = ""
    progress: float = 0.0  # 0..1
    error: str = ""
    failed_digest: str = ""  # what failed (the saved shot's digest): an edit since clears the mark
    finished_at: float | None = None
    stages_done: set[str] = field(default_factory=set)


@dataclass
class ActorLive:
    """One Ray stage actor: what it runs now and how busy it has been."""

    name: str              # as the events name it: "sulphur-<job>-draft-0@host GPU 0"
    segment: str = ""
    stage: str = ""
    state: str = "idle"    # running | idle
    started: float = 0.0
    step: int = 0
    total: int = 0
    busy: float = 0.0      # seconds of the stages it finished
    stages: int = 0

    @property
    def label(self) -> str:
        """``draft-0`` out of ``sulphur-<job>-draft-0``: the job is already on screen."""
        name = self.name.partition("@")[0]
        parts = name.split("-")
        return "-".join(parts[2:]) if len(parts) > 3 and parts[0] == "sulphur" else name

    @property
    def where(self) -> str:
        """``host GPU 0`` (or ``host CPU``)."""
        return self.name.partition("@")[2]


@dataclass(frozen=True)
class Seam:
    """PSNR-Y across a chained shot's first transition, with the stage it was measured on
    and that stage's worst transition inside the shot (what the seam is compared with)."""

    stage: str
    psnr: float
    stage_minimum: float

    @property
    def bad(self) -> bool:
        return self.psnr < self.stage_minimum


@dataclass
class JobLive:
    job_id: str
    segments: list[str]
    state: str = "queued"  # queued | running | done | failed | cancelled
    started: float = 0.0
    seeds: list[int] = field(default_factory=list)  # a takes job: these seeds of segments[0]
    storyboard: str = ""  # its file, as the worker names it (one worker serves the folder)
    order: int = 0  # when the editor first saw it: the worker runs its jobs in that order
    error: str = ""  # why it failed, when only the worker's snapshot said so
    finished: set[str] = field(default_factory=set)  # its shots (or takes' seeds) done: only kept for
    #                                                   another storyboard's job, for the queue's ETA


@dataclass
class TakeLive:
    """One take (seed) of a takes job, as its row in the takes list draws it."""

    seed: int
    state: str = "queued"  # queued | rendering | done | failed | cancelled
    stage: str = ""
    step: int = 0
    total: int = 0
    progress: float = 0.0  # 0..1, weighted by stage as a shot's is
    stages_done: set[str] = field(default_factory=set)
    path: str = ""  # its MP4, once done
    still: str = ""  # its last frame as a PNG, once done


@dataclass
class TakesLive:
    """The latest takes job of one shot."""

    job_id: str
    segment: str
    takes: dict[int, TakeLive]  # by seed, in the order asked
    state: str = "queued"  # as the job's


class LiveState:
    """Everything the live panel draws."""

    def __init__(self, storyboard: str = "") -> None:
        # One worker serves the folder: another storyboard's jobs (which may name the same
        # shot ids) are kept apart, in ``elsewhere``, and only said to be ahead in the queue.
        # "" (a replay) takes every job as this storyboard's.
        self.storyboard = storyboard
        self.jobs: dict[str, JobLive] = {}
        self.elsewhere: dict[str, JobLive] = {}
        self._seen = 0
        self.segments: dict[str, SegmentLive] = {}
        self.timers: dict[str, StageTimer] = {s: StageTimer(s) for s in STAGES}
        self.timer_segment = ""
        self.flicker: dict[str, FlickerReport] = {}
        self._cached_drafts: set[tuple[str, str]] = set()  # (job, segment) whose draft came from the cache
        self.drift: dict[str, DriftReport] = {}
        self.seams: dict[str, Seam] = {}
        self.worker_gpus: dict[int, VramSample] = {}
        self.preview: Preview | None = None
        self.latent: LatentPreview | None = None  # the sampler's latest picture of its latent
        self.history: dict[str, list[float]] = {s: [] for s in STAGES}  # seconds per finished run
        self.log: deque[str] = deque(maxlen=200)
        # The status line's news: the last log line while a job runs, then how the last job
        # ended (the film's path, "cancelled", the error) until the next one starts.
        self.news = ""
        # The job log panel's lines: (event time, text), and how many were ever added.
        self.journal: deque[tuple[float, str]] = deque(maxlen=500)
        self.journal_count = 0
        self.enhanced: list[PromptEnhanced] = []
        self.last_ts = 0.0
        self.worker_pid = 0
        # Engine workers (Ray actors) by name, in order of appearance; empty for a local render,
        # whose events name no worker.
        self.actors: dict[str, ActorLive] = {}
        self._running_on: dict[tuple[str, str], str] = {}  # (segment, stage) -> worker, for StepProgress
        # Takes jobs by shot (the latest one each), and which take each Ray actor runs now.
        self.takes: dict[str, TakesLive] = {}
        self._take_on: dict[str, TakeLive] = {}  # Ray actor ("" in a local job) -> its running take

    # ------------------------------------------------------------------ folding
    def seg(self, segment_id: str) -> SegmentLive:
        return self.segments.setdefault(segment_id, SegmentLive())

    def apply(self, ev: Event) -> set[str]:
        """Fold one event in; returns the areas to redraw."""
        self.last_ts = max(self.last_ts, ev.ts)
        if self._is_elsewhere(ev):
            return self._apply_elsewhere(ev)
        line = log_line(ev)
        areas = self._apply(ev) | self._apply_takes(ev)
        if line:
            self.journal.append((ev.ts, line))
            self.journal_count += 1
            areas = areas | {"journal"}
        return areas

    def _apply(self, ev: Event) -> set[str]:
        match ev:
            case StatusSnapshot():
                return self._snapshot(ev)
            case JobQueued() | JobStarted():
                return self._job_queued(ev)
            case StageStarted() if not ev.segment:
                # A job-level stage (assembling the film): a timer row, no shot.
                self._actor_started(ev)
                self.timers[ev.stage] = StageTimer(ev.stage, "running", ev.ts, total=ev.total_steps, plan=ev.plan)
                return {"timers"}
            case StageFinished() if not ev.segment:
                self._actor_finished(ev)
                t = self.timers.setdefault(ev.stage, StageTimer(ev.stage))
                t.state, t.seconds = "done", ev.seconds
                t.step = t.total  # the film sends no step progress: done is all of it
                return {"timers"}
            case StageStarted():
                return self._stage_started(ev)
            case StepProgress():
                return self._step(ev)
            case StageFinished() | StageCached():
                if isinstance(ev, StageCached) and ev.stage == "draft":
                    self._cached_drafts.add((ev.job_id, ev.segment))
                return self._stage_finished(ev)
            case PlanFallback():
                self._say(f"{ev.segment}/{ev.stage}: out of memory with {ev.failed_plan}, "
                          f"retrying with {ev.next_plan}")
                if ev.stage in self.timers:
                    self.timers[ev.stage].plan = ev.next_plan
                return {"timers", "log"}
            case Preview():
                self.preview = ev
                return {"preview"}
            case LatentPreview():
                self.latent = ev
                return {"latent"}
            case FlickerReport():
                return self._flicker(ev)
            case DriftReport():
                self.drift[ev.segment] = ev
                return {"flicker"}
            case VramSample():
                self.worker_gpus[ev.gpu] = ev
                return {"vram"}
        return self._apply_outcome(ev)

    def _apply_outcome(self, ev: Event) -> set[str]:
        """Events that end something: a shot, a job, an error; and log lines."""
        match ev:
            case SegmentDone():
                s = self.seg(ev.segment)
                s.state, s.progress, s.finished_at, s.stage = "done", 1.0, ev.ts, ""
                return {"segments", "disk"}
            case PromptEnhanced():
                self.enhanced.append(ev)
                return {"enhanced"}
            case JobFinished():
                job = self.jobs.get(ev.job_id)
                self._end_job(ev.job_id, "done")
                if job is not None and job.seeds:
                    n = len(job.seeds)
                    self._say(f"✔ {n} take{'s' if n != 1 else ''} of {job.segments[0]} in {ev.seconds:.0f} s: "
                              "pick one (t)")
                elif ev.path.endswith(".mp4"):
                    self._say(f"✔ film ready: {ev.path} ({ev.seconds:.0f} s)")
                else:  # some shot is not rendered yet: no film, the shots are in the folder
                    self._say(f"✔ done in {ev.seconds:.0f} s, no film yet: shots in {ev.path}")
                return {"segments", "jobs", "timers", "disk", "log"}
            case JobCancelled():
                self._end_job(ev.job_id, "cancelled")
                self._say("render cancelled")
                return {"segments", "jobs", "timers", "log"}
            case ErrorEvent():
                if ev.segment:
                    s = self.seg(ev.segment)
                    s.state, s.error = "failed", f"{ev.kind}: {ev.message}"
                if ev.stage in self.timers and ev.segment == self.timer_segment:
                    self.timers[ev.stage].state = "failed"
                self._say(f"✖ error {ev.segment}/{ev.stage}: {ev.message}".replace("/:", ":"))
                self._end_job(ev.job_id, "failed")
                return {"segments", "jobs", "timers", "log"}
            case Log():
                self._say(ev.message)
                return {"log"}
        return set()

    def _new_job(self, jobs: dict[str, JobLive], job_id: str, segments: list[str]) -> JobLive:
        if job_id not in jobs:
            self._seen += 1
            jobs[job_id] = JobLive(job_id, list(segments), order=self._seen)
        return jobs[job_id]

    # ------------------------------------------------------------------ other storyboards
    def _theirs(self, storyboard: str) -> bool:
        return bool(self.storyboard and storyboard and PurePath(storyboard) != PurePath(self.storyboard))

    def _is_elsewhere(self, ev: Event) -> bool:
        """Whether ``ev`` belongs to another storyboard's job (GPU samples are the worker's own)."""
        if isinstance(ev, JobQueued | JobStarted) and self._theirs(ev.storyboard):
            return True
        return bool(ev.job_id) and ev.job_id in self.elsewhere and not isinstance(ev, VramSample)

    def _apply_elsewhere(self, ev: Event) -> set[str]:
        """Another storyboard's job: only its place in the queue and how it ended, never its
        shots (the same ids may name this storyboard's shots)."""
        if isinstance(ev, JobQueued | JobStarted):
            job = self._new_job(self.elsewhere, ev.job_id, ev.segments)
            job.storyboard, job.seeds = ev.storyboard, list(ev.seeds) or job.seeds
            if isinstance(ev, JobStarted):
                job.state, job.started = "running", ev.ts
        else:
            job = self.elsewhere[ev.job_id]
            match ev:
                case SegmentDone() if not job.seeds and ev.segment in job.segments:
                    job.finished.add(ev.segment)  # a set: a resumed job's history repeats them
                case TakeFinished() if job.seeds:
                    job.finished.add(str(ev.seed))
                case JobFinished():
                    job.state = "done"
                case JobCancelled():
                    job.state = "cancelled"
                case ErrorEvent():
                    job.state = "failed"
                case _:
                    return set()  # its stages, steps and previews are not this editor's
        line = log_line(ev) if isinstance(ev, JobStarted | JobFinished | JobCancelled | ErrorEvent) else ""
        if line:
            self.journal.append((ev.ts, f"{PurePath(job.storyboard).name}: {line}"))
            self.journal_count += 1
        return {"jobs", "log", "journal"} if line else {"jobs", "log"}

    def ahead_elsewhere(self) -> list[JobLive]:
        """Other storyboards' unfinished jobs the worker runs before this storyboard's (all of
        them while this storyboard has none)."""
        ours = [j.order for j in self.jobs.values() if j.state in ("queued", "running")]
        first = min(ours, default=math.inf)
        return [j for j in self.elsewhere.values() if j.state in ("queued", "running") and j.order < first]

    def elsewhere_line(self) -> str:
        """The status line's word on another storyboard's job, while the worker runs one."""
        busy = [j for j in self.elsewhere.values() if j.state == "running"]
        if not busy:
            return ""
        name = PurePath(busy[0].storyboard).name
        if any(j.state == "queued" for j in self.jobs.values()):
            return f"queued behind {name}'s render"  # short: the status line is one row at 80 columns
        return f"the worker is rendering {name}"

    # ------------------------------------------------------------------ this storyboard's jobs
    def _job_queued(self, ev: JobQueued | JobStarted) -> set[str]:
        known = self.jobs.get(ev.job_id)
        if isinstance(ev, JobQueued) and known is not None and known.state in FINISHED:
            return set()  # the editor's own JobQueued, posted after the worker's snapshot said it ended
        job = self._new_job(self.jobs, ev.job_id, ev.segments)
        job.segments = list(ev.segments) or job.segments
        job.seeds = list(ev.seeds) or job.seeds
        job.storyboard = ev.storyboard or job.storyboard
        if isinstance(ev, JobStarted):
            job.state, job.started = "running", ev.ts
            self.actors, self._running_on, self._take_on = {}, {}, {}  # a job's actors are its own
            self.news = f"rendering {len(job.segments)} shot{'s' if len(job.segments) != 1 else ''}…"
            if job.seeds:
                self.news = f"rendering {len(job.seeds)} takes of {job.segments[0]}…"
        for sid in job.segments:
            s = self.seg(sid)
            if s.state not in ("rendering",):
                self.segments[sid] = SegmentLive(state="queued")
        return {"segments", "jobs", "log"}

    def _stage_started(self, ev: StageStarted) -> set[str]:
        self._actor_started(ev)
        if ev.segment != self.timer_segment:
            self.timer_segment = ev.segment
            self.timers = {s: StageTimer(s) for s in STAGES}
        t = self.timers.setdefault(ev.stage, StageTimer(ev.stage))
        t.state, t.started, t.total, t.step, t.plan = "running", ev.ts, ev.total_steps, 0, ev.plan
        enhance = self.timers.get("enhance")
        if ev.stage == "draft" and enhance is not None and enhance.state == "pending":
            # The runner skips the enhancer without an event (a locked prompt, enhance = false,
            # a preset that takes none): once the draft starts it is not to come.
            enhance.state = "skipped"
        if not self._a_take(ev):  # a take's stages are the takes row's, not the shot's own
            s = self.seg(ev.segment)
            s.state, s.stage, s.error = "rendering", ev.stage, ""
            self._progress(ev.segment)
        job = self.jobs.get(ev.job_id)
        if job and job.state == "queued":
            job.state, job.started = "running", ev.ts
        return {"segments", "timers", "jobs"}

    def _step(self, ev: StepProgress) -> set[str]:
        actor = self.actors.get(self._running_on.get((ev.segment, ev.stage), ""))
        if actor is not None and actor.segment == ev.segment and actor.stage == ev.stage:
            actor.step, actor.total = ev.step, ev.total
        if ev.segment == self.timer_segment and ev.stage in self.timers:
            t = self.timers[ev.stage]
            t.step, t.total = ev.step, ev.total
            if t.state == "pending":
                t.state, t.started = "running", ev.ts
        if not self._a_take(ev):
            s = self.seg(ev.segment)
            s.state, s.stage = "rendering", ev.stage
            self._progress(ev.segment, ev.step / ev.total if ev.total else 0.0)
        return {"segments", "timers"}

    def _stage_finished(self, ev: StageFinished | StageCached) -> set[str]:
        cached = isinstance(ev, StageCached)
        self._actor_finished(ev)
        if ev.segment == self.timer_segment and ev.stage in self.timers:
            t = self.timers[ev.stage]
            t.state = "cached" if cached else "done"
            if isinstance(ev, StageFinished):
                t.seconds, t.plan, t.peak_allocated = ev.seconds, ev.plan or t.plan, ev.peak_allocated
                t.step = t.total = max(t.total, t.step)
        if isinstance(ev, StageFinished):
            self.history.setdefault(ev.stage, []).append(ev.seconds)
        if not self._a_take(ev):
            s = self.seg(ev.segment)
            s.stages_done.add(ev.stage)
            self._progress(ev.segment)
        return {"segments", "timers"}

    def _a_take(self, ev: StageStarted | StepProgress | StageFinished | StageCached) -> bool:
        """An event of one take in a takes job (of the job's shot, not of the shots it drafts first)."""
        job = self.jobs.get(ev.job_id)
        return bool(job and job.seeds and job.segments and ev.segment == job.segments[0])

    def _flicker(self, ev: FlickerReport) -> set[str]:
        # The seam is measured on one stage (the draft) and kept with that stage's own
        # minimum: held against a later stage's figures (the encoded video's ~27 dB) a
        # draft's ~17 dB seam would look like a flash on every chained shot.
        if ev.seam_psnr is not None:
            self.seams[ev.segment] = Seam(ev.stage, ev.seam_psnr, ev.minimum)
        elif ev.stage == "draft" and (ev.job_id, ev.segment) not in self._cached_drafts:
            self.seams.pop(ev.segment, None)  # drafted with no seam now (its anchor changed): none to show
        held = self.flicker.get(ev.segment)
        if ev.stage == "draft" and held is not None and held.stage == "encode" \
                and (ev.job_id, ev.segment) in self._cached_drafts:
            # A job re-reads an earlier shot's cached draft to chain from it: the shot's video is
            # what the encode report measured, so its row keeps that figure.
            return set()
        self.flicker[ev.segment] = ev
        return {"flicker"}

    def _say(self, line: str) -> None:
        self.log.append(line)
        self.news = line

    def _actor_started(self, ev: StageStarted) -> None:
        if not ev.actor:
            return
        actor = self.actors.setdefault(ev.actor, ActorLive(ev.actor))
        actor.segment, actor.stage, actor.state = ev.segment, ev.stage, "running"
        actor.started, actor.step, actor.total = ev.ts, 0, ev.total_steps
        self._running_on[(ev.segment, ev.stage)] = ev.actor

    def _actor_finished(self, ev: StageFinished | StageCached) -> None:
        name = ev.actor or self._running_on.get((ev.segment, ev.stage), "")
        actor = self.actors.get(name)
        if actor is None:
            return
        self._running_on.pop((ev.segment, ev.stage), None)
        if isinstance(ev, StageFinished):
            actor.busy += ev.seconds
            actor.stages += 1
        if actor.segment == ev.segment and actor.stage == ev.stage:
            actor.state = "idle"

    def _snapshot(self, ev: StatusSnapshot) -> set[str]:
        self.worker_pid = ev.pid
        for info in ev.jobs:
            # The snapshot lists the jobs as the worker queued them: that order wins over the one
            # in which this editor first heard of them (its own JobQueued may come first).
            self._seen += 1
            if self._theirs(info.storyboard) or info.job_id in self.elsewhere:
                job = self._new_job(self.elsewhere, info.job_id, info.segments)
                job.storyboard = info.storyboard or job.storyboard
                job.state, job.seeds, job.order = info.state, list(info.seeds), self._seen
                continue
            known = self.jobs.get(info.job_id)
            if known is not None and known.state in ("queued", "running") and info.state not in ("queued", "running"):
                self._ended_unseen(known, info, others_run=any(i.state == "running" for i in ev.jobs))
            job = self._new_job(self.jobs, info.job_id, info.segments)
            job.order = self._seen
            if job.state in FINISHED and info.state in ("queued", "running"):
                continue  # its end was journaled after this snapshot was taken, and replayed before it
            job.state, job.seeds = info.state, list(info.seeds) or job.seeds
            job.storyboard = info.storyboard or job.storyboard
            if job.seeds and info.segments:
                self._takes_job(job).state = info.state
            if info.state in ("queued", "running"):
                for sid in info.segments:
                    if self.seg(sid).state not in ("rendering", "done"):
                        self.segments[sid] = SegmentLive(state="queued")
            if info.state == "running" and info.segment and job.seeds and info.segment == job.segments[0]:
                self.seg(info.segment).state = "takes"  # its takes render, not the shot itself
            elif info.state == "running" and info.segment:
                s = self.seg(info.segment)
                s.state, s.stage = "rendering", info.stage
                self._progress(info.segment, info.step / info.total if info.total else 0.0)
                t = self.timers.get(info.stage)
                if info.segment == self.timer_segment and t is not None and t.state == "running":
                    t.step, t.total = info.step, info.total or t.total  # steps are not journaled
        return {"segments", "jobs", "timers", "disk", "log"}

    def _ended_unseen(self, job: JobLive, info: JobInfo, *, others_run: bool) -> None:
        """A job this editor took for queued or running ended unseen: before the editor attached
        to the worker F5 started (a job that failed at once, as with an unknown preset, or came
        whole from the cache), or while the link was down. Its shots must not stay queued or
        rendering, and the status line says how it ended. A job the snapshot lists as running
        comes later in it and marks its own shot again; the timers are its, if there is one."""
        job.state, job.error = info.state, info.error
        for sid in job.segments:
            if sid in self.segments and self.segments[sid].state in ("queued", "rendering", "takes"):
                self.segments[sid].state = ""
        if not others_run:
            for t in self.timers.values():
                if t.state == "running":
                    t.seconds, t.state = max(0.0, self.last_ts - t.started), "stopped"
        rows = self.takes.get(job.segments[0]) if job.seeds and job.segments else None
        if rows is not None and rows.job_id == job.job_id and info.state != "done":
            for take in rows.takes.values():
                if take.state in ("queued", "rendering"):
                    take.state = info.state
        if info.state == "failed":
            self._say(f"✖ error: {info.error}" if info.error else "✖ render failed")
        elif info.state == "cancelled":
            self._say("render cancelled")
        elif job.seeds:
            self._say(f"✔ takes of {job.segments[0]} rendered: pick one (t)")
        else:
            self._say("✔ render done: the shots are on disk")

    def _end_job(self, job_id: str, state: str) -> None:
        job = self.jobs.get(job_id)
        segs = job.segments if job else [k for k, v in self.segments.items() if v.state in ("queued", "rendering")]
        # A job drafts the shots before the ones it renders (a takes job, `render beam`): one job
        # runs at a time, so whatever still shows rendering was this job's.
        segs = [*segs, *(k for k, v in self.segments.items() if v.state == "rendering" and k not in segs)]
        if job:
            job.state = state
        for sid in segs:
            s = self.seg(sid)
            if s.state in ("queued", "rendering", "takes"):
                s.state = "" if state != "failed" or s.state == "queued" else "failed"
        for t in self.timers.values():
            if t.state == "running":
                # a stage cut short reads as stopped where it stood, not as one still to come
                t.seconds = max(0.0, self.last_ts - t.started)
                t.state = "failed" if state == "failed" else "stopped"
        for actor in self.actors.values():
            actor.state = "idle"

    def worker_lost(self) -> set[str]:
        """The worker went away (killed, crashed) with jobs queued or running: nothing runs them
        until a worker starts again, so they stop reading as running. A new worker resumes them
        from its journal, and its snapshot on attaching shows them running again."""
        for job in self.elsewhere.values():
            if job.state in ("queued", "running"):
                job.state = "interrupted"
        lost = [j.job_id for j in self.jobs.values() if j.state in ("queued", "running")]
        for job_id in lost:
            self._end_job(job_id, "interrupted")
        if not lost:
            return set()
        self._say("the render worker stopped mid-job: F5 starts it again and it resumes the job")
        return {"segments", "jobs", "timers", "log"}

    def _progress(self, segment_id: str, fraction: float = 0.0) -> None:
        s = self.seg(segment_id)
        done = sum(STAGE_WEIGHT.get(x, 0.0) for x in s.stages_done)
        current = STAGE_WEIGHT.get(s.stage, 0.0) * fraction if s.stage not in s.stages_done else 0.0
        s.progress = min(1.0, max(s.progress if s.state == "rendering" else 0.0, done + current))

    # ------------------------------------------------------------------ takes
    def _takes_job(self, job: JobLive) -> TakesLive:
        """The rows of a takes job, every seed queued until it starts."""
        current = self.takes.get(job.segments[0])
        if current is None or current.job_id != job.job_id:
            current = TakesLive(job.job_id, job.segments[0], {s: TakeLive(s) for s in job.seeds})
            self.takes[job.segments[0]] = current
        return current

    def _apply_takes(self, ev: Event) -> set[str]:
        """Takes jobs: a row per seed, and the stage events of each take's actor folded into it."""
        job = self.jobs.get(ev.job_id)
        if job is None or not job.seeds or not job.segments:
            return set()
        rows = self._takes_job(job)
        match ev:
            case JobQueued() | JobStarted():
                rows.state = job.state
            case TakeStarted():
                take = rows.takes.setdefault(ev.seed, TakeLive(ev.seed))
                take.state, take.stage, take.progress, take.stages_done = "rendering", "", 0.0, set()
                self._take_on[ev.actor] = take
            case TakeFinished():
                take = rows.takes.setdefault(ev.seed, TakeLive(ev.seed))
                take.state, take.stage, take.progress, take.path, take.still = "done", "", 1.0, ev.path, ev.still
                if self._take_on.get(ev.actor) is take:
                    del self._take_on[ev.actor]
            case StageStarted() | StepProgress() | StageFinished() | StageCached() if ev.segment == rows.segment:
                actor = getattr(ev, "actor", "") or self._running_on.get((ev.segment, ev.stage), "")
                take = self._take_on.get(actor)
                if take is None:
                    return set()
                _fold_take(take, ev)
            case JobFinished() | JobCancelled() | ErrorEvent():
                rows.state = job.state
                for take in rows.takes.values():  # what did not finish never will in this job
                    if take.state in ("queued", "rendering"):
                        cancelled = isinstance(ev, JobCancelled) or take.state == "queued"
                        take.state = "cancelled" if cancelled else "failed"
                self._take_on = {}
            case _:
                return set()
        if job.state in ("queued", "running"):  # the shot's row: its takes, not a render of its own
            shot = self.seg(rows.segment)
            shot.state = "takes"
            shot.progress = sum(t.progress for t in rows.takes.values()) / max(1, len(rows.takes))
        return {"takes", "segments"}

    # ------------------------------------------------------------------ reading
    @property
    def running(self) -> bool:
        return any(j.state in ("queued", "running") for j in self.jobs.values())

    def active_job(self) -> JobLive | None:
        for j in self.jobs.values():
            if j.state == "running":
                return j
        for j in self.jobs.values():
            if j.state == "queued":
                return j
        return None

    def mean_seconds(self, stage: str) -> float | None:
        h = self.history.get(stage) or []
        return sum(h) / len(h) if h else None

    def elapsed(self, t: StageTimer, now: float) -> float:
        if t.state == "running":
            return max(0.0, now - t.started)
        return t.seconds

    def eta(self, t: StageTimer, now: float) -> float | None:
        """Seconds left in a stage: the current step rate once steps arrive, else the
        mean of previous runs of the same stage."""
        if t.state in ("done", "cached", "failed"):
            return 0.0 if t.state != "failed" else None
        elapsed = self.elapsed(t, now)
        if t.state == "running" and t.step > 0 and t.total:
            return elapsed / t.step * (t.total - t.step)
        mean = self.mean_seconds(t.stage)
        return None if mean is None else max(0.0, mean - elapsed)

    def queue_eta(self, now: float) -> float | None:
        """Seconds until every queued job is done, from previous stage times."""
        per_segment = [self.mean_seconds(s) for s in STAGES]
        if any(m is None for m in per_segment):
            return None
        seg_total = sum(m for m in per_segment if m is not None)
        # Another storyboard's job ahead runs first: its shots left, at this storyboard's pace.
        left = sum(max(0, len(j.seeds or j.segments) - len(j.finished)) * seg_total for j in self.ahead_elsewhere())
        for job in self.jobs.values():
            if job.state not in ("queued", "running"):
                continue
            if job.seeds and job.segments:  # a takes job: every take runs the shot's stages once
                rows = self.takes.get(job.segments[0])
                for seed in job.seeds:
                    take = rows.takes.get(seed) if rows and rows.job_id == job.job_id else None
                    if take is None or take.state in ("queued", "rendering"):
                        left += seg_total * (1.0 - (take.progress if take else 0.0))
                continue
            for sid in job.segments:
                s = self.segments.get(sid)
                if s and s.state == "rendering":
                    left += sum((self.eta(self.timers[st], now) or 0.0) if st == s.stage else
                                (0.0 if st in s.stages_done else (self.mean_seconds(st) or 0.0))
                                for st in STAGES)
                elif s is None or s.state == "queued":
                    left += seg_total
        return left


def _fold_take(take: TakeLive, ev: StageStarted | StepProgress | StageFinished | StageCached) -> None:
    """A stage event of the take's own actor: its stage, steps and weighted progress."""
    if isinstance(ev, StageStarted):
        take.stage, take.step, take.total = ev.stage, 0, ev.total_steps
    elif isinstance(ev, StepProgress):
        take.stage, take.step, take.total = ev.stage, ev.step, ev.total
    else:
        take.stages_done.add(ev.stage)
        take.step = take.total
    done = sum(STAGE_WEIGHT.get(x, 0.0) for x in take.stages_done)
    running = 0.0 if take.stage in take.stages_done else STAGE_WEIGHT.get(take.stage, 0.0) * (
        take.step / take.total if take.total else 0.0)
    take.progress = min(1.0, max(take.progress, done + running))


def log_line(ev: Event) -> str:
    """The job log's line for an event ("" for telemetry): each job's start, every stage of
    every shot, fallbacks, warnings, errors and where the output went."""
    where = "/".join(x for x in (getattr(ev, "segment", ""), getattr(ev, "stage", "")) if x)
    match ev:
        case JobStarted():
            return f"job {ev.job_id[:8]} started: {', '.join(ev.segments)}"
        case StageStarted():
            return f"{where or ev.stage} started" + (f" · {ev.plan}" if ev.plan else "")
        case StageFinished():
            return f"{where or ev.stage} done in {ev.seconds:.1f} s"
        case StageCached():
            return f"{where} from the cache"
        case PlanFallback():
            return f"{where}: out of memory with {ev.failed_plan}; now {ev.next_plan}"
        case SegmentDone():
            return f"{ev.segment} rendered: {ev.path}"
        case PromptEnhanced():
            return f"{ev.segment}: enhanced prompt written"
        case TakeStarted():
            return f"{ev.segment}: take {ev.seed} started"
        case TakeFinished():
            return f"{ev.segment}: take {ev.seed} rendered: {ev.path}"
        case JobFinished():
            return f"job {ev.job_id[:8]} finished in {ev.seconds:.0f} s: {ev.path}"
        case JobCancelled():
            return f"job {ev.job_id[:8]} cancelled"
        case ErrorEvent():
            return f"✖ {where or 'render'} failed ({ev.kind}): {ev.message}"
        case Log():
            return f"{ev.level}: {ev.message}" if ev.level in ("warning", "error") else ev.message
    return ""


def finite_psnr(values: list[float], cap: float = 60.0) -> list[float]:
    """PSNR for drawing: identical frames are +inf; cap them so the sparkline keeps scale."""
    return [cap if (math.isinf(v) or math.isnan(v) or v > cap) else v for v in values]


__all__ = ["LiveState", "StageTimer", "SegmentLive", "JobLive", "TakeLive", "TakesLive", "STAGE_WEIGHT",
           "finite_psnr"]
