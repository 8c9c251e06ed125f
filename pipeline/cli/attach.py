"""The commands that talk to a project's background worker: ``sulphur status`` and
``sulphur render --attach`` (the worker client library itself prints nothing)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.cli.output import ProgressPrinter, json_printer
from pipeline.project.files import check_regular, describe_os_error
from pipeline.render.errors import STORYBOARD_KINDS
from pipeline.wire.framing import GOODBYE
from pipeline.wire.protocol import ErrorEvent, Event, JobCancelled, JobFinished, Log, StatusSnapshot
from pipeline.worker.client import (
    EventStream,
    WorkerClient,
    WorkerError,
    WorkerNotRunning,
    journal_snapshot,
    journal_state,
)


def format_snapshot(snap: StatusSnapshot) -> str:
    head = f"worker PID {snap.pid}" if snap.pid else "no worker running"
    lines = [f"{head} · {snap.project}"]
    if not snap.jobs:
        lines.append("  no jobs")
    for job in snap.jobs:
        where = ""
        if job.state == "running" and job.stage:
            steps = f" {job.step}/{job.total}" if job.total else ""
            where = f"  {job.segment or 'film'} › {job.stage}{steps}"
        elif job.error:
            where = f"  {job.error}"
        segs = ",".join(job.segments)
        lines.append(f"  {job.job_id}  {job.state:<9} {Path(job.storyboard).name} [{segs}]{where}")
    return "\n".join(lines)


def main_status(args: argparse.Namespace) -> int:
    """``sulphur status``: the worker's snapshot; with no worker, the journal's history.

    A journal with unfinished jobs and no worker means the worker died: the command
    starts one, which resumes them, and reports its status.
    """
    project = Path(getattr(args, "project", None) or Path.cwd()).expanduser().resolve()
    if not project.exists():  # "no worker running" would read as a healthy, idle project
        print(f"sulphur status: {project}: no such project folder", file=sys.stderr)
        return 2
    try:
        client = WorkerClient.connect(project, start=False)
    except WorkerNotRunning:
        offline = journal_snapshot(project)
        pending = [j for j in offline.jobs if j.state in ("queued", "running")]
        if not pending:
            _print_snapshot(offline, args)
            return 0
        print(f"resuming {len(pending)} unfinished job(s) in a new worker", file=sys.stderr)
        try:
            client = WorkerClient.connect(project, start=True)
        except WorkerError as exc:
            print(f"sulphur status: {exc}", file=sys.stderr)
            _print_snapshot(offline, args)
            return 1
    except WorkerError as exc:
        print(f"sulphur status: {exc}", file=sys.stderr)
        return 1
    with client:
        _print_snapshot(client.status(), args)
    return 0


def _print_snapshot(snap: StatusSnapshot, args: argparse.Namespace) -> None:
    if getattr(args, "json", False):
        json_printer(snap)
    else:
        print(format_snapshot(snap))


# ------------------------------------------------------------ render --attach


def main_render_attach(args: argparse.Namespace) -> int:
    """``sulphur render FILE --attach``: submit to the worker (starting it if needed) and follow the job.

    Ctrl-C detaches (the render goes on in the worker). If the worker dies mid-job the
    command starts a new one, which resumes the job, and keeps following; if it was
    stopped on purpose the job stays queued and the command says so.
    """
    problem = _storyboard_problem(Path(args.storyboard).expanduser())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    storyboard = Path(args.storyboard).expanduser().resolve()
    segments = list(getattr(args, "segment", None) or [])
    from_ = getattr(args, "from_", None)
    # --segment with --from: refused by argparse (a mutually exclusive group)
    mode = "segments" if segments else "from" if from_ else "all"
    json_events = bool(getattr(args, "json", False))
    show = json_printer if json_events else ProgressPrinter()
    project = storyboard.parent
    try:
        client = WorkerClient.connect(project, start=True)
        stream = client.events()  # subscribe before submitting: no event can slip by
    except WorkerError as exc:
        return _attach_error(exc, "worker", json_events, 1)
    try:
        job_id = client.submit(storyboard, mode, segments or ([from_] if from_ else []),
                               preset=getattr(args, "preset", None) or "")
    except WorkerError as exc:  # refused: bad storyboard or segment id
        client.close()
        return _attach_error(exc, "rejected", json_events, 2)
    print(f"job {job_id} on worker for {project} (Ctrl-C detaches; the render goes on)", file=sys.stderr)
    crashes = 0
    try:
        while True:
            code, said_goodbye = _follow(stream, job_id, show, print_path=not json_events)
            client.close()
            if code is not None:
                return code
            # The stream ended before the job did: the worker stopped (it says goodbye) or died.
            state = journal_state(project, job_id)
            if state in ("done", "failed", "cancelled"):
                return {"done": 0, "failed": 1, "cancelled": 130}[state]
            if said_goodbye and state == "queued":
                print(f"the worker stopped; job {job_id} stays queued and resumes when a worker starts "
                      "(any sulphur command for this project starts one)", file=sys.stderr)
                return 75
            crashes += 1
            if crashes > 3:
                print(f"the worker keeps dying; see {project / '.sulphur' / 'worker.log'}", file=sys.stderr)
                return 1
            why = ("the worker stopped and another took over" if said_goodbye else
                   "the worker died mid-job; starting a new one to resume it")
            show(Log(job_id=job_id, level="warning", message=why))
            client = WorkerClient.connect(project, start=True)
            stream = client.events()
    except KeyboardInterrupt:
        print(f"\ndetached; job {job_id} goes on in the worker (sulphur status)", file=sys.stderr)
        return 130
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _storyboard_problem(path: Path) -> str:
    """Why ``path`` cannot be submitted, worded as the headless render words it (a FIFO, a
    folder or /dev/zero read "file not found" here), or "". ``stat`` only: never opens it."""
    try:
        check_regular(path)
    except FileNotFoundError:
        return f"{path}: file not found"
    except OSError as exc:
        return describe_os_error(path, exc)
    return ""


def _attach_error(exc: WorkerError, kind: str, json_events: bool, code: int) -> int:
    if json_events:
        json_printer(ErrorEvent(kind=kind, message=str(exc)))
    print(f"error: {exc}", file=sys.stderr)
    return code


def _follow(stream: EventStream, job_id: str, show: Callable[[Event], None], *,
            print_path: bool) -> tuple[int | None, bool]:
    """Print the job's events until it ends (exit code) or the stream does (None).

    The flag says whether the worker said goodbye (a clean stop) before the stream ended.
    """
    goodbye = False
    for event in stream:
        if isinstance(event, StatusSnapshot):
            for job in event.jobs:  # attached late (after a restart): the job may be over already
                if job.job_id == job_id and job.state in ("done", "failed", "cancelled"):
                    return {"done": 0, "failed": 1, "cancelled": 130}[job.state], goodbye
            continue
        if isinstance(event, Log) and not event.job_id and event.message.startswith(GOODBYE):
            goodbye = True
        if event.job_id != job_id:
            continue
        show(event)
        if isinstance(event, JobFinished):
            if print_path:
                print(event.path)
            return 0, goodbye
        if isinstance(event, ErrorEvent):  # a storyboard refusal exits 2, as the headless render's does
            return (2 if event.kind in STORYBOARD_KINDS or event.kind == "storyboard" else 1), goodbye
        if isinstance(event, JobCancelled):
            return 130, goodbye
    return None, goodbye
