"""N chained segments, capped and uncapped in one run, against their resident transformer steps.

Renders the same chained storyboard (N segments, each continuing from the last frame of the
one before) twice with ``sulphur render --json`` in a subprocess, each in its own folder (so
neither reads the other's stage cache): once under ``vram_budget_gb`` / ``ram_budget_gb``
(8 / 32 by default), once with no caps. Host RSS, NVML GPU memory and the bytes the render
reads from disk are sampled (bench/segment_budget.py's sampler). Then the bf16 transformer,
resident in this process, times one draft and one refine step: a segment's resident steps
are ``steps × draft step + refine steps × refine step``.

Steady state is segments 2..N (the first carries the cold loads), measured as the wall time
between consecutive segment completions: the local engine encodes segment k while segment k+1
drafts, so stage seconds overlap (their plain sums stay in ``steady_stage_sum_*``). Figures (issue 20):
``steady_capped_over_uncapped`` (goal ≤ 1.25), ``steady_uncapped_over_steps`` (goal ≤ 2.5),
``cold_to_first_step_s`` against ``cold_io_bound_s`` = 1.5 × (bytes the capped render read
before its first draft step ÷ this disk's measured read bandwidth) + the text-encoder pass.
The ``ltx2-19b-random`` preset builds its weights in memory, so its bytes read are small and
the bound is mostly the text-encoder pass; it becomes the real I/O bound with file weights.

    python bench/chain.py                                 # H200: 3 × 121 frames, < 9 minutes
    python bench/chain.py --smoke                         # CPU: tiny preset, 9 frames, end to end
    python bench/chain.py --worker --profile DIR          # + the capped render through the worker, py-spy traces
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_sampler import CpuSampler  # noqa: E402
from gpu_clocks import GpuClockSampler  # noqa: E402
from machine_info import machine  # noqa: E402
from segment_budget import GiB, ProcessSampler, phases, resident_steps  # noqa: E402

#: pipeline/memory/cuda_graphs.py's switch ("0": every step eager), named here so the bench imports no torch
GRAPHS_ENV = "SULPHUR_CUDA_GRAPHS"

from pipeline.wire import protocol  # noqa: E402

PROMPTS = ("A lighthouse on a rocky cliff at dawn, waves breaking below, gulls calling",
           "The lighthouse beam sweeps across a stormy sea as rain begins to fall",
           "A small fishing boat rounds the headland towards the harbour lights",
           "Morning calm: the sea is flat and the lighthouse stands in mist")


def storyboard(preset: str, segments: int, frames: int, vram: float | None, ram: float | None,
               draft: tuple[int, int] | None, output: tuple[int, int], first_anchor: str = "") -> str:
    """The bench's storyboard; ``first_anchor``, a still's file name, anchors shot 1 on it (so
    every shot runs the image-to-video pipeline, not shot 1 alone the text-to-video one)."""
    lines = ["[project]", 'title = "Chain bench"', "fps = 24", "seed = 1234", f'preset = "{preset}"',
             f"output_size = [{output[0]}, {output[1]}]", "audio = true", "enhance = false"]
    if draft:
        lines += [f"draft_size = [{draft[0]}, {draft[1]}]", f"refine_size = [{draft[0] * 2}, {draft[1] * 2}]"]
    if vram:
        lines.append(f"vram_budget_gb = {vram}")
    if ram:
        lines.append(f"ram_budget_gb = {ram}")
    for i in range(segments):
        lines += ["", "[[segment]]", f'id = "shot{i + 1}"', f'prompt = "{PROMPTS[i % len(PROMPTS)]}"',
                  f"frames = {frames}"]
        if i == 0 and first_anchor:
            lines.append(f'anchor = {{ image = "{first_anchor}" }}')
    return "\n".join(lines) + "\n"


class ReadSampler:
    """(wall-clock, bytes read from storage) of a process every 50 ms, from /proc/<pid>/io."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = Path(f"/proc/{self.pid}/io").read_text()
            except OSError:
                break
            fields = dict(line.split(": ") for line in text.splitlines() if ": " in line)
            self.samples.append((time.time(), int(fields.get("read_bytes", 0))))
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def at(self, ts: float) -> int:
        """Bytes read by wall-clock time ``ts`` (the last sample before it)."""
        before = [b for t, b in self.samples if t <= ts]
        return before[-1] if before else 0


def disk_read_gbps(folder: Path, size: int = 1 << 30) -> float:
    """Sequential read bandwidth of the disk under ``folder`` (page cache dropped for the file)."""
    path = folder / "read-probe.bin"
    block = os.urandom(1 << 24)
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t = time.perf_counter()
        while os.read(fd, 1 << 24):
            pass
        seconds = time.perf_counter() - t
    finally:
        os.close(fd)
        path.unlink()
    return size / seconds / 1e9


