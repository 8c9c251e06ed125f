"""Prompt embeddings, content-addressed, encoded for the whole storyboard in one pass.

Loading the 12B text encoder (or moving it to the GPU and back) costs far more than
encoding: on an H200 the per-prompt round trips were 55 s of a 130 s render. So the
first draft that needs an embedding encodes its own prompt and every later shot's
prompt already known (raw, or locked enhanced) in one placement of the encoder, then
the encoder is evicted. The embeddings go to ``<project>/.sulphur/cache/prompt_embeds``
under a key of the prompt text, the weights' identity, ``max_sequence_length`` and the
encoder's dtype: a re-render (an edited later shot, a kill -9 resume) reads them back
instead of loading the encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.models import ltx2
from pipeline.models.ltx2 import model_identity
from pipeline.wire.protocol import Log

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.models.ltx2 import PromptEmbeds
    from pipeline.stages.base import SegmentJob, StageContext

# Deferred imports: torch, safetensors — the cache key is read without them; they load when embeddings are made or
#   read

#: Bump when the stored embeddings' meaning changes.
VERSION = 1


def embeds_key(job: SegmentJob, te_dtype: str, prompt: str) -> str:
    """Content address of one prompt's embeddings under this job's weights."""
    preset = job.preset
    doc = {"v": VERSION, "prompt": prompt, "model": model_identity(preset), "dtype": te_dtype,
           "max_sequence_length": int(preset.extra.get("max_sequence_length", 1024))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def cache_dir(job: SegmentJob) -> Path:
    return job.storyboard.state_dir() / "cache" / "prompt_embeds"


def upcoming_prompts(job: SegmentJob) -> list[str]:
    """This shot's prompt, then the later shots' prompts that are already final (same preset;
    an enhanced prompt not yet written is unknown until the enhancer runs)."""
    project = job.storyboard.project
    out = [job.prompt]
    for seg in job.storyboard.segments[job.index + 1:]:
        if seg.preset not in (None, job.preset.name):
            continue  # another model's encoder
        if seg.enhance_lock and seg.enhanced_prompt.strip():
            text = seg.enhanced_prompt
        elif not project.enhance or not job.preset.takes_prompt:
            text = seg.prompt
        else:
            continue
        if text not in out:
            out.append(text)
    return out


def prompt_embeds(ctx: StageContext, job: SegmentJob, *,
                  on_encoder_loaded: Callable[[], None] | None = None) -> PromptEmbeds:
    """``job.prompt``'s embeddings on the stage's device, from the cache or one encoder pass
    (``on_encoder_loaded``: called when the encoder is loaded, before it computes; never from the cache)."""
    import torch
    from safetensors.torch import load_file


    plan = ctx.plan
    te_dtype = ltx2.text_encoder_dtype(plan, job.preset)
    folder = cache_dir(job)
    path = folder / f"{embeds_key(job, te_dtype, job.prompt)}.safetensors"
    if not path.is_file():
        wanted = [p for p in upcoming_prompts(job)
                  if not (folder / f"{embeds_key(job, te_dtype, p)}.safetensors").is_file()]
        t0 = time.perf_counter()
        encoded = ltx2.encode_prompts(ctx.models, job.preset, plan, wanted, on_loaded=on_encoder_loaded)
        ctx.emit(Log(job_id=ctx.job_id, level="debug",
                     message=f"text encoder: {len(wanted)} prompts in {time.perf_counter() - t0:.2f} s"))
        folder.mkdir(parents=True, exist_ok=True)
        for text, enc in zip(wanted, encoded, strict=True):
            _save(folder / f"{embeds_key(job, te_dtype, text)}.safetensors", enc)
    tensors = load_file(str(path))
    dev = torch.device(plan.device)
    return ltx2.PromptEmbeds(embeds=tensors["embeds"].to(dev, ltx2.torch_dtype(plan)), mask=tensors["mask"].to(dev))


def _save(path: Path, enc: PromptEmbeds) -> None:
    """Write then rename, so a killed render never leaves a half file under a valid key."""
    from safetensors.torch import save_file

    tmp = path.with_suffix(f".{os.getpid()}.part")
    save_file({"embeds": enc.embeds.contiguous(), "mask": enc.mask.contiguous()}, str(tmp))
    os.replace(tmp, path)
