"""Enhance: rewrite the segment's prompt in cinematic language with a llama.cpp chat model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.stages.base import SegmentJob, Stage, StageContext

if TYPE_CHECKING:
    from pipeline.models.registry import Preset
    from pipeline.stages.base import Artifact

#: Key under which the loaded LLM lives in ``ctx.models``.
MODEL_KEY = "enhancer"
DEFAULT_MAX_TOKENS = 200
DEFAULT_N_CTX = 2048


def resolve_model_file(preset: Preset, role: str) -> Path:
    """Local path of a preset's file, building the tiny preset's files on first use."""
    return preset.resolve(role)


def model_identity(preset: Preset, role: str, tiny_version: int) -> dict[str, Any]:
    """What identifies the weights in a cache key, without loading them.

    Tiny presets are rebuilt deterministically, so their builder version stands in for
    the file (whose mtime changes on every rebuild); real files are named by size+mtime.
    """
    spec = preset.file(role)
    if preset.builder is not None:
        return {"tiny": tiny_version, "file": Path(spec.path).name}
    path = spec.local_path()
    if path is None:
        return {"missing": spec.where()}
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class EnhanceStage(Stage):
    name = "enhance"
    version = 2  # 2: output constrained to one paragraph of prose (PROSE_GBNF)
    inputs = ()

    def params(self, job: SegmentJob) -> dict[str, Any]:
        from pipeline.models.enhancer import SYSTEM_PROMPT_VERSION, TINY_LLM_VERSION

        return {
            "prompt": job.segment.prompt,
            "model": model_identity(job.preset, "enhancer", TINY_LLM_VERSION),
            "seed": job.seed,
            "max_tokens": _max_tokens(job),
            "system_prompt": SYSTEM_PROMPT_VERSION,
        }

    def total_steps(self, job: SegmentJob) -> int:
        return 1

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        from pipeline.memory.planner import detect_device
        from pipeline.models.enhancer import enhance, load_enhancer
        from pipeline.wire.protocol import Log

        ctx.progress(self.name, 0, 1)
        # 1. Load (or reuse) the LLM. Full GPU offload only where the plan keeps weights
        #    resident; leaner plans leave the LLM on the CPU so the card stays free.
        path = resolve_model_file(job.preset, "enhancer")
        plan = ctx.plan
        gpu = plan.device == "cuda" and plan.offload in ("resident", "model")
        n_gpu_layers = int(plan.options.get("n_gpu_layers", -1 if gpu else 0))
        held = ctx.models.get(MODEL_KEY, lambda: None) if MODEL_KEY in ctx.models else None
        if held is not None and Path(held.model_path) != path:
            ctx.models.make_room(drop=[MODEL_KEY], reason="another preset's LLM")
        n_ctx = int(job.preset.extra.get("enhance_n_ctx", DEFAULT_N_CTX))
        llm = ctx.models.get(MODEL_KEY, lambda: load_enhancer(path, n_gpu_layers=n_gpu_layers,
                                                              n_ctx=n_ctx, seed=job.seed))
        try:
            # 2. Generate and clean.
            result = enhance(llm, job.segment.prompt, seed=job.seed, max_tokens=_max_tokens(job))
        finally:
            # 3. On a GPU machine the LLM is a memory peak of its own (8 GB cards OOM with it
            #    held next to the DiT), and even a CPU-placed LLM takes host RAM the offloaded
            #    DiT needs; only an all-CPU render keeps it for the next segment.
            if plan.device == "cuda" or detect_device() == "cuda":
                ctx.models.make_room(drop=[MODEL_KEY], reason="the enhancer is done")
        if result.fallback:
            ctx.emit(Log(job_id=ctx.job_id, level="warning",
                         message=f"{ctx.segment_id}: prompt enhancer gave no usable text "
                                 f"({result.reason}); using the prompt as written"))
        (out / "prompt.txt").write_text(result.text, encoding="utf-8")
        ctx.progress(self.name, 1, 1)
        return {"prompt": result.text, "fallback": result.fallback}


def _max_tokens(job: SegmentJob) -> int:
    return int(job.preset.extra.get("enhance_max_tokens", DEFAULT_MAX_TOKENS))