def _render_pid(proc: subprocess.Popen, profiled: bool) -> int:
    """The render's own pid: py-spy's child when the render runs under ``py-spy record``."""
    if not profiled:
        return proc.pid
    import psutil

    for _ in range(200):
        children = psutil.Process(proc.pid).children()
        if children:
            return children[0].pid
        time.sleep(0.025)
    return proc.pid


def _start_worker(folder: Path, env: dict[str, str]) -> subprocess.Popen:
    """The project's render worker in the foreground, as the TUI's client spawns it, so its
    own memory is what the samplers watch; returns once it answers."""
    with open(folder / "worker.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "worker", "--foreground",
                                 "--project", str(folder)], cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
    from pipeline.worker.client import WorkerClient

    for _ in range(240):
        try:
            WorkerClient.connect(folder, start=False).close()
            return proc
        except Exception:  # noqa: BLE001 - not listening yet
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited at start: {(folder / 'worker.log').read_text()[-2000:]}") from None
            time.sleep(0.25)
    raise RuntimeError("worker did not answer in 60 s")


def render(folder: Path, timeout: float, profile: Path | None = None, worker: bool = False,
           env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``sulphur render --json``: per segment and stage figures, peaks, bytes read.
    ``env_extra``: variables set for the render (and its worker) only.

    With ``profile``, the render runs under ``py-spy record`` (wall clock, idle included) and
    its chrome trace lands there, its clock starting at the render's ``profile_t0`` (epoch s).
    With ``worker``, the job goes through the project's background worker (``--attach``, the
    TUI's path) and the samplers watch the worker process."""
    cmd = [sys.executable, "-m", "pipeline.cli.main", "render", str(folder / "story.toml"), "--json"]
    if worker:
        cmd.append("--attach")
    elif profile is not None:
        cmd = ["py-spy", "record", "--format", "chrometrace", "--rate", "25", "--idle", "--nonblocking",
               "--threads", "-o", str(profile), "--", *cmd]
    env = {**os.environ, **(env_extra or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    server = _start_worker(folder, env) if worker else None
    with open(folder / "stderr.txt", "w") as err:
        profile_t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        pid = server.pid if server else _render_pid(proc, profile is not None)
        sampler, reads, cpus, clocks = ProcessSampler(pid), ReadSampler(pid), CpuSampler(pid), GpuClockSampler()
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
        finally:
            sampler.stop()
            reads.stop()
            cpus.stop()
            clocks.stop()
            if server is not None:
                subprocess.run([sys.executable, "-m", "pipeline.cli.main", "worker", "--stop", "--project",
                                str(folder)], env=env, capture_output=True, timeout=60)
                try:
                    server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()
    # py-spy prints its own "py-spy> ..." lines on the same stdout
    events = [protocol.decode_event(line) for line in stdout.splitlines()
              if line.strip() and not line.startswith("py-spy> ")]
    out: dict[str, Any] = {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 2),
                           "host_peak_gib": round(sampler.peak_rss / GiB, 2),
                           "nvml_peak_gib": round(sampler.peak_gpu / GiB, 2)}
    if profile is not None:
        out["profile"], out["profile_t0"] = str(profile), profile_t0
    if proc.returncode != 0:
        out["stderr_tail"] = (folder / "stderr.txt").read_text()[-3000:]
    split = phases(events)
    segments: dict[str, dict[str, Any]] = {}
    first_step_ts = None
    for e in events:
        if isinstance(e, protocol.StepProgress) and e.step > 0 and first_step_ts is None:
            first_step_ts = e.ts
        if isinstance(e, protocol.StageFinished):
            seg = segments.setdefault(e.segment, {"stages": {}, "fallbacks": []})
            seg["stages"][e.stage] = {"seconds": round(e.seconds, 2), "plan": e.plan,
                                      "peak_reserved_gib": round(e.peak_reserved / GiB, 2),
                                      **split.get((e.segment, e.stage), {})}
        elif isinstance(e, protocol.PlanFallback):
            segments.setdefault(e.segment, {"stages": {}, "fallbacks": []})["fallbacks"].append(
                {"stage": e.stage, "next_plan": e.next_plan, "reason": e.reason[:300]})
    _phase_peaks(events, segments)
    te = [e for e in events if isinstance(e, protocol.Log) and e.message.startswith("text encoder: ")]
    out["text_encoder_passes"] = [e.message for e in te]
    out["text_encoder_s"] = round(sum(float(e.message.split(" in ")[-1].split()[0]) for e in te), 2)
    for seg in segments.values():
        seg["seconds"] = round(sum(s["seconds"] for s in seg["stages"].values()), 2)
    out["segments"] = segments
    # SegmentDone timestamps: with the encode of k behind the draft of k+1, stage seconds overlap
    # and no longer add up to a segment's cost; the time between completions does.
    out["segment_done_ts"] = {e.segment: e.ts for e in events if isinstance(e, protocol.SegmentDone)}
    done = sorted(out["segment_done_ts"].values())
    if len(done) > 1:  # the GPU over segments 2..N: how much of a steady segment it had work
        out["gpu_steady"] = clocks.window(done[0], done[-1])
    # (segment, stage, started, finished) in epoch seconds: windows into a profile's trace
    began: dict[tuple[str, str], float] = {}
    out["stage_ts"] = []
    for e in events:
        if isinstance(e, protocol.StageStarted):
            began[(e.segment, e.stage)] = e.ts
        elif isinstance(e, protocol.StageFinished) and (e.segment, e.stage) in began:
            out["stage_ts"].append([e.segment, e.stage, began[(e.segment, e.stage)], e.ts])
            stage = segments.get(e.segment, {}).get("stages", {}).get(e.stage)
            if stage is not None:  # who had the CPUs meanwhile (bench/cpu_sampler.py)
                stage["cpu_s"] = cpus.window(began[(e.segment, e.stage)], e.ts)
                if stage.get("step_events", 0) > 1 and e.stage in ("draft", "refine"):
                    last = e.ts - stage["after_last_step_s"]  # the GPU over its steps (bench/gpu_clocks.py)
                    stage["gpu_steps"] = clocks.window(last - stage["first_to_last_step_s"], last)
    finished = [e for e in events if isinstance(e, protocol.JobFinished)]
    out["render_s"] = round(finished[-1].seconds, 2) if finished else None
    started = [e.ts for e in events if isinstance(e, protocol.StageStarted)]
    if started and first_step_ts is not None:
        out["cold_to_first_step_s"] = round(first_step_ts - started[0], 2)
        out["bytes_read_to_first_step"] = reads.at(first_step_ts) - reads.at(started[0])
    return out


def _phase_peaks(events: list[Any], segments: dict[str, dict[str, Any]]) -> None:
    """The draft's and refine's "<stage> memory: peak after <phase> A/R, ..." lines (pipeline/stages/
    phase_peaks.py) into their stage's entry as ``phase_peaks``: which phase set the GPU peak,
    to hold the planner's per-phase estimate against (one list per attempt, fallbacks included)."""
    running: dict[str, str] = {}
    for e in events:
        if isinstance(e, protocol.StageStarted):
            running[e.stage] = e.segment
        elif isinstance(e, protocol.Log) and " memory: peak " in e.message:
            stage = e.message.split(" memory: ")[0]
            seg = segments.get(running.get(stage, ""), {}).get("stages", {}).get(stage)
            if seg is not None:
                seg.setdefault("phase_peaks", []).append(e.message.split(" memory: ")[1])


def steady(run: dict[str, Any]) -> float | None:
    """Steady-state wall seconds per segment: the mean time between consecutive segment
    completions (``SegmentDone``) over segments 2..N, which stays honest when stages of
    neighbouring segments overlap (None when the render failed or had one segment)."""
    done = sorted(run.get("segment_done_ts", {}).values())
    if len(done) < 2 or run["returncode"] != 0:
        return None
    return round((done[-1] - done[0]) / (len(done) - 1), 2)


def steady_stage_sum(run: dict[str, Any]) -> float | None:
    """Mean of segments 2..N's stage seconds added up (what ``steady`` was before stages overlapped)."""
    # the film's own entry (stage "film") is not a segment
    segs = [s for s in run.get("segments", {}).values() if set(s["stages"]) - {"film"}][1:]
    return round(sum(s["seconds"] for s in segs) / len(segs), 2) if segs and run["returncode"] == 0 else None


def text_encoder_pass_s(run: dict[str, Any]) -> float:
    """Seconds of the render's first text-encoder pass (loading it included), from its log line."""
    passes = run.get("text_encoder_passes", [])
    return float(passes[0].split(" in ")[-1].split()[0]) if passes else 0.0


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ltx2-19b-random")
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--vram-budget-gb", type=float, default=8.0)
    ap.add_argument("--ram-budget-gb", type=float, default=32.0)
    ap.add_argument("--timeout", type=float, default=240, help="seconds per render")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU end-to-end check: tiny preset, 9 frames, 2 segments, small output, no resident steps")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--capped-only", action="store_true",
                    help="only the capped render (checks plans and NVML in half the time; no ratios)")
    ap.add_argument("--uncapped-only", action="store_true",
                    help="only the uncapped render and the resident steps (goal 2b in half the time)")
    ap.add_argument("--first-anchor", choices=("none", "image"), default="none",
                    help="image: shot 1 starts from a still, so every shot runs the image-to-video pipeline "
                         "(do segment 1's faster steps come from the text-to-video one?)")
    ap.add_argument("--behind", choices=("overlap", "inline"), default="overlap",
                    help="inline: each segment's encode and measurements run after its GPU stages, on the "
                         "render's thread (SULPHUR_BEHIND=inline): do they slow the next segment's steps?")
    ap.add_argument("--encode-threads", type=int, default=0,
                    help="x264's threads (SULPHUR_ENCODE_THREADS; 0: its own choice, 1.5 per CPU): does the "
                         "encode behind the GPU stages slow their steps by the CPUs it takes?")
    ap.add_argument("--worker", action="store_true",
                    help="also render the capped storyboard through the background worker (the TUI's path): "
                         "its NVML peak and fallbacks (issue 20, goals 1 and 4)")
    ap.add_argument("--eager-arm", action="store_true",
                    help="also render the uncapped storyboard with every step eager (SULPHUR_CUDA_GRAPHS=0): "
                         "what the CUDA graphs are worth on this machine, recording included")
    ap.add_argument("--keep", action="store_true", help="keep the storyboards and renders (a temporary folder)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="folder for a py-spy chrome trace of each render (bench/profile_window.py reads them)")
    args = ap.parse_args()
    if args.capped_only and args.uncapped_only:
        ap.error("--capped-only and --uncapped-only exclude each other")
    return args


def _write_still(path: Path) -> None:
    """A 512×288 picture for shot 1 to start from (any picture: the weights are random)."""
    from PIL import Image

    yy, xx = np.mgrid[0:288, 0:512]
    rgb = np.stack([xx * 255 // 511, yy * 255 // 287, (xx + yy) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def main() -> int:
    args = _arguments()
    draft, output = None, (1920, 1080)
    if args.smoke:
        args.preset, args.frames, args.segments, output = "tiny", 9, 2, (448, 256)

    from pipeline.models.registry import get_preset

    preset = get_preset(args.preset)
    base = Path(tempfile.mkdtemp(prefix="chain-bench-"))
    try:
        runs: dict[str, dict[str, Any]] = {}
        settings = (("capped", args.vram_budget_gb, args.ram_budget_gb), ("uncapped", None, None))
        chosen = list(settings[:1] if args.capped_only else settings[1:] if args.uncapped_only else settings)
        if args.worker:
            chosen.append(("worker_capped", args.vram_budget_gb, args.ram_budget_gb))
        if args.eager_arm:
            chosen.append(("uncapped_eager", None, None))
        for name, vram, ram in chosen:
            folder = base / name
            folder.mkdir()
            still = "first.png" if args.first_anchor == "image" else ""
            if still:
                _write_still(folder / still)
            (folder / "story.toml").write_text(storyboard(args.preset, args.segments, args.frames, vram, ram, draft, output,
                                                          still))
            trace = args.profile / f"profile_{name}.json" if args.profile else None
            if trace:
                trace.parent.mkdir(parents=True, exist_ok=True)
            env = {"SULPHUR_BEHIND": args.behind, **({"SULPHUR_ENCODE_THREADS": str(args.encode_threads)}
                                                     if args.encode_threads else {}),
                   **({GRAPHS_ENV: "0"} if name.endswith("_eager") else {})}
            runs[name] = render(folder, args.timeout, trace, worker=name.startswith("worker"), env_extra=env)
        doc = json.dumps(_report(args, preset, runs, base), indent=1)
        print(doc)
        out = args.out or (ROOT / "bench" / "results" /
                           f"chain_{_gpu_name()}_{datetime.date.today().isoformat()}{'_smoke' if args.smoke else ''}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc + "\n")
        return 0 if all(r["returncode"] == 0 for r in runs.values()) else 1
    finally:
        if args.keep:
            print(f"kept the renders in {base}", file=sys.stderr)
        else:  # each run caches every stage of a full-size segment: gigabytes on a 64 GiB disk
            shutil.rmtree(base, ignore_errors=True)


def _report(args: argparse.Namespace, preset: Any, runs: dict[str, dict[str, Any]], base: Path) -> dict[str, Any]:
    """The JSON issue 20 asks for, from the renders' figures (and the resident steps, on a GPU)."""
    first = runs.get("capped") or runs["uncapped"]  # the cold start and the host peak
    report: dict[str, Any] = {
        "bench": "chain", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(("torch", "diffusers", "transformers", "triton", "av")), "preset": args.preset,
        "segments_n": args.segments, "frames": args.frames, "vram_budget_gib": args.vram_budget_gb,
        "ram_budget_gib": args.ram_budget_gb, "first_anchor": args.first_anchor, "behind": args.behind,
        "encode_threads": args.encode_threads or None,
        "nvml_peak_gib": runs.get("capped", {}).get("nvml_peak_gib"),
        "nvml_peak_uncapped_gib": runs.get("uncapped", {}).get("nvml_peak_gib"),
        "nvml_peak_worker_gib": runs.get("worker_capped", {}).get("nvml_peak_gib"), "host_peak_gib": first["host_peak_gib"],
        "segments": {name: run.get("segments", {}) for name, run in runs.items()}, "runs": runs,
        "steady_capped_s": steady(runs.get("capped", {})), "steady_uncapped_s": steady(runs.get("uncapped", {})),
        "steady_worker_capped_s": steady(runs.get("worker_capped", {})),
        "steady_uncapped_eager_s": steady(runs.get("uncapped_eager", {})),
        "steady_how": "mean wall seconds between consecutive SegmentDone events (segments 2..N): the local "
                      "engine encodes segment k behind segment k+1's draft, so stage seconds overlap",
        "steady_stage_sum_capped_s": steady_stage_sum(runs.get("capped", {})),
        "steady_stage_sum_uncapped_s": steady_stage_sum(runs.get("uncapped", {})),
    }
    report["disk_read_gbps"] = round(disk_read_gbps(base), 2)
    report["cold_to_first_step_s"] = first.get("cold_to_first_step_s")
    io_s = first.get("bytes_read_to_first_step", 0) / 1e9 / report["disk_read_gbps"]
    report["cold_io_bound_s"] = round(1.5 * io_s + text_encoder_pass_s(first), 2)
    report["resident_steps_s"] = None
    if not args.smoke and not args.capped_only and all(r["returncode"] == 0 for r in runs.values()):
        draft_size = preset.draft_size
        ref = resident_steps(preset, draft_size, (draft_size[0] * 2, draft_size[1] * 2),
                             preset.round_frames(args.frames))
        report["resident"] = ref
        report["resident_steps_s"] = round(
            preset.steps * ref["draft_step_s"] + (len(preset.refine_sigmas) - 1) * ref["refine_step_s"], 2)
    report["steady_capped_over_uncapped"] = _ratio(report["steady_capped_s"], report["steady_uncapped_s"])
    report["steady_uncapped_over_steps"] = _ratio(report["steady_uncapped_s"], report["resident_steps_s"])
    # NVML's busy share over the uncapped steady segments. Any engine that shares this one GPU
    # (Ray's draft and finish actors included) runs the same kernels one at a time, so it can be
    # at most 100 / busy times faster unless the kernels themselves get faster (goal 5's ceiling).
    busy = runs.get("uncapped", {}).get("gpu_steady", {}).get("busy_pct_mean")
    report["steady_uncapped_gpu_busy_pct"] = busy
    report["one_gpu_speedup_ceiling"] = round(100 / busy, 2) if busy else None
    # > 1: the uncapped render is faster with its steps replayed as CUDA graphs (--eager-arm)
    report["graphs_speedup"] = _ratio(report["steady_uncapped_eager_s"], report["steady_uncapped_s"])
    peaks = [p for p in (report["nvml_peak_gib"], report["nvml_peak_worker_gib"]) if p is not None]
    report["goals"] = {  # None: not measured in this run (--capped-only, --uncapped-only, a failed render)
        "nvml_under_budget": _at_most(max(peaks, default=None), args.vram_budget_gb),
        "capped_le_1.25x_uncapped": _at_most(report["steady_capped_over_uncapped"], 1.25),
        "uncapped_le_2.5x_steps": _at_most(report["steady_uncapped_over_steps"], 2.5),
        "no_fallback": not any(s["fallbacks"] for run in runs.values() for s in run.get("segments", {}).values()),
    }
    return report


def _at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def _gpu_name() -> str:
    """``h200`` from "NVIDIA H200", ``cpu`` without a GPU (names the results file)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0).split()[-1].lower().replace(" ", "")
    except Exception:  # noqa: BLE001 - torch missing or no driver: a CPU run
        pass
    return "cpu"


if __name__ == "__main__":
    sys.exit(main())
