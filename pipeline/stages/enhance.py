"""Enhance: rewrite the segment's prompt in the model's own language with a llama.cpp chat model.

Preset settings (``preset.extra``), all optional:

- ``enhance_system_prompt``: ``"ltx"`` (Lightricks' T2V/I2V prompts, the default), ``"ltx25"``
  (Lightricks' LTX-2.5 prompts),
  ``"none"`` (a finetuned enhancer used as published, e.g. Sulphur 2's), or the text;
- ``max_sequence_length``: the text encoder's token limit; the answer is held to it;
- ``enhance_max_tokens`` (ltx-core's 512 for Gemma 3, 600 for LTX-2.5's Gemma 4 E2B), ``enhance_n_ctx``
  and ``enhance_temperature`` (0.7; 0 is greedy, as LTX-2.5's enhancer is run).

A prompt that does not fit the enhancer's context is passed through as written, with a
warning event; it never fails the job.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.memory.planner import detect_device
from pipeline.stages.base import SegmentJob, Stage, StageContext
from pipeline.wire.protocol import Log

if TYPE_CHECKING:
    from pipeline.models.registry import Preset
    from pipeline.stages.base import Artifact

# Deferred imports: pipeline.models.enhancer — its numpy and llama.cpp load only when a prompt is enhanced

#: Key under which the loaded LLM lives in ``ctx.models``.
MODEL_KEY = "enhancer"
#: ltx-core's ``max_new_tokens`` for Gemma 3 enhancement.
DEFAULT_MAX_TOKENS = 512
#: Lightricks' T2V system prompt is ~1k Gemma tokens; with a prompt and a 512-token answer, 4k fits.
DEFAULT_N_CTX = 4096
#: Said once per process: a CPU-only llama.cpp on a machine with a GPU.
_warned_cpu_build = False

CPU_BUILD_WARNING = ("llama.cpp here is a CPU-only build, so the prompt enhancer runs on the CPU; for the GPU: "
                     'CMAKE_ARGS="-DGGML_CUDA=on" pip install llama-cpp-python --force-reinstall --no-cache-dir')


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


def image_to_video(job: SegmentJob) -> bool:
    """Whether the draft starts from a frame, known before the anchor is read (same on every engine)."""
    kind = job.segment.anchor.kind
    return job.anchor is not None or kind in ("image", "video") or (kind == "previous" and job.index > 0)


def _has_role(preset: Preset, role: str) -> bool:
    return any(f.role == role for f in preset.files)


def _mmproj(preset: Preset) -> Path | None:
    """The enhancer's vision projector, when the preset names one (role ``enhancer_mmproj``)."""
    if not _has_role(preset, "enhancer_mmproj"):
        return None
    return preset.file("enhancer_mmproj").local_path()


