"""Why segments 2..N step slower than segment 1: one resident LTX-2 step (Q4_0 GGUF weights with the
Triton dequant, as the uncapped render holds them; render-shaped inputs) timed alone and beside
each kind of work the local engine runs behind the GPU stages (pipeline/render/overlap.py):

* ``idle``: nothing else runs.
* ``x264``: the real segment encode (``encode_in_fresh_process``, 1080p) in a loop, at the
  lane's nice value, on any CPU.
* ``x264_apart``: the same, kept off one physical core (``pipeline.render.overlap.lane_cpus``),
  as the runner's lanes are; ``x264_pinned``: and the stepping thread pinned to that core.
* ``analysis``: the real flicker analysis of 1080p frames in a loop on a lane thread.
* ``python``: a thread running pure Python (the worst case for the GIL).

Per step: wall seconds (synchronised) and ``enqueue_s``, how long ``model(...)`` took to return.
An ``enqueue_s`` close to the step means either a host-bound step or one that synchronises
inside (``bench/step_launch.py`` tells which). Prints JSON.

    python bench/step_contention.py --out bench/results/step_contention_<gpu>_<date>.json
    python bench/step_contention.py --layers 1 --frames 9 --draft 64x32 --steps 2   # CPU smoke
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from encode import _frames as moving_frames  # noqa: E402
from ltx2_inputs import ltx2_step_inputs  # noqa: E402
from machine_info import machine, print_report  # noqa: E402
from resident_step import add_arguments, setup, shape_size, time_steps  # noqa: E402

from pipeline.memory.planner import audio_tokens  # noqa: E402
from pipeline.quality import flicker  # noqa: E402
from pipeline.render import overlap  # noqa: E402
from pipeline.stages.encode import encode_in_fresh_process  # noqa: E402


def _loop(stop: threading.Event, work: Callable[[], None], cpus: set[int]) -> None:
    overlap.enter_lane(cpus)  # as the render's lanes start
    while not stop.is_set():
        work()


@contextlib.contextmanager
def pinned_to(cpus: set[int]) -> Iterator[None]:
    """The calling thread on ``cpus`` alone while the block runs, its affinity restored after
    (enter it after :func:`behind`: a thread started by a pinned thread stays pinned)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def behind(work: Callable[[], None] | None, cpus: set[int]) -> Iterator[None]:
    """``work`` repeated on a lane thread while the block runs."""
    if work is None:
        yield
        return
    stop = threading.Event()
    t = threading.Thread(target=_loop, args=(stop, work, cpus), daemon=True)
    t.start()
    time.sleep(1.0)  # let it get going (the encode child starts and loads its frames)
    try:
        yield
    finally:
        stop.set()
        t.join()


def _pure_python() -> None:
    n = 0
    for i in range(200_000):
        n += i * i


def _cpu_info() -> dict[str, Any]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:  # no lscpu on this machine
        return {}
    keep = ("Model name", "Thread(s) per core", "Core(s) per socket", "Socket(s)", "CPU max MHz")
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
            if k.strip() in keep}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, steps=6)
    ap.add_argument("--conditions", default="idle,x264,x264_apart,x264_pinned,analysis,python,idle")
    args = ap.parse_args()
    model, report = setup(args, "step_contention", machine(["torch", "diffusers", "av"]) | {"cpu": _cpu_info()})
    device = report["device"]
    report["results"] = []
    frames = moving_frames(args.frames, (1920, 1080))
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "frames.npy"
        np.save(npy, np.stack(frames))
        out = Path(tmp) / "seg.mp4"

        def encode() -> None:
            encode_in_fresh_process(out, npy, None, 48000, fps=24, size=(1920, 1080))

        def analysis() -> None:
            flicker.analyze_frames(frames, fps=24)

        feeder, lanes = overlap.feeder_cpus(), overlap.lane_cpus()
        report["feeder_cpus"] = sorted(feeder) if feeder else None
        loads: dict[str, tuple[Callable[[], None] | None, set[int]]] = {
            "idle": (None, set()), "x264": (encode, set()), "x264_apart": (encode, lanes),
            "x264_pinned": (encode, lanes), "analysis": (analysis, set()), "python": (_pure_python, set())}
        for shape in args.shapes.split(","):
            size = shape_size(report["draft"], shape)
            inputs = ltx2_step_inputs(model.config, size, args.frames, audio_tokens=audio_tokens(args.frames, 24),
                                      device=device, text_tokens=1024, as_rendered=True)
            for cond in args.conditions.split(","):
                work, cpus = loads[cond]
                if cond.endswith(("_apart", "_pinned")) and not feeder:
                    continue
                pinned = pinned_to(feeder) if cond.endswith("_pinned") else contextlib.nullcontext()
                with behind(work, cpus), pinned:
                    row = time_steps(model, inputs, args.steps, device)
                report["results"].append({"shape": shape, "size": list(size), "condition": cond} | row)
                print(f"{shape} {cond}: {row}", file=sys.stderr)
            del inputs
    idle = {r["shape"]: r["step_s"] for r in report["results"] if r["condition"] == "idle"}
    for r in report["results"]:
        r["over_idle"] = round(r["step_s"] / idle[r["shape"]], 3) if idle.get(r["shape"]) else None
    return print_report(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
