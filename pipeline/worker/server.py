"""The background render worker: one detached process per project that owns the GPU.

Process model
    ``sulphur worker`` (or the first client that finds none running) spawns
    ``python -m pipeline.cli worker --foreground --project DIR`` in a new session with its
    output in ``DIR/.sulphur/worker.log``; it is spawned, never forked, so no CUDA state
    crosses a fork, and it outlives the terminal and the SSH login that started it. It
    holds ``DIR/.sulphur/worker.lock`` (``flock`` + its PID) for its whole life: a
    second worker for the same project refuses to start and names the holder. The
    process has three kinds of threads: the asyncio loop (socket, journal, fan-out), one
    render thread that runs jobs one at a time through :func:`pipeline.render.runner.render`
    and keeps loaded models between jobs, and a VRAM sampler (when NVML works) that
    emits a ``VramSample`` about every second while a job runs. All torch state lives in
    the render thread; the loop never waits on it.

Protocol
    A Unix socket ``DIR/.sulphur/worker.sock`` (mode 0600, no TCP), one JSON object per
    line, the typed messages of :mod:`pipeline.wire.protocol`. Requests: ``Submit`` → ``Ack``
    with the job id (a job identical to a pending one is not queued twice: the Ack names
    the pending job), ``Cancel`` → ``Ack``, ``GetStatus`` → a ``StatusSnapshot``,
    ``Subscribe`` → ``Ack``, then a ``StatusSnapshot``, then every event as it happens,
    ``Shutdown`` → ``Ack``. Anything else gets a ``Reject`` and the connection stays
    usable: a line over ``MAX_LINE_BYTES`` is answered as soon as it crosses the limit and
    skipped up to its newline; a line that is not JSON, or not a known request, is
    answered with its ``id`` when one can be read. Each client has its own bounded
    outgoing queue, so a slow reader never slows the render: past ``QUEUE_SOFT`` queued
    messages its ``StepProgress``/``VramSample`` are dropped (oldest first); lifecycle
    events and replies never are, and a client that lets ``QUEUE_HARD`` of those pile up
    is disconnected. Every subscriber receives the same encoded bytes in the same order.

Journal
    ``DIR/.sulphur/journal.db`` (SQLite, WAL, ``synchronous=FULL``; :mod:`pipeline.worker.journal`).
    A job row is committed before its ``Ack`` is sent. States: queued → running → done /
    failed / cancelled. Every event except the high-rate ones is appended, so the history
    of a job survives the worker, and ``sulphur status`` can show it with no worker.

Recovery
    At start the worker turns ``running`` rows (its predecessor died mid-job) back into
    ``queued``, counting the crash, and queues every queued job in submission order; a
    job whose worker died ``MAX_CRASHES`` times is failed instead of resumed, so a job
    that kills the process cannot crash-loop every client command. Any client that
    finds no worker starts one (``sulphur status`` does so only when the journal holds
    unfinished jobs; ``render --attach`` restarts a worker that died under it, but not
    one that was stopped on purpose). Resuming costs only the
    stage that was interrupted: every finished stage is a content-addressed cache entry
    that is only renamed into place when complete, so the runner reports it as
    ``StageCached`` and moves on. An out-of-memory error is handled by the runner (a
    ``PlanFallback`` per leaner plan); when the ladder is exhausted the job fails with an
    ``ErrorEvent`` and the worker evicts every model before the next job.

Stopping
    ``sulphur worker --stop`` (a ``Shutdown`` request), SIGTERM/SIGINT and the idle
    timeout (no queued or running job and no request for ``--idle-timeout`` seconds,
    default 600, or ``$SULPHUR_WORKER_IDLE_TIMEOUT``) all stop the same way: the running
    stage is cancelled (it leaves no cache entry), the job goes back to ``queued`` so the
    next worker resumes it, subscribers get the last events, the socket is removed and
    the lock released.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pipeline.memory.loaded import LoadedModels
from pipeline.project import layout

# Imported here, not in the submit thread: a first import there would queue behind the
# render thread's import of torch (the import lock) and outlast a client's timeout.
from pipeline.project.selection import select_segments
from pipeline.project.storyboard import MAX_SEED, Storyboard, StoryboardError, load
from pipeline.render.errors import RenderError
from pipeline.render.takes import render_takes_local
from pipeline.stages.base import Cancelled
from pipeline.telemetry.gpu import GpuMonitor
from pipeline.wire.framing import (
    GOODBYE,
    LineBuffer,
    ProjectLock,
    bind_unix,
    lock_path,
    private_dir,
    socket_path,
)
from pipeline.wire.protocol import (
    FINISHED,
    MAX_LINE_BYTES,
    MAX_TAKES,
    Ack,
    Cancel,
    ErrorEvent,
    Event,
    GetStatus,
    JobCancelled,
    JobFinished,
    JobInfo,
    JobQueued,
    LatentPreview,
    Log,
    Message,
    ProtocolError,
    Reject,
    StageCached,
    StageFinished,
    StageStarted,
    StatusSnapshot,
    StepProgress,
    Submit,
    Subscribe,
    VramSample,
    decode_request,
    encode,
)
from pipeline.worker.journal import JobRecord, Journal

log = logging.getLogger("sulphur.worker")

DEFAULT_IDLE_TIMEOUT = 600.0
#: Queued messages per client past which high-rate events are dropped for that client.
QUEUE_SOFT = 256
#: Queued lifecycle messages past which a client is considered gone and disconnected.
QUEUE_HARD = 8192
#: A job whose worker died this many times while running it is not resumed again (a crash loop).
MAX_CRASHES = 3
#: Finished jobs kept in the status snapshot.
HISTORY = 50
HIGH_RATE = (StepProgress, VramSample, LatentPreview)
#: Seconds a submit may spend reading and parsing its storyboard (off the loop) before it is refused.
SUBMIT_READ_TIMEOUT = 10.0


#: Finished jobs older than this leave the journal when a worker starts ($SULPHUR_JOURNAL_RETENTION_DAYS).
DEFAULT_RETENTION_DAYS = 30.0


def journal_retention() -> float:
    """Seconds a finished job stays in the journal."""
    try:
        days = float(os.environ.get("SULPHUR_JOURNAL_RETENTION_DAYS", DEFAULT_RETENTION_DAYS))
    except ValueError:
        days = DEFAULT_RETENTION_DAYS
    return max(0.0, days) * 86400


def idle_timeout_default() -> float:
    try:
        return float(os.environ.get("SULPHUR_WORKER_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT))
    except ValueError:
        return DEFAULT_IDLE_TIMEOUT


# ------------------------------------------------------------------- clients


class _Client:
    """One connection: a bounded outgoing queue drained by its own task."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.queue: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.subscribed = False
        self.dropped = 0
        self.closed = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()  # its submits still reading their storyboard
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._drain())

    def push(self, data: bytes, droppable: bool = False) -> None:
        if self.closed.is_set():
            return
        if len(self.queue) >= QUEUE_SOFT:
            if droppable:
                self.dropped += 1
                return
            for i, (_, can_drop) in enumerate(self.queue):
                if can_drop:
                    del self.queue[i]
                    self.dropped += 1
                    break
            else:
                if len(self.queue) >= QUEUE_HARD:
                    log.warning("client not reading (%d messages queued): disconnecting it", len(self.queue))
                    self.abort()
                    return
        self.queue.append((data, droppable))
        self._wake.set()

    def reply(self, message: Message) -> None:
        self.push(encode(message))

    async def _drain(self) -> None:
        try:
            while True:
                while not self.queue:
                    self._wake.clear()
                    await self._wake.wait()
                data, _ = self.queue.popleft()
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self.writer.close()

    async def flush(self, timeout: float) -> None:
        """Send what is queued (bounded wait), then close."""
        deadline = time.monotonic() + timeout
        while self.queue and not self.closed.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.abort()

    def abort(self) -> None:
        self._task.cancel()
        self.closed.set()
        self.writer.close()


