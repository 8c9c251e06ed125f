"""Pipelined Ray render vs the single local worker, on one storyboard. Prints JSON.

Builds an N-segment chained storyboard (the example's project settings, segments of
``--frames`` frames, a ``vram_budget_gb`` per actor), copies it into one fresh folder per
engine (no shared cache, so every stage runs) and renders it with
``sulphur render --json --engine local`` and ``--engine ray`` in subprocesses. Reports per
engine: wall seconds, busy seconds per worker (from StageStarted/StageFinished), the
seconds during which drafting and finishing ran at the same time, peak VRAM per stage;
then the speed-up and whether both films decode to identical frames.

    python bench/ray_pipeline.py --preset tiny --segments 4 --frames 17          # smoke (CPU ok)
    python bench/ray_pipeline.py --preset sulphur2-ltx23 --vram-budget-gb 24 \\
        --out bench/results/ray_pipeline_h100_$(date +%F).json                    # GPU machine

The GPU figure wants full-size architectures under the storyboard's budget per actor:
use a preset whose files are full-size (real weights, or a full-size random-weight build
of them); ``tiny`` measures only the engine's overhead and overlap.
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_clocks import GpuClockSampler  # noqa: E402
from machine_info import machine  # noqa: E402

from pipeline.wire import protocol  # noqa: E402

PROMPTS = [
    "A lighthouse on a rocky cliff at dawn, waves breaking below, gulls calling",
    "The camera slowly pushes in as the lighthouse beam sweeps over the sea",
    "Storm clouds roll in, rain starts to fall, thunder rumbles in the distance",
    "Lightning lights up the tower, the sea heaves, the beam keeps turning",
    "The storm passes, the sky clears, the first sun rays hit the wet rocks",
    "A fishing boat returns to the harbour below the lighthouse",
]


def storyboard(preset: str, segments: int, frames: int, budget: float | None, enhance: bool = True) -> str:
    lines = ["[project]", 'title = "Ray pipeline bench"', "fps = 24", "seed = 1234", f'preset = "{preset}"',
             "output_size = [1920, 1080]", "audio = true"] + ([] if enhance else ["enhance = false"])
    if budget:
        lines.append(f"vram_budget_gb = {budget}")
    for i in range(segments):
        lines += ["", "[[segment]]", f'id = "s{i + 1}"', f'prompt = "{PROMPTS[i % len(PROMPTS)]}"',
                  f"frames = {frames}"]
    return "\n".join(lines) + "\n"


def parse_run(spec: str) -> tuple[str, str, str | None]:
    """``NAME=ENGINE[@GPUS]`` (or just ENGINE): e.g. ``ray2=ray@0,1`` renders with Ray on GPUs 0 and 1."""
    name, _, rest = spec.rpartition("=")
    engine, _, gpus = rest.partition("@")
    return name or engine, engine, gpus or None


def run(engine: str, folder: Path, address: str | None, timeout: float, *, name: str | None = None,
        gpus: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline.cli.main", "render", str(folder / "story.toml"), "--json", "--engine", engine]
    if engine == "ray" and address:
        cmd += ["--address", address]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus  # a Ray started by the render sees only these cards
    t0 = time.perf_counter()
    # the run's first card (NVML sees every process on it, Ray's actors included)
    first = gpus.split(",")[0] if gpus else None
    clocks = GpuClockSampler(index=int(first) if first and first.isdigit() else None)
    try:
        proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    finally:
        clocks.stop()
    wall = time.perf_counter() - t0
    events = [protocol.decode_event(line) for line in proc.stdout.splitlines() if line.strip()]
    out: dict[str, Any] = {"name": name or engine, "engine": engine, "gpus": gpus, "returncode": proc.returncode,
                           "wall_s": round(wall, 2)}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
        return out
    busy: dict[str, float] = {}
    intervals: dict[str, list[tuple[float, float]]] = {"draft": [], "finish": []}
    open_: dict[tuple[str, str], float] = {}
    stages: list[dict[str, Any]] = []
    t_job = next((e.ts for e in events if isinstance(e, protocol.JobStarted)), events[0].ts if events else 0.0)
    for e in events:
        if isinstance(e, protocol.StageStarted) and e.segment:
            open_[(e.segment, e.stage)] = e.ts
        elif isinstance(e, protocol.StageFinished) and e.segment:
            start = open_.pop((e.segment, e.stage), e.ts - e.seconds)
            worker = e.actor or "local"
            busy[worker] = busy.get(worker, 0.0) + e.seconds
            intervals["draft" if e.stage in ("enhance", "draft") else "finish"].append((start, e.ts))
            # start/end on the job's clock, so the critical path (the chain of drafts) can be read off
            stages.append({"segment": e.segment, "stage": e.stage, "seconds": round(e.seconds, 2),
                           "start_s": round(start - t_job, 2), "end_s": round(e.ts - t_job, 2), "worker": worker, "peak_allocated_gib": round(e.peak_allocated / 2**30, 2),
                           "plan": e.plan})
    finished = [e for e in events if isinstance(e, protocol.JobFinished)]
    # the first card's busy share from the first stage to the job's end: how much of the render
    # left that GPU idle, the most another engine on it could win back (a cold load included)
    if stages and finished:
        out["gpu"] = clocks.window(t_job + min(s["start_s"] for s in stages), finished[-1].ts)
    film = [e for e in events if isinstance(e, protocol.StageFinished) and e.stage == "film"]
    if film:
        out["film_s"] = round(film[-1].seconds, 2)
    out.update(render_s=round(finished[-1].seconds, 2) if finished else None,
               final=finished[-1].path if finished else "",
               busy_s={k: round(v, 2) for k, v in sorted(busy.items())},
               draft_finish_overlap_s=round(_overlap(intervals["draft"], intervals["finish"]), 2),
               layout=[e.message for e in events if isinstance(e, protocol.Log) and e.message.startswith("ray:")],
               stages=stages)
    return out


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Seconds covered by some interval of ``a`` and some interval of ``b`` at once."""
    def merge(xs: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for s, e in sorted(xs):
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        return out
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in merge(a) for s2, e2 in merge(b))


