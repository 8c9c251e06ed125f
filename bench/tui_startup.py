"""How fast `sulphur edit` starts: `--help`, and the time to the first painted frame.

First paint is measured like a user sees it: the real command runs in a pseudo-terminal
(120×40) and the clock stops when the segment list's first row reaches the terminal.
Prints one JSON object. Goal: < 1 s to first paint.

    python bench/tui_startup.py [--runs 5] [--storyboard storyboards/example.toml]
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


def time_help(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.cli.main", "edit", "--help"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def time_first_paint(storyboard: Path, marker: bytes, images: str, timeout: float = 20.0) -> float:
    """Seconds from exec to ``marker`` appearing on the pty; then ctrl+q."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "SULPHUR_TUI_IMAGES": images}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "edit", str(storyboard)], stdin=slave,
                            stdout=slave, stderr=slave, env=env, cwd=storyboard.parent, close_fds=True,
                            start_new_session=True)
    os.close(slave)
    seen = b""
    elapsed = float("nan")
    try:
        while time.perf_counter() - t0 < timeout:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:
                    break
                seen += chunk
                if marker in seen:
                    elapsed = time.perf_counter() - t0
                    break
        os.write(master, b"\x11")  # ctrl+q
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    finally:
        # Drain so the child never blocks on a full pty buffer while exiting.
        while select.select([master], [], [], 0.1)[0]:
            try:
                if not os.read(master, 1 << 16):
                    break
            except OSError:
                break
        os.close(master)
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--storyboard", type=Path, default=ROOT / "storyboards" / "example.toml")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        story = Path(tmp) / "story.toml"
        shutil.copy(args.storyboard, story)
        first_id = next(line.split('"')[1] for line in story.read_text().splitlines()
                        if line.strip().startswith("id ="))
        help_s = time_help(args.runs)
        paint = {mode: [time_first_paint(story, first_id.encode(), mode) for _ in range(args.runs)]
                 for mode in ("halfblock", "auto")}
    import textual

    result = {
        "bench": "tui_startup",
        "edit_help_s": {"median": statistics.median(help_s), "min": min(help_s), "runs": help_s},
        "first_paint_s": {mode: {"median": statistics.median(v), "min": min(v), "runs": v}
                          for mode, v in paint.items()},
        "goal_first_paint_s": 1.0,
        "note": "auto = textual-image probes the terminal for sixel/kitty graphics (0.1 s timeouts when the "
                "terminal does not answer, as this pty does not); halfblock (the default) skips it",
        "python": platform.python_version(), "textual": textual.__version__, "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