# ---------------------------------------------------------------------- jobs


@dataclass
class _Job:
    record: JobRecord
    info: JobInfo
    cancel: threading.Event = field(default_factory=threading.Event)
    user_cancelled: bool = False


def _info(rec: JobRecord) -> JobInfo:
    state = rec.state if rec.state in ("queued", "running", *FINISHED) else "failed"
    return JobInfo(job_id=rec.id, storyboard=rec.storyboard, segments=list(rec.selected), state=state,
                   seeds=list(rec.seeds), error=rec.error)


class _BadRequest(Exception):
    pass


# -------------------------------------------------------------------- worker


class Worker:
    """The server. ``run()`` blocks until the worker stops; see the module docstring."""

    def __init__(self, project: Path, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.project = Path(project).expanduser().resolve()
        self.state_dir = layout.state_dir(self.project)
        self.idle_timeout = idle_timeout
        self.lock = ProjectLock(lock_path(self.project))
        self.jobs: dict[str, _Job] = {}
        self.pending: queue.Queue[str | None] = queue.Queue()
        self.clients: set[_Client] = set()
        self.stopping = threading.Event()
        self.current: str | None = None
        self._current_lock = threading.Lock()
        self._stop_requested: asyncio.Event | None = None
        self._signals = 0
        self._last_activity = time.monotonic()
        self._models = None  # LoadedModels, created in the render thread
        self._gpu = None  # GpuMonitor, created lazily by the sampler

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Hold the lock, serve until stopped. Raises :class:`WorkerLocked`."""
        self.lock.acquire()
        try:
            asyncio.run(self._main())
        finally:
            self.lock.release()
        return 0

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        private_dir(layout.state_dir(self.project))  # 0700: the journal holds every prompt
        self.journal, warning = Journal.open_or_reset(layout.journal_db(self.project))
        if warning:
            log.warning("%s", warning)
        pruned = self.journal.prune(time.time() - journal_retention())
        if pruned:
            log.info("forgot %d finished job(s) older than the journal's retention", pruned)
        self._recover()

        path = socket_path(self.project)
        path.unlink(missing_ok=True)  # a socket left by a killed worker: we hold the lock now
        server = await asyncio.start_unix_server(self._handle, sock=bind_unix(path), limit=MAX_LINE_BYTES)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        render_thread = threading.Thread(target=self._render_loop, name="render", daemon=True)
        render_thread.start()
        idle = asyncio.create_task(self._idle_watch())
        log.info("worker %d serving %s (idle timeout %.0f s)", os.getpid(), path, self.idle_timeout)

        await self._stop_requested.wait()

        # 1. No new connections; the running stage was cancelled by request_stop.
        server.close()
        idle.cancel()
        self.pending.put(None)
        await asyncio.to_thread(render_thread.join)
        # 2. Deliver what the render thread posted last, then the goodbye.
        await asyncio.sleep(0)
        self._publish(Log(message=f"{GOODBYE} (PID {os.getpid()})"))
        await asyncio.gather(*(c.flush(2.0) for c in list(self.clients)))
        path.unlink(missing_ok=True)
        self.journal.close()
        log.info("worker %d stopped", os.getpid())

    def _recover(self) -> None:
        for rec in self.journal.jobs(FINISHED, limit=HISTORY):
            self.jobs[rec.id] = _Job(rec, _info(rec))
        for rec in self.journal.requeue_interrupted():
            self.jobs[rec.id] = _Job(rec, _info(rec))
            if rec.crashes >= MAX_CRASHES:
                message = (f"the worker died {rec.crashes} times while running this job; not resuming it again "
                           f"(see {self.state_dir / 'worker.log'}); submit it again to retry")
                self._finish(rec.id, "failed", f"crashed: {message}", "",
                             ErrorEvent(job_id=rec.id, kind="crashed", message=message))
                continue
            self.pending.put(rec.id)
            if rec.crashes:
                self._publish(Log(job_id=rec.id, level="warning",
                                  message=f"resuming job {rec.id}: its worker died while running it "
                                          f"({rec.crashes} of {MAX_CRASHES} times allowed)"))
            else:
                log.info("job %s was queued before the last worker stopped: running it", rec.id)

    def request_stop(self, why: str) -> None:
        """(Loop thread.) Checkpoint the running job and stop."""
        if not self.stopping.is_set():
            log.info("stopping: %s", why)
        self.stopping.set()
        with self._current_lock:
            if self.current is not None:
                self.jobs[self.current].cancel.set()
        assert self._stop_requested is not None
        self._stop_requested.set()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting without waiting for the stage")
            os._exit(1)  # the cache never holds partial entries, so this is safe
        self.request_stop(signal.Signals(sig).name)

    async def _idle_watch(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.idle_timeout / 4)))
            busy = any(j.info.state in ("queued", "running") for j in self.jobs.values())
            now = time.monotonic()
            if busy:
                self._last_activity = now
            elif now - self._last_activity >= self.idle_timeout:
                self.request_stop(f"idle for {self.idle_timeout:g} s")
                return

    # --------------------------------------------------------------- events

    def _publish(self, event: Event) -> None:
        """Loop thread only: update job state, journal, fan out to subscribers."""
        job = self.jobs.get(event.job_id)
        if job is not None:
            info = job.info
            if isinstance(event, StageStarted):
                info.segment, info.stage, info.step, info.total = event.segment, event.stage, 0, event.total_steps
            elif isinstance(event, StepProgress):
                info.segment, info.stage, info.step, info.total = event.segment, event.stage, event.step, event.total
            elif isinstance(event, StageFinished | StageCached):
                info.segment, info.stage, info.step = event.segment, event.stage, info.total
            elif isinstance(event, JobFinished) and info.state == "running":
                # Done as far as anyone can tell from now on; _finish confirms it when render returns.
                info.state = "done"
                try:
                    self.journal.set_state(info.job_id, "done", result=event.path)
                except Exception:
                    log.exception("journal update failed")
        if not isinstance(event, HIGH_RATE):
            try:
                self.journal.append_event(event)
            except Exception:  # a full disk must not stop the render; the log says why
                log.exception("journal append failed")
        data = encode(event)
        droppable = isinstance(event, HIGH_RATE)
        for client in self.clients:
            if client.subscribed:
                client.push(data, droppable)

    def emit_threadsafe(self, event: Event) -> None:
        """The ``emit`` callback handed to the runner (called from the render thread)."""
        try:
            self.loop.call_soon_threadsafe(self._publish, event)
        except RuntimeError:  # loop closed: only after the render thread was joined
            pass

    def snapshot(self) -> StatusSnapshot:
        from pipeline.models.registry import all_presets  # no torch: names and defaults only

        return StatusSnapshot(pid=os.getpid(), project=str(self.project),
                              jobs=[j.info for j in self.jobs.values()],
                              presets=sorted(p.name for p in all_presets()))

    # -------------------------------------------------------------- clients

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        self.clients.add(client)
        lines = LineBuffer()
        try:
            while not client.closed.is_set():
                data = await reader.read(1 << 16)
                if not data:
                    break
                for line in lines.feed(data):
                    if line is None:
                        client.reply(Reject(error=f"message longer than {MAX_LINE_BYTES} bytes: skipped up to "
                                                  "the next newline"))
                    elif line.strip():
                        self._dispatch(client, line)
            if client.tasks:  # a client that sent a submit and closed its side still gets the reply
                await asyncio.wait(set(client.tasks), timeout=SUBMIT_READ_TIMEOUT + 1)
            if client.subscribed:
                await client.closed.wait()  # half-closed subscriber: keep sending events
            else:
                await client.flush(5.0)
        except (ConnectionError, OSError):
            pass
        finally:
            self.clients.discard(client)
            client.abort()

    def _dispatch(self, client: _Client, line: bytes) -> None:
        self._last_activity = time.monotonic()
        try:
            request = decode_request(line)
        except ProtocolError as exc:
            client.reply(Reject(id=_guess_id(line), error=f"bad request: {exc}"))
            return
        except RecursionError:  # msgspec's depth limit: a reply, never a dropped connection
            client.reply(Reject(id=_guess_id(line), error="bad request: JSON nested too deeply"))
            return
        if isinstance(request, Submit):
            # The storyboard is read and parsed off the loop: a slow or hostile file must
            # never freeze status, cancel or SIGTERM for everyone else.
            task = asyncio.create_task(self._submit_async(client, request))
            client.tasks.add(task)
            task.add_done_callback(client.tasks.discard)
            return
        try:
            if isinstance(request, Cancel):
                client.reply(self._cancel(request))
            elif isinstance(request, GetStatus):
                client.reply(self.snapshot())
            elif isinstance(request, Subscribe):
                client.reply(Ack(id=request.id))
                client.reply(self.snapshot())
                client.subscribed = True
            else:  # Shutdown
                client.reply(Ack(id=request.id))
                self.request_stop("shutdown requested by a client")
        except _BadRequest as exc:
            client.reply(Reject(id=request.id, error=str(exc)))
        except Exception as exc:
            log.exception("request failed")
            client.reply(Reject(id=request.id, error=f"internal error: {type(exc).__name__}: {exc}"))

    async def _submit_async(self, client: _Client, req: Submit) -> None:
        """Read the storyboard in a thread under :data:`SUBMIT_READ_TIMEOUT`, then queue on the loop."""
        try:
            path = self._submit_path(req)
            try:
                sb = await asyncio.wait_for(_off_loop(_read_storyboard, path), SUBMIT_READ_TIMEOUT)
            except TimeoutError:
                raise _BadRequest(f"{path}: not read within {SUBMIT_READ_TIMEOUT:g} s; refused") from None
            client.reply(self._submit(req, path, sb))
        except _BadRequest as exc:
            client.reply(Reject(id=req.id, error=str(exc)))
        except Exception as exc:
            log.exception("submit failed")
            client.reply(Reject(id=req.id, error=f"internal error: {type(exc).__name__}: {exc}"))

    def _submit_path(self, req: Submit) -> Path:
        if self.stopping.is_set():
            raise _BadRequest("the worker is shutting down; submit again to start a new one")
        path = Path(req.storyboard).expanduser()
        path = (path if path.is_absolute() else self.project / path).resolve()
        if path.parent != self.project:
            raise _BadRequest(f"{path} is not in this worker's project folder {self.project}")
        return path

    def _submit(self, req: Submit, path: Path, sb: Storyboard) -> Ack:
        """(Loop thread.) Queue a job for a storyboard already read and validated."""
        if self.stopping.is_set():
            raise _BadRequest("the worker is shutting down; submit again to start a new one")
        wanted = list(req.segments)
        if req.mode == "segments" and not wanted:
            raise _BadRequest("mode 'segments' needs at least one segment id")
        if req.mode in ("from", "takes") and len(wanted) != 1:
            raise _BadRequest(f"mode '{req.mode}' needs exactly one segment id")
        seeds = _takes_seeds(req)
        if req.mode == "all":
            wanted = []
        try:
            selected = select_segments(sb, wanted if req.mode in ("segments", "takes") else None,
                                       wanted[0] if req.mode == "from" else None)
        except StoryboardError as exc:
            raise _BadRequest(str(exc)) from None
        for job in self.jobs.values():
            r = job.record
            if job.info.state in ("queued", "running") and not job.cancel.is_set() and (
                    r.storyboard, r.mode, r.segments, r.preset, r.seeds) == (str(path), req.mode, wanted,
                                                                            req.preset, seeds):
                return Ack(id=req.id, job_id=r.id)  # already pending: follow that one
        rec = JobRecord(id=uuid.uuid4().hex[:12], storyboard=str(path), mode=req.mode, segments=wanted,
                        selected=selected, preset=req.preset, seeds=seeds)
        self.journal.add_job(rec)  # on disk before the Ack
        self.jobs[rec.id] = _Job(rec, _info(rec))
        self._publish(JobQueued(job_id=rec.id, storyboard=rec.storyboard, segments=selected, seeds=seeds))
        self.pending.put(rec.id)
        return Ack(id=req.id, job_id=rec.id)

    def _cancel(self, req: Cancel) -> Ack:
        job_id = req.job_id or self.current
        if not job_id:
            raise _BadRequest("no job is running")
        job = self.jobs.get(job_id)
        if job is None:
            raise _BadRequest(f"unknown job {job_id!r}")
        if job.info.state in FINISHED:
            raise _BadRequest(f"job {job_id} is already {job.info.state}")
        with self._current_lock:
            running = self.current == job_id
            job.user_cancelled = True
            job.cancel.set()
        if not running:  # still queued: the render thread will skip it
            self._finish(job_id, "cancelled", "cancelled before it started", "", JobCancelled(job_id=job_id))
        return Ack(id=req.id, job_id=job_id)

    def _prune(self) -> None:
        done = [jid for jid, j in self.jobs.items() if j.info.state in FINISHED]
        for jid in done[:-HISTORY]:
            del self.jobs[jid]

    # ---------------------------------------------------------- render side

    def _started(self, job_id: str) -> None:
        self.journal.set_state(job_id, "running", started=True)
        self.jobs[job_id].info.state = "running"

    def _finish(self, job_id: str, state: str, error: str, result: str, event: Event | None = None) -> None:
        """Record how a job ended, then tell subscribers: whoever hears the end sees it in status too."""
        job = self.jobs[job_id]
        self.journal.set_state(job_id, state, error=error, result=result)
        job.info.state = state  # type: ignore[assignment]
        job.info.error = error
        self._last_activity = time.monotonic()
        if event is not None:
            self._publish(event)
        if state == "queued":
            self._publish(Log(job_id=job_id, message=f"job {job_id} checkpointed: it resumes when a worker "
                                                     "starts again"))
        self._prune()

    def _post(self, fn: object, *args: object) -> None:
        self.loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    def _render_loop(self) -> None:
        try:
            import pipeline.render.runner  # noqa: F401  (pay for torch now, not in the first job)
        except Exception:
            log.exception("cannot import the renderer")
        while not self.stopping.is_set():
            job_id = self.pending.get()
            if job_id is None or self.stopping.is_set():
                return
            job = self.jobs.get(job_id)
            with self._current_lock:
                if job is None or job.cancel.is_set():
                    continue
                self.current = job_id
            self._post(self._started, job_id)
            try:
                state, error, result, event = self._run_job(job)
            finally:
                with self._current_lock:
                    self.current = None
            self._post(self._finish, job_id, state, error, result, event)

    def _run_job(self, job: _Job) -> tuple[str, str, str, Event | None]:
        """Render one job: (state, error, result path, the event that says how it ended)."""
        rec = job.record
        stop_sampler = threading.Event()
        threading.Thread(target=self._sample_vram, args=(rec.id, stop_sampler), name="vram", daemon=True).start()
        try:
            from pipeline.render.engines import render  # $SULPHUR_ENGINE: local (default) or ray

            if self._models is None:
                self._models = LoadedModels()
            try:
                if rec.mode == "takes":  # one after another, with the models this worker keeps
                    takes = render_takes_local(rec.storyboard, rec.segments[0], rec.seeds, preset=rec.preset or None,
                                               emit=self.emit_threadsafe, cancel=job.cancel, job_id=rec.id,
                                               models=self._models)
                    return "done", "", str(next(iter(takes.values())).parent), None
                path = render(rec.storyboard, segments=rec.segments if rec.mode == "segments" else None,
                              from_segment=rec.segments[0] if rec.mode == "from" else None,
                              preset=rec.preset or None, emit=self.emit_threadsafe, cancel=job.cancel,
                              job_id=rec.id, models=self._models)
                return "done", "", str(path), None  # the runner already emitted JobFinished
            except Cancelled:
                if self.stopping.is_set() and not job.user_cancelled:
                    return "queued", "", "", None
                return "cancelled", "cancelled", "", JobCancelled(job_id=rec.id, segment=job.info.segment,
                                                                  stage=job.info.stage)
            except RenderError as exc:
                self._models.make_room(reason="the job failed")
                return "failed", f"{exc.kind}: {exc.message}", "", exc.to_event(rec.id)
            except StoryboardError as exc:
                return "failed", f"storyboard: {exc}", "", ErrorEvent(job_id=rec.id, kind="storyboard",
                                                                      message=str(exc))
        except Exception as exc:
            log.error("job %s crashed:\n%s", rec.id, traceback.format_exc())
            if self._models is not None:
                self._models.make_room(reason="the job crashed")
            message = f"{type(exc).__name__}: {exc}"
            return "failed", f"internal: {message}", "", ErrorEvent(job_id=rec.id, kind="internal", message=message,
                                                                    stage=job.info.stage, segment=job.info.segment)
        finally:
            stop_sampler.set()

    def _sample_vram(self, job_id: str, stop: threading.Event) -> None:
        """VramSample about once a second while a job runs (NVML through pipeline.telemetry.gpu)."""
        if self._gpu is None:
            self._gpu = GpuMonitor()
        if not getattr(self._gpu, "available", False):
            return
        while not stop.wait(1.0):
            try:
                samples = self._gpu.sample()
            except Exception:
                log.exception("VRAM sampling failed; no more samples")
                return
            allocated, reserved, device = _torch_memory()
            for s in samples:
                s.job_id = job_id
                if s.gpu == device:
                    s.torch_allocated, s.torch_reserved = allocated, reserved
                self.emit_threadsafe(s)


def _torch_memory() -> tuple[int, int, int]:
    """This process's torch allocator figures, without importing torch or initialising CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return 0, 0, -1
    device = torch.cuda.current_device()
    return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device), device


