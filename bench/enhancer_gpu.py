"""Enhancer on a GPU machine: does llama.cpp offload, and does a CPU-only build say so once?

Runs the enhance stage three times on a CUDA plan with the tiny LLM (Lightricks' T2V
prompt, then I2V for a chained shot) and prints JSON: whether CUDA is there, whether this
llama.cpp build can offload, how many "CPU-only" warnings the stage emitted (1 expected
with the default PyPI wheel on a GPU machine, 0 with a CUDA build), and seconds per call.

    python bench/enhancer_gpu.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.memory.loaded import LoadedModels  # noqa: E402
from pipeline.memory.planner import StagePlan, detect_device  # noqa: E402
from pipeline.models.enhancer import build_tiny_llm, cpu_only_build  # noqa: E402
from pipeline.models.registry import ModelFile, Preset  # noqa: E402
from pipeline.project.storyboard import Project, Segment, Storyboard  # noqa: E402
from pipeline.stages.base import SegmentJob, StageContext  # noqa: E402
from pipeline.stages.enhance import EnhanceStage  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="enhancer-gpu-"))
    model = build_tiny_llm(tmp / "tiny.gguf")
    preset = Preset("bench", "ltx2", "", files=(ModelFile("enhancer", "llm", path=str(model)),),
                    extra={"max_sequence_length": 64})
    events: list = []
    ctx = StageContext(emit=events.append, cancel=threading.Event(), models=LoadedModels(),
                       plan=StagePlan(name="cuda", device="cuda"), segment_id="s")
    seconds = []
    for index in (0, 1, 2):
        seg = Segment(id=f"s{index}", prompt="A man at a bus stop says: \"It's late again.\" Rain on the shelter.")
        board = Storyboard(path=tmp / "b.toml", project=Project(), segments=(seg,))
        job = SegmentJob(storyboard=board, segment=seg, index=index, preset=preset, frames=9, seed=index, fps=24,
                         draft_size=(32, 32), refine_size=(64, 64), output_size=(128, 128), steps=1,
                         refine_sigmas=(0.0,), lora_strength=0.0, audio=False)
        out = tmp / f"out{index}"
        out.mkdir()
        t0 = time.perf_counter()
        meta = EnhanceStage().run(ctx, job, {}, out)
        seconds.append(round(time.perf_counter() - t0, 3))
    warnings = [e.message for e in events if getattr(e, "level", "") == "warning"]
    print(json.dumps({
        "machine_device": detect_device(),
        "llama_cpp_gpu_offload": not cpu_only_build(),
        "cpu_only_warnings": sum("CPU-only" in w for w in warnings),
        "warnings": warnings,
        "seconds_per_enhance": seconds,
        "last_image_to_video": meta["image_to_video"],
    }, indent=2))


if __name__ == "__main__":
    main()
