"""LTX-2 19B, every component full size, random weights: the ``ltx2-19b-random`` preset.

It exists for the GPU benchmarks (bench/ray_pipeline.py, bench/segment_budget.py): the
render runs through the same stages, plans, offload hooks and cache as real weights,
with the memory and time of the real architectures, and produces noise. Nothing is
read from disk but the tiny stack's tokenizer and scheduler configs and a full-size
random Real-ESRGAN x2plus file (written once, 67 MB, so spandrel loads it as usual).

The transformer is built as GGUF (random Q4_0 blocks in every block Linear, ≈ the
0.56 B/param of a Q4 checkpoint) so it never exists in bf16 on the host; the text
encoder is Gemma 3 12B in bf16, as LTX-2 ships it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models import tiny_ltx2
from pipeline.models.build_once import build_once
from pipeline.models.registry import sulphur_home

if TYPE_CHECKING:
    import torch

# Deferred imports: diffusers, transformers, pipeline.models, pipeline.models.esrgan — only a random-weight build
#   needs them

#: Bump when a config below changes (the model identity in cache keys follows it).
VERSION = 1
FOLDER_NAME = f"ltx2-19b-random-v{VERSION}"
ESRGAN_FILE = "esrgan/x2plus-random.pth"
QUANT = "Q4_0"

#: Gemma 3 12B (google/gemma-3-12b-it config.json): the text tower LTX-2 stacks 49 hidden states of.
GEMMA3_12B: dict[str, Any] = {
    "text_config": {
        "vocab_size": 262208, "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "sliding_window": 1024,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "query_pre_attn_scalar": 256,
    },
    "vision_config": {
        "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
        "image_size": 896, "patch_size": 14, "vision_use_head": False,
    },
    "mm_tokens_per_image": 256,
}

#: The class defaults are LTX-2's VAE, except the compression ratios: left unset they are
#: computed as patch × 2^(scaled stages) = 64×/16×, but one encoder stage downsamples only
#: time and one only space, so the network compresses 32× in space and 8× in time.
VAE: dict[str, Any] = {"spatial_compression_ratio": 32, "temporal_compression_ratio": 8}

#: What the memory planner should assume (parameter counts of the classes' defaults, diffusers 0.42.1).
MEMORY: dict[str, dict[str, Any]] = {
    "transformer": {"params": 18.9e9, "fmt": QUANT},
    "text_encoder": {"params": 12.2e9, "fmt": "bfloat16"},
}


def _layers() -> int | None:
    """``SULPHUR_RANDOM_LAYERS=N`` caps the repeated layers (smoke runs of a benchmark on a small machine)."""
    value = os.environ.get("SULPHUR_RANDOM_LAYERS", "")
    return int(value) if value else None


def identity() -> str:
    """Names the weights in cache keys: the builder version and any layer cap."""
    layers = _layers()
    return f"random-v{VERSION}" + (f"-layers{layers}" if layers else "")


def build_files(root: Path | None = None) -> Path:
    """The few files this preset reads: the tiny stack (tokenizer, scheduler) and a full-size x2plus."""
    from pipeline.models.esrgan import build_tiny_x2plus

    tiny_ltx2.build_tiny()

    def build(tmp: Path) -> None:
        build_tiny_x2plus(tmp / ESRGAN_FILE, nf=64, nb=23)  # RealESRGAN_x2plus.pth's layout, 16.7M params

    return build_once(Path(root) if root is not None else sulphur_home() / FOLDER_NAME, build,
                      {"version": VERSION})


def transformer(dtype: torch.dtype, quant: str | None = QUANT, layers: int | None = None) -> torch.nn.Module:
    """``LTX2VideoTransformer3DModel()`` (48 blocks, 18.9B) with random GGUF block weights;
    ``layers`` caps the blocks (default: ``SULPHUR_RANDOM_LAYERS``, else all)."""
    from diffusers import LTX2VideoTransformer3DModel

    from pipeline.models import random_weights

    layers = layers or _layers()
    model = random_weights.on_meta(
        lambda: LTX2VideoTransformer3DModel(**({"num_layers": layers} if layers else {})), dtype)
    if quant:
        random_weights.quantize_linears(model, quant, compute_dtype=dtype)
    return random_weights.materialize(model, dtype)


def component(name: str, dtype: torch.dtype) -> torch.nn.Module:
    """One of the pipeline's other components at its default (full) size."""
    from pipeline.models import random_weights

    layers = _layers()
    if name == "text_encoder":
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration

        cfg = GEMMA3_12B
        if layers:
            cfg = {**cfg, "text_config": {**cfg["text_config"], "num_hidden_layers": layers},
                   "vision_config": {**cfg["vision_config"], "num_hidden_layers": 1}}
        config = Gemma3Config(**cfg)
        return random_weights.build(lambda: Gemma3ForConditionalGeneration(config), dtype)
    if name == "vae":
        from diffusers import AutoencoderKLLTX2Video

        return random_weights.build(lambda: AutoencoderKLLTX2Video(**VAE), dtype)
    if name == "audio_vae":
        from diffusers import AutoencoderKLLTX2Audio as cls
    elif name == "vocoder":
        from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder as cls
    elif name == "connectors":
        from diffusers.pipelines.ltx2 import LTX2TextConnectors

        # One projection input per stacked text-encoder hidden state (embeddings + each layer).
        return random_weights.build(
            lambda: LTX2TextConnectors(**({"text_proj_in_factor": layers + 1} if layers else {})), dtype)
    elif name == "upsampler":
        from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel as cls
    else:
        raise KeyError(name)
    return random_weights.build(cls, dtype)
