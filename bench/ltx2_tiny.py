"""Seconds per tiny LTX-2 draft (T2V, I2V) and refine through the real stages. Prints JSON.

The tiny stack is random weights at real-pipeline shapes (224×128 draft, 448×256 refine,
8 + 3 steps); these numbers say what the tiny preset costs tests and demos on a CPU,
not how fast real weights run (see bench/gpu_pipeline.py for that).

    python bench/ltx2_tiny.py [--frames 9] [--repeat 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import numpy as np
    import torch

    from pipeline.memory.loaded import LoadedModels
    from pipeline.memory.planner import StagePlan
    from pipeline.models import tiny_ltx2
    from pipeline.models.registry import get_preset
    from pipeline.project.storyboard import Project, Segment, Storyboard
    from pipeline.render.cache import Artifact
    from pipeline.stages.base import SegmentJob, StageContext
    from pipeline.stages.draft import DraftStage
    from pipeline.stages.refine import RefineStage

    t0 = time.perf_counter()
    tiny_ltx2.build_tiny()
    build_s = time.perf_counter() - t0
    preset = get_preset("tiny")
    tmp = Path(tempfile.mkdtemp(prefix="ltx2-bench-"))
    seg = Segment(id="s", prompt="a dog running on the beach")
    board = Storyboard(path=tmp / "b.toml", project=Project(), segments=(seg,))
    plan = (StagePlan(name="cpu") if args.device == "cpu"
            else StagePlan(name="resident", device=args.device, dtype="bfloat16"))
    models = LoadedModels()
    ctx = StageContext(emit=lambda e: None, cancel=threading.Event(), models=models, plan=plan)
    anchor = np.full((128, 224, 3), 128, np.uint8)

    def job(i2v: bool) -> SegmentJob:
        return SegmentJob(storyboard=board, segment=seg, index=0, preset=preset, frames=args.frames, seed=0,
                          fps=24, draft_size=preset.draft_size, refine_size=preset.refine_size,
                          output_size=(1920, 1080), steps=preset.steps, refine_sigmas=preset.refine_sigmas,
                          lora_strength=preset.lora_strength, audio=True, prompt=seg.prompt,
                          anchor=anchor if i2v else None, anchor_digest="a" if i2v else "")

    n = [0]

    def timed(stage: object, j: SegmentJob, inputs: dict) -> tuple[float, Artifact]:
        n[0] += 1
        out = tmp / str(n[0])
        out.mkdir()
        t = time.perf_counter()
        meta = stage.run(ctx, j, inputs, out)  # type: ignore[attr-defined]
        if plan.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, Artifact(stage=stage.name, key=str(n[0]), path=out, meta=meta)  # type: ignore[attr-defined]

    first_draft, draft = timed(DraftStage(), job(False), {})  # includes loading every component
    results: dict[str, list[float]] = {"draft_t2v": [], "draft_i2v": [], "refine": []}
    for _ in range(args.repeat):
        results["draft_t2v"].append(timed(DraftStage(), job(False), {})[0])
        results["draft_i2v"].append(timed(DraftStage(), job(True), {})[0])
        results["refine"].append(timed(RefineStage(), job(False), {"draft": draft})[0])
    print(json.dumps({
        "bench": "ltx2_tiny", "device": args.device, "frames": args.frames,
        "draft_size": list(preset.draft_size), "refine_size": list(preset.refine_size),
        "steps": preset.steps, "refine_steps": len(preset.refine_sigmas) - 1,
        "build_s": round(build_s, 2), "first_draft_s": round(first_draft, 2),
        **{f"{k}_median_s": round(statistics.median(v), 3) for k, v in results.items()},
        "runs": {k: [round(x, 3) for x in v] for k, v in results.items()},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