def _off_loop(fn: object, *args: object) -> asyncio.Future:
    """Run ``fn(*args)`` in a daemon thread: one stuck in the kernel can neither freeze the
    loop nor hold up the worker's exit (``asyncio.to_thread`` joins its threads at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: object, error: BaseException | None) -> None:
        if future.done():  # the submit timed out and went away
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None  # type: ignore[operator]
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            pass

    threading.Thread(target=run, name="submit-read", daemon=True).start()
    return future


def _read_storyboard(path: Path) -> Storyboard:
    """(A thread.) Load a storyboard; special files are refused unopened."""
    try:
        return load(path)
    except StoryboardError as exc:
        raise _BadRequest(str(exc)) from None


def _takes_seeds(req: Submit) -> list[int]:
    """A takes job's seeds, each once, in the order asked; refused outside ``mode = "takes"``."""
    if req.mode != "takes":
        if req.seeds:
            raise _BadRequest(f"seeds are for mode 'takes', not '{req.mode}'")
        return []
    seeds = list(dict.fromkeys(req.seeds))
    if not seeds:
        raise _BadRequest("mode 'takes' needs at least one seed")
    if len(seeds) > MAX_TAKES:
        raise _BadRequest(f"at most {MAX_TAKES} takes per job ({len(seeds)} asked)")
    if any(not 0 <= s <= MAX_SEED for s in seeds):
        raise _BadRequest(f"seeds are whole numbers from 0 to {MAX_SEED}")
    return seeds


def _guess_id(line: bytes) -> str:
    """The ``id`` of a request that failed validation, when the line is JSON at all."""
    try:
        data = msgspec.json.decode(line)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return ""
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