class EnhanceStage(Stage):
    name = "enhance"
    version = 3  # 3: Lightricks' T2V/I2V system prompts, quotes allowed, length from max_sequence_length
    inputs = ()

    def params(self, job: SegmentJob) -> dict[str, Any]:
        from pipeline.models.enhancer import (
            LTX25_PROMPTS,
            LTX_PROMPTS,
            SYSTEM_PROMPT_VERSION,
            TINY_LLM_VERSION,
        )

        mode = _mode(job.preset)
        vision = _mmproj(job.preset) is not None and job.anchor is not None
        return {
            "prompt": job.segment.prompt,
            "model": model_identity(job.preset, "enhancer", TINY_LLM_VERSION),
            # The vision projector loads with the LLM (another chat handler) even without an image.
            "mmproj": (model_identity(job.preset, "enhancer_mmproj", TINY_LLM_VERSION)
                       if _has_role(job.preset, "enhancer_mmproj") else None),
            "seed": job.seed,
            "max_tokens": _max_tokens(job),
            "system_prompt": SYSTEM_PROMPT_VERSION,
            "mode": mode,
            # only where a preset departs from 0.7, so other presets' cached prompts stay valid
            **({"temperature": _temperature(job.preset)} if _temperature(job.preset) != 0.7 else {}),
            # Lightricks' prompt text comes from diffusers: another release may word it anew.
            "prompts_from": importlib.metadata.version("diffusers") if mode in (LTX_PROMPTS, LTX25_PROMPTS) else "",
            "image_to_video": image_to_video(job),
            "anchor": job.anchor_digest if vision else "",
        }

    def total_steps(self, job: SegmentJob) -> int:
        return 1

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        from pipeline.models.enhancer import CHARS_PER_TOKEN, enhance

        ctx.progress(self.name, 0, 1)
        on_gpu_machine = ctx.plan.device == "cuda" or detect_device() == "cuda"
        llm = self._load(ctx, job, on_gpu_machine)
        i2v = image_to_video(job)
        max_tokens = _max_tokens(job)
        try:
            # 2. Generate and clean; the anchor frame is shown only to a model with a vision projector.
            result = enhance(llm, job.segment.prompt, seed=job.seed, max_tokens=max_tokens, mode=_mode(job.preset),
                             temperature=_temperature(job.preset),
                             image_to_video=i2v, image=job.anchor if i2v else None,
                             max_chars=CHARS_PER_TOKEN * max_tokens)
        finally:
            # 3. On a GPU machine the LLM is a memory peak of its own (8 GB cards OOM with it
            #    held next to the DiT), and even a CPU-placed LLM takes host RAM the offloaded
            #    DiT needs; only an all-CPU render keeps it for the next segment.
            if on_gpu_machine:
                ctx.models.make_room(drop=[MODEL_KEY], reason="the enhancer is done")
        if result.fallback:
            self._warn(ctx, f"{ctx.segment_id}: prompt enhancer gave no usable text ({result.reason}); "
                            "using the prompt as written")
        (out / "prompt.txt").write_text(result.text, encoding="utf-8")
        ctx.progress(self.name, 1, 1)
        return {"prompt": result.text, "fallback": result.fallback, "image_to_video": i2v}

    def _load(self, ctx: StageContext, job: SegmentJob, on_gpu_machine: bool) -> Any:
        """1. Load (or reuse) the LLM: all layers on the GPU only where the plan keeps weights resident."""
        from pipeline.models.enhancer import cpu_only_build, load_enhancer

        global _warned_cpu_build
        path = resolve_model_file(job.preset, "enhancer")
        plan = ctx.plan
        gpu = plan.device == "cuda" and plan.offload in ("resident", "model")
        n_gpu_layers = int(plan.options.get("n_gpu_layers", -1 if gpu else 0))
        if on_gpu_machine and not _warned_cpu_build and cpu_only_build():
            _warned_cpu_build = True
            self._warn(ctx, CPU_BUILD_WARNING)
        held = ctx.models.get(MODEL_KEY, lambda: None) if MODEL_KEY in ctx.models else None
        if held is not None and Path(held.model_path) != path:
            ctx.models.make_room(drop=[MODEL_KEY], reason="another preset's LLM")
        n_ctx = int(job.preset.extra.get("enhance_n_ctx", DEFAULT_N_CTX))
        mmproj = _mmproj(job.preset)
        return ctx.models.get(MODEL_KEY, lambda: load_enhancer(path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
                                                               seed=job.seed, mmproj=mmproj))

    @staticmethod
    def _warn(ctx: StageContext, message: str) -> None:
        ctx.emit(Log(job_id=ctx.job_id, level="warning", message=message))


def _mode(preset: Preset) -> str:
    from pipeline.models.enhancer import LTX_PROMPTS

    return str(preset.extra.get("enhance_system_prompt", LTX_PROMPTS))


def _temperature(preset: Preset) -> float:
    """ltx-core samples Gemma 3 at 0.7; LTX-2.5's gemma-4-E2B enhancer decodes greedily (``enhance_temperature`` 0)."""
    return float(preset.extra.get("enhance_temperature", 0.7))


def _max_tokens(job: SegmentJob) -> int:
    """ltx-core's answer length, held to what the text encoder reads (``max_sequence_length``).

    The enhancer and LTX-2's text encoder are both Gemma 3, so their tokens are the same.
    """
    wanted = int(job.preset.extra.get("enhance_max_tokens", DEFAULT_MAX_TOKENS))
    limit = job.preset.extra.get("max_sequence_length")
    return min(wanted, int(limit)) if limit else wanted
