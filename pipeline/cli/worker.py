"""``sulphur worker``: start a project's render worker detached, run it in this terminal
(``--foreground``, how the client spawns it), or ``--stop`` it."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from pipeline.wire.framing import WorkerLocked
from pipeline.worker.client import WorkerClient, WorkerError, stop_worker
from pipeline.worker.server import Worker, idle_timeout_default


def main(args: argparse.Namespace) -> int:
    """``sulphur worker``: start detached (default), run in this terminal, or ``--stop``."""
    project = Path(getattr(args, "project", None) or Path.cwd()).expanduser().resolve()
    idle = getattr(args, "idle_timeout", None)
    idle = idle_timeout_default() if idle is None else float(idle)
    if getattr(args, "stop", False):
        return stop_worker(project, say=_say)
    if not getattr(args, "foreground", False):
        try:
            client = WorkerClient.connect(project, start=True, idle_timeout=idle)
        except WorkerError as exc:
            print(f"sulphur worker: {exc}", file=sys.stderr)
            return 1
        snap = client.status()
        client.close()
        print(f"worker running for {project} (PID {snap.pid}); log: {project / '.sulphur' / 'worker.log'}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return Worker(project, idle).run()
    except WorkerLocked as exc:
        print(f"sulphur worker: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.OperationalError) as exc:  # a full or read-only disk at start: one line
        print(f"sulphur worker: cannot start in {project}: {getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)
        return 1


def _say(line: str, is_error: bool) -> None:
    print(line, file=sys.stderr if is_error else sys.stdout)
