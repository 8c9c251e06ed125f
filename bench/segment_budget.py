"""One whole segment under a VRAM and a host-RAM budget, against its resident transformer steps.

Renders a one-segment storyboard (all stages: draft with audio, ×2 latent refine,
Real-ESRGAN ×2, 1920×1080 H.264 + AAC) with ``sulphur render --json`` in a subprocess,
under the storyboard's ``vram_budget_gb`` / ``ram_budget_gb`` (the render caps its own
allocator at the VRAM budget). Meanwhile it samples the render process's host RSS and,
through NVML, the GPU memory it holds (CUDA context included). Per stage: seconds, peak
allocated / reserved VRAM and the plan, from the render's own events.

Then, in this process, the same transformer in bf16, resident on the GPU, runs one
step at the draft shape and one at the refine shape (median of 3 after a warm-up):
the goal compares the whole segment with the sum of its resident transformer steps
(steps × draft step + refine steps × refine step). Prints one JSON document.

    python bench/segment_budget.py --preset ltx2-19b-random --frames 121 --vram-budget-gb 8 --ram-budget-gb 32
    SULPHUR_RANDOM_LAYERS=1 python bench/segment_budget.py --frames 9 --draft 256x128 --refine 512x256 \\
        --no-resident                                                   # CPU smoke of the harness
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import machine  # noqa: E402

from pipeline.wire import protocol  # noqa: E402

GiB = 1024**3


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def storyboard(args: argparse.Namespace) -> str:
    lines = ["[project]", 'title = "Segment budget bench"', "fps = 24", "seed = 1234", f'preset = "{args.preset}"',
             "output_size = [1920, 1080]", "audio = true", "enhance = false"]
    if args.draft:
        lines.append(f"draft_size = [{args.draft[0]}, {args.draft[1]}]")
    if args.refine:
        lines.append(f"refine_size = [{args.refine[0]}, {args.refine[1]}]")
    if args.vram_budget_gb:
        lines.append(f"vram_budget_gb = {args.vram_budget_gb}")
    if args.ram_budget_gb:
        lines.append(f"ram_budget_gb = {args.ram_budget_gb}")
    lines += ["", "[[segment]]", 'id = "shot"',
              'prompt = "A lighthouse on a rocky cliff at dawn, waves breaking below, gulls calling"',
              f"frames = {args.frames}"]
    return "\n".join(lines) + "\n"


def rss_parts(pid: int) -> dict[str, int]:
    """Bytes of a process's resident memory by kind (Linux): anonymous (heap, pinned CUDA host
    buffers), file-backed (mapped weights: the kernel can drop these under pressure) and shmem."""
    parts = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in parts:
                parts[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return parts


def pss(pid: int) -> int:
    """Proportional set size: shared pages split among the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class ProcessSampler:
    """Peak host memory (process tree; the render's own split into anonymous / file-backed /
    shmem) and NVML GPU memory of one process, every 50 ms.

    While the render has children, the tree's memory is the sum of PSS, not RSS: a child
    forked from a 25 GiB process shares its pages copy-on-write and reports them all as its
    own RSS (stop 14's 54 GiB "peak" beside the render's own 28 GiB high-water mark)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0  # RSS of the render itself, or the PSS sum while it has children
        self.peak_rss_sum = 0  # plain RSS summed over the tree: double-counts shared pages
        self.children: dict[int, dict[str, Any]] = {}
        self.peak_parts = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        self.peak_gpu = 0
        self.timeline: list[tuple[float, int, int, int, int]] = []
        self._stop = threading.Event()
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no NVIDIA driver: host figures only
            self._nvml = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()
        self._t.start()

    def _gpu_bytes(self) -> int:
        if self._nvml is None:
            return 0
        pids = {self.proc.pid} | {c.pid for c in self.proc.children(recursive=True)}
        used = 0
        for h in self._handles:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid in pids and p.usedGpuMemory:
                    used += p.usedGpuMemory
        return used

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            try:
                tree, rss_each = [self.proc], [self.proc.memory_info().rss]
                for child in self.proc.children(recursive=True):
                    try:
                        rss_each.append(child.memory_info().rss)
                        tree.append(child)
                    except psutil.Error:  # a short-lived child (a compiler, ldconfig) already gone
                        pass
                gpu = self._gpu_bytes()
            except Exception:  # noqa: BLE001 - the render is ending (psutil) or NVML hiccups
                break
            self.peak_rss_sum = max(self.peak_rss_sum, sum(rss_each))
            rss = rss_each[0] if len(tree) == 1 else sum(pss(p.pid) for p in tree)
            for p, r in zip(tree[1:], rss_each[1:], strict=True):
                seen = self.children.setdefault(p.pid, {"cmdline": _cmdline(p), "max_rss_gib": 0.0})
                seen["max_rss_gib"] = max(seen["max_rss_gib"], round(r / GiB, 2))
            parts = rss_parts(self.proc.pid)  # the render's own: a child's would count shared pages twice
            self.peak_rss, self.peak_gpu = max(self.peak_rss, rss), max(self.peak_gpu, gpu)
            self.peak_parts = {k: max(v, parts[k]) for k, v in self.peak_parts.items()}
            now = time.perf_counter() - self._t0
            if now - last >= 1.0:
                self.timeline.append((round(now, 1), rss, gpu, parts["RssAnon"], parts["RssFile"]))
                last = now
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:160]
    except psutil.Error:
        return "?"


def phases(events: list[Any]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (segment, stage): seconds before its first step event (loads, text encoding, the
    first step), between first and last step and between each two, and after the last (decode,
    writing). A stage started again (a plan fallback) counts its last attempt."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    started: dict[tuple[str, str], float] = {}
    steps: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if isinstance(e, protocol.StageStarted):
            started[(e.segment, e.stage)] = e.ts
            steps[(e.segment, e.stage)] = []
        elif isinstance(e, protocol.StepProgress) and e.step > 0:  # step 0 only says "started"
            steps.setdefault((e.segment, e.stage), []).append(e.ts)
        elif isinstance(e, protocol.StageFinished) and (e.segment, e.stage) in started:
            t0, ts = started[(e.segment, e.stage)], steps.get((e.segment, e.stage), [])
            if ts:
                # each step on its own too: a slow recording or one slow step shows, an even slowdown too
                out[(e.segment, e.stage)] = {"to_first_step_s": round(ts[0] - t0, 2),
                                             "first_to_last_step_s": round(ts[-1] - ts[0], 2),
                                             "step_events": len(ts), "after_last_step_s": round(e.ts - ts[-1], 2),
                                             "step_intervals_s": [round(b - a, 3) for a, b in itertools.pairwise(ts)]}
    return out


def render(folder: Path, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline.cli.main", "render", str(folder / "story.toml"), "--json"]
    t0 = time.perf_counter()
    launched = time.time()  # epoch, as the events' ts
    with open(folder / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
        sampler = ProcessSampler(proc.pid)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        finally:
            sampler.stop()
    wall = time.perf_counter() - t0
    events = [protocol.decode_event(line) for line in stdout.splitlines() if line.strip()]
    out: dict[str, Any] = {"returncode": proc.returncode, "wall_s": round(wall, 2),
                           "peak_host_rss_gib": round(sampler.peak_rss / GiB, 2),
                           "peak_host_rss_sum_gib": round(sampler.peak_rss_sum / GiB, 2),
                           "children": list(sampler.children.values()),
                           "peak_host_gib_by_kind": {k: round(v / GiB, 2) for k, v in sampler.peak_parts.items()},
                           "peak_gpu_nvml_gib": round(sampler.peak_gpu / GiB, 2),
                           "timeline_s_rss_gpu_anon_file_gib": [
                               (t, *(round(x / GiB, 1) for x in rest)) for t, *rest in sampler.timeline]}
    if proc.returncode != 0:
        out["stderr_tail"] = (folder / "stderr.txt").read_text()[-3000:]
    stages = []
    split = phases(events)
    for e in events:
        if isinstance(e, protocol.StageFinished):
            stages.append({"stage": e.stage, "seconds": round(e.seconds, 2),
                           "peak_allocated_gib": round(e.peak_allocated / GiB, 2),
                           "peak_reserved_gib": round(e.peak_reserved / GiB, 2),
                           "peak_host_rss_gib": round(e.peak_host_rss / GiB, 2), "plan": e.plan,
                           **split.get((e.segment, e.stage), {})})
        elif isinstance(e, protocol.PlanFallback):
            stages.append({"stage": e.stage, "fallback": e.next_plan, "reason": e.reason[:300]})
    finished = [e for e in events if isinstance(e, protocol.JobFinished)]
    out["stages"] = stages
    # Where a cold start's seconds go: the process's start-up (imports, CUDA, the plan) to the
    # job's start, then every log line (loads, the text-encoder pass, phase peaks) on that clock.
    started = [e.ts for e in events if isinstance(e, protocol.JobStarted)]
    out["to_job_started_s"] = round(started[0] - launched, 2) if started else None
    out["log"] = [[round(e.ts - launched, 2), e.message[:300]] for e in events if isinstance(e, protocol.Log)]
    out["render_s"] = round(finished[-1].seconds, 2) if finished else None
    out["final"] = finished[-1].path if finished else ""
    return out


def resident_steps(preset: Any, draft: tuple[int, int], refine: tuple[int, int], frames: int) -> dict[str, Any]:
    """bf16 transformer resident on the GPU: one step at each shape (median of 3 after a warm-up),
    with the inputs a render's step has: the preset's text length (LTX-2 pads prompts to
    ``max_sequence_length``), the text masks and the anchored first frame's own timestep."""
    import torch
    from ltx2_inputs import ltx2_step_inputs
    from resident_step import time_steps

    from pipeline.memory.planner import audio_tokens
    from pipeline.models import ltx2_random

    t0 = time.perf_counter()
    model = ltx2_random.transformer(torch.bfloat16, quant=None).to("cuda")
    build_s = time.perf_counter() - t0
    text = int(preset.extra.get("max_sequence_length", 1024))
    out: dict[str, Any] = {"build_s": round(build_s, 1),
                           "inputs": {"text_tokens": text, "as_rendered": True}}  # before 2026-12-05: 128, bare
    for name, size in (("draft", draft), ("refine", refine)):
        inputs = ltx2_step_inputs(model.config, size, frames, audio_tokens=audio_tokens(frames, 24), device="cuda",
                                  text_tokens=text, as_rendered=True)
        timed = time_steps(model, inputs, 3, "cuda")
        out[f"{name}_step_s"], out[f"{name}_steps_s"] = timed["step_s"], timed["steps_s"]
        del inputs
    out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
    del model
    torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ltx2-19b-random")
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--draft", type=_size, default=None, help="draft WxH (default: the preset's)")
    ap.add_argument("--refine", type=_size, default=None, help="refine WxH (default: 2× the draft)")
    ap.add_argument("--vram-budget-gb", type=float, default=8.0)
    ap.add_argument("--ram-budget-gb", type=float, default=32.0)
    ap.add_argument("--no-resident", action="store_true", help="skip the resident-step reference (no GPU)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from pipeline.models.registry import get_preset

    preset = get_preset(args.preset)
    draft = args.draft or preset.draft_size
    refine = args.refine or (draft[0] * 2, draft[1] * 2)
    folder = Path(tempfile.mkdtemp(prefix="segment-budget-"))
    (folder / "story.toml").write_text(storyboard(args))
    result = render(folder, args.timeout)
    report: dict[str, Any] = {
        "bench": "segment_budget", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(("torch", "diffusers", "transformers", "triton", "av", "spandrel")), "preset": args.preset, "frames": args.frames, "draft": list(draft),
        "refine": list(refine), "steps": preset.steps, "refine_steps": len(preset.refine_sigmas) - 1,
        "vram_budget_gb": args.vram_budget_gb, "ram_budget_gb": args.ram_budget_gb, "render": result,
    }
    if not args.no_resident and result["returncode"] == 0:
        ref = resident_steps(preset, draft, refine, preset.round_frames(args.frames))
        report["resident"] = ref
        steps_sum = preset.steps * ref["draft_step_s"] + (len(preset.refine_sigmas) - 1) * ref["refine_step_s"]
        report["resident_transformer_steps_sum_s"] = round(steps_sum, 2)
        report["segment_over_steps"] = round(result["render_s"] / steps_sum, 2) if result["render_s"] else None
        report["goals"] = {
            "vram_under_budget": all(s.get("peak_reserved_gib", 0) <= args.vram_budget_gb
                                     for s in result["stages"]),
            "host_under_budget": result["peak_host_rss_gib"] <= args.ram_budget_gb,
            "segment_le_3x_steps": report["segment_over_steps"] is not None and report["segment_over_steps"] <= 3.0,
        }
    doc = json.dumps(report, indent=1)
    print(doc)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(doc + "\n")
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
