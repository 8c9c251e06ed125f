"""Key-to-screen latency of the editor while a render streams events into it.

The real app runs in a pseudo-terminal (120×40). Render events arrive either from a
recorded tiny render replayed at its recorded pace (default; `--speed` to compress it)
or, with `--worker`, from a real render worker rendering the storyboard with the tiny
preset. The bench presses ↓/↑ in the shot list and times each key until the shot
editor's title for the newly selected shot ("Shot 2/3") has been written to the
terminal. Prints one JSON object. Goal: < 50 ms.

    python bench/tui_latency.py [--presses 40] [--speed 1] [--worker]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import pty
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDING = ROOT / "tests" / "tui" / "data" / "render-tiny.jsonl"
UP, DOWN = b"\x1b[A", b"\x1b[B"


class Term:
    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     close_fds=True, start_new_session=True)
        os.close(slave)
        self.events = 0

    def wait_for(self, marker: bytes, timeout: float) -> float | None:
        """Seconds until ``marker`` is written (None on timeout)."""
        t0 = time.perf_counter()
        seen = b""
        while (left := timeout - (time.perf_counter() - t0)) > 0:
            ready, _, _ = select.select([self.master], [], [], min(left, 0.05))
            if ready:
                chunk = os.read(self.master, 1 << 16)
                seen = seen[-256:] + chunk
                if marker in seen:
                    return time.perf_counter() - t0
        return None

    def drain(self, seconds: float) -> int:
        end, n = time.perf_counter() + seconds, 0
        while (left := end - time.perf_counter()) > 0:
            if select.select([self.master], [], [], left)[0]:
                n += len(os.read(self.master, 1 << 16))
        return n

    def press(self, key: bytes) -> None:
        os.write(self.master, key)

    def close(self) -> None:
        try:
            self.press(b"\x11")  # ctrl+q
            self.drain(0.5)
            self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
        os.close(self.master)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presses", type=int, default=40)
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (ignored with --worker)")
    p.add_argument("--worker", action="store_true", help="a real worker renders while keys are pressed")
    p.add_argument("--storyboard", type=Path, default=ROOT / "tests" / "tui" / "data" / "story.toml")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sulphur-latency-"))
    story = tmp / "story.toml"
    shutil.copy(args.storyboard, story)
    client = None
    if args.worker:
        from pipeline.worker.client import WorkerClient

        client = WorkerClient.connect(tmp, start=True, timeout=120)
        argv = [sys.executable, "-m", "pipeline.cli.main", "edit", str(story)]
    else:
        argv = [sys.executable, "-m", "sulphur_tui.app", str(story), "--replay", str(RECORDING),
                "--speed", str(args.speed)]
    term = Term(argv, tmp)
    samples: list[float] = []
    misses = 0
    try:
        if term.wait_for(b"Shot 1/3", 30) is None:
            raise SystemExit("the editor did not start")
        if client is not None:
            client.submit(story, mode="all")
        term.drain(3.0)  # let the render (or replay) get going
        for i in range(args.presses):
            key, marker = (DOWN, b"Shot 2/3") if i % 2 == 0 else (UP, b"Shot 1/3")
            term.drain(0.05)  # forget output that belongs to earlier keys
            t0 = time.perf_counter()
            term.press(key)
            dt = term.wait_for(marker, 2.0)
            if dt is None:
                misses += 1
            else:
                samples.append(time.perf_counter() - t0)
    finally:
        term.close()
        if client is not None:
            try:
                client.cancel("")
                client.shutdown()
            except Exception:  # noqa: BLE001 - the bench result matters more than cleanup noise
                pass
            client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ms = sorted(s * 1000 for s in samples)
    import textual

    print(json.dumps({
        "bench": "tui_latency",
        "source": "worker" if args.worker else f"replay x{args.speed:g}",
        "presses": args.presses, "misses": misses,
        "key_to_screen_ms": {"median": statistics.median(ms) if ms else None,
                             "p90": ms[int(0.9 * (len(ms) - 1))] if ms else None,
                             "max": ms[-1] if ms else None},
        "goal_ms": 50,
        "python": platform.python_version(), "textual": textual.__version__, "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