def same_frames(a: str, b: str) -> bool | None:
    if not (a and b):
        return None
    import av
    import numpy as np

    def frames(p: str) -> list:
        with av.open(p) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    fa, fb = frames(a), frames(b)
    return len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


def compare_caches(a: Path, b: Path) -> dict[str, dict[str, Any]]:
    """Every file of the two project folders' stage caches (same path: same key, so the same inputs
    and settings), by stage: how many are the same, which differ and how many only one run has.
    This names the stage whose output first differs when the films do. The prompt embeddings
    (``prompt_embeds/<key>.safetensors``) count as a stage too. Half-written files are skipped."""
    from pipeline.project.files import file_digest

    def files(root: Path) -> set[Path]:
        return {f.relative_to(root) for f in root.rglob("*") if f.is_file() and f.name != "meta.json"
                # entries being built (".<key>.<pid>.*.partial/") and embeddings being written ("*.part")
                and not any(part.startswith(".") or part.endswith(".part") for part in f.relative_to(root).parts)}

    out: dict[str, dict[str, Any]] = {}
    ra, rb = a / ".sulphur" / "cache", b / ".sulphur" / "cache"
    fa, fb = files(ra), files(rb)
    for rel in sorted(fa | fb):
        row = out.setdefault(rel.parts[0], {"same": 0, "differ": [], "only_one": 0})
        if rel not in fa or rel not in fb:
            row["only_one"] += 1
        elif file_digest(ra / rel) == file_digest(rb / rel):
            row["same"] += 1
        else:  # the entry's key (shortened) and the file in it
            row["differ"].append("/".join([rel.parts[-2][:12], rel.parts[-1]]) if len(rel.parts) > 2 else rel.name[:16])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--vram-budget-gb", type=float, default=None, help="per actor (the storyboard's vram_budget_gb)")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--run", action="append", metavar="NAME=ENGINE[@GPUS]",
                    help="instead of --engines: e.g. --run local=local@0 --run ray1=ray@0 --run ray2=ray@0,1 "
                         "(speed-ups are against the first run)")
    ap.add_argument("--no-enhance", action="store_true", help="enhance = false (no llama.cpp on the machine)")
    ap.add_argument("--baseline", type=Path, default=None, metavar="JSON",
                    help="a previous report of this bench (same storyboard): its first run is the base of the "
                         "speed-ups, so each engine can be measured in its own time-limited call")
    ap.add_argument("--address", default=None, help="Ray address (default: start a local Ray on this machine)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    text = storyboard(args.preset, args.segments, args.frames, args.vram_budget_gb, enhance=not args.no_enhance)
    runs = [parse_run(s) for s in args.run] if args.run else [(e, e, None) for e in args.engines.split(",")]
    results = []
    for name, engine, gpus in runs:
        folder = base / name
        folder.mkdir()
        (folder / "story.toml").write_text(text)
        results.append(run(engine, folder, args.address, args.timeout, name=name, gpus=gpus))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "stages"}), file=sys.stderr)
    report: dict[str, Any] = {
        "bench": "ray_pipeline", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(("torch", "diffusers", "ray")), "preset": args.preset, "segments": args.segments,
        "frames": args.frames, "vram_budget_gb": args.vram_budget_gb, "results": results,
    }
    ok = [r for r in results if r.get("returncode") == 0]
    base_run = ok[0] if ok and ok[0] is results[0] else None
    others = ok[1:]
    if args.baseline is not None:
        previous = json.loads(args.baseline.read_text())
        same = all(previous.get(k) == report[k] for k in ("preset", "segments", "frames", "vram_budget_gb"))
        if not same:
            raise SystemExit(f"{args.baseline} measured another storyboard (preset/segments/frames/budget differ)")
        base_run, others = previous["results"][0], ok
        report["baseline"] = {"file": str(args.baseline), "name": base_run["name"], "wall_s": base_run["wall_s"]}
    if base_run is not None and others:
        report["speedup"] = {r["name"]: round(base_run["wall_s"] / r["wall_s"], 3) for r in others}
        busy = base_run.get("gpu", {}).get("busy_pct_mean")
        one_card = "," not in (base_run.get("gpus") or "")
        # engines that share the base run's one GPU run its kernels one at a time: at most this much faster
        report["one_gpu_speedup_ceiling"] = round(100 / busy, 2) if busy and one_card else None
        if args.baseline is None:  # the baseline's film is gone with its machine
            report["identical_frames"] = {r["name"]: same_frames(base_run["final"], r["final"]) for r in others}
            report["cache_compare"] = {r["name"]: compare_caches(base / base_run["name"], base / r["name"])
                                       for r in others if not report["identical_frames"][r["name"]]}
    doc = json.dumps(report, indent=1)
    print(doc)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(doc + "\n")
    shutil.rmtree(base, ignore_errors=True)
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
