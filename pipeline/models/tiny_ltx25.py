"""A tiny random-weight LTX-2.5 stack, written the way ``ltx25-distilled``'s files are published.

LTX-2.5 runs through the same diffusers classes as LTX-2.3; what differs is in the files:

* the transformer config says ``ff_bias: false`` (no video feed-forward biases) and
  ``use_keyframes_abs_pos_embedding: true`` (a ``(1, dim)`` parameter of that name, the same in
  Lightricks' and diffusers' naming). The twin writes the transformer with Lightricks' names as
  safetensors (the parameter ``(1, dim)``, as Lightricks ships it) and as a community-style GGUF
  (the parameter stored 1-D, as one source says community GGUFs do);
* the text encoder is Lightricks' Gemma 4 finetune, ``Gemma4UnifiedForConditionalGeneration``
  (``model_type: gemma4_unified``): full-attention layers with their own head size and one KV head,
  keys equal to values (``attention_k_eq_v``), as the published config is described;
* everything else (video VAE, audio VAE, ``LTX2VocoderWithBWE``, connectors, scheduler, the x2
  upsampler in ``latent_upsampler/``) sits in the ``Lightricks/LTX-2.5-Diffusers`` folder layout.
  The native ``Lightricks/LTX-2.5`` single files (VAE keys at the root) are not what the preset
  loads, so the twin does not write them.

The widths are :mod:`pipeline.models.tiny_ltx2`'s, so a segment renders in seconds on a CPU.
:func:`overrides` points the real preset at a written twin through its ``SULPHUR_LTX25_*`` paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.models import published_stack, tiny_ltx2

# Deferred imports: torch, diffusers, transformers, safetensors, pipeline.models.enhancer, pipeline.models.esrgan —
#   only writing the twin needs them

#: The 2.3 twin's transformer with LTX-2.5's two config changes.
TRANSFORMER_CONFIG: dict[str, Any] = {**tiny_ltx2.TRANSFORMER_CONFIG, "ff_bias": False,
                                      "use_keyframes_abs_pos_embedding": True}

#: LTX-2.5's full-size transformer as diffusers builds it from LTX-2.3's converted config plus the two 2.5 keys:
#: 4091 tensors, 18.99B parameters, what a third-party read of the real distilled file's header counts.
PUBLISHED_TRANSFORMER_CONFIG: dict[str, Any] = {**published_stack.TRANSFORMER, "ff_bias": False,
                                                "use_keyframes_abs_pos_embedding": True}

# Files inside the written folder.
DIFFUSERS_DIR = "diffusers"
GGUF_FILE = "ltx-2.5-tiny-distilled-transformer-Q8_0.gguf"
SAFETENSORS_FILE = "ltx-2.5-tiny-distilled-transformer.safetensors"
ENHANCER_FILE = "enhancer/tiny-llm.gguf"
ESRGAN_FILE = "esrgan/tiny_x2plus.pth"


def text_encoder_config() -> dict[str, Any]:
    """Gemma 4 unified, tiny: one sliding and one full-attention layer (the full one with its own
    head size, one KV head and keys = values, as LTX-2.5's encoder), 32 wide like the 2.3 twin's."""
    base = tiny_ltx2.text_encoder_config()
    vocab = base["text_config"]["vocab_size"] + 8  # the tokenizer's words, then the media specials
    text = {**base["text_config"], "vocab_size": vocab, "layer_types": ["sliding_attention", "full_attention"],
            "global_head_dim": 16, "num_global_key_value_heads": 1, "attention_k_eq_v": True}
    return {
        "text_config": text,
        "vision_config": {"patch_size": 4, "pooling_kernel_size": 2, "mm_embed_dim": 32, "mm_posemb_size": 16,
                          "output_proj_dims": 32},
        "audio_config": None,
        "boi_token_id": vocab - 1, "eoi_token_id": vocab - 2, "image_token_id": vocab - 3,
        "video_token_id": vocab - 4, "boa_token_id": vocab - 5, "eoa_token_index": vocab - 6,
        "audio_token_id": vocab - 7,
    }


def overrides(root: Path, *, gguf: bool = True) -> dict[str, str]:
    """The ``SULPHUR_LTX25_*`` variables that point ``ltx25-distilled`` at a twin written under ``root``
    (``gguf=False``: the safetensors transformer instead of the GGUF)."""
    root = Path(root)
    return {
        "SULPHUR_LTX25_TRANSFORMER": str(root / (GGUF_FILE if gguf else SAFETENSORS_FILE)),
        "SULPHUR_LTX25_CONFIG": str(root / DIFFUSERS_DIR / "transformer"),
        "SULPHUR_LTX25_DIFFUSERS": str(root / DIFFUSERS_DIR),
        "SULPHUR_LTX25_UPSAMPLER": str(root / DIFFUSERS_DIR),  # latent_upsampler/ inside, as published
        "SULPHUR_ESRGAN": str(root / ESRGAN_FILE),
        "SULPHUR_LTX25_ENHANCER_GGUF": str(root / ENHANCER_FILE),
    }


def write_twin(root: Path) -> Path:
    """Write every file of the tiny 2.5 stack under ``root`` (fixed seeds: the same bytes each time)."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel, LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    root = Path(root)
    d = root / DIFFUSERS_DIR
    d.mkdir(parents=True, exist_ok=True)
    tiny_ltx2.make_tokenizer().save_pretrained(d / "tokenizer")
    _write_text_encoder(d / "text_encoder")
    _write_transformer(root)
    for seed, name, cls, config in ((2, "connectors", LTX2TextConnectors, tiny_ltx2.CONNECTORS_CONFIG),
                                    (3, "vae", AutoencoderKLLTX2Video, tiny_ltx2.VAE_CONFIG),
                                    (4, "audio_vae", AutoencoderKLLTX2Audio, tiny_ltx2.AUDIO_VAE_CONFIG),
                                    (5, "vocoder", LTX2VocoderWithBWE, tiny_ltx2.VOCODER_CONFIG),
                                    (6, "latent_upsampler", LTX2LatentUpsamplerModel, tiny_ltx2.UPSAMPLER_CONFIG)):
        torch.manual_seed(seed)
        cls(**config).save_pretrained(d / name)
    FlowMatchEulerDiscreteScheduler(**tiny_ltx2.SCHEDULER_CONFIG).save_pretrained(d / "scheduler")
    tiny_ltx2.write_model_index(d, text_encoder="Gemma4UnifiedForConditionalGeneration")
    _write_others(root)
    return root


def text_encoder_model() -> Any:
    """The twin's text encoder in memory (seed 0): what its folder holds, for tests to compare against
    (transformers renames some Gemma 4 keys on save, so the file's names are not the module's)."""
    import torch
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    torch.manual_seed(0)
    return Gemma4UnifiedForConditionalGeneration(Gemma4UnifiedConfig(**text_encoder_config())).eval()


def _write_text_encoder(folder: Path) -> None:
    text_encoder_model().save_pretrained(folder)


def _write_transformer(root: Path) -> None:
    """diffusers' folder (transformer/, config and weights), and the same tensors under Lightricks'
    names as one safetensors file and as a GGUF with the keyframe parameter stored 1-D."""
    import torch
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(1)
    model = LTX2VideoTransformer3DModel(**TRANSFORMER_CONFIG)
    with torch.no_grad():  # diffusers initialises it to zeros; random values show it arrives
        model.keyframes_abs_pos_embedding.normal_(0.0, 0.5)
    model.save_pretrained(root / DIFFUSERS_DIR / "transformer")
    lightricks = tiny_ltx2.lightricks_state_dict(model.state_dict())
    tiny_ltx2._save_safetensors(lightricks, root / SAFETENSORS_FILE)
    key = next(k for k in lightricks if k.endswith("keyframes_abs_pos_embedding"))
    tiny_ltx2.write_transformer_gguf({**lightricks, key: lightricks[key].reshape(-1)}, root / GGUF_FILE)


def _write_others(root: Path) -> None:
    # The enhancer stays the 2.3 twin's Gemma-3-architecture GGUF: llama.cpp runs the same code for it.
    from pipeline.models.enhancer import build_tiny_llm
    from pipeline.models.esrgan import build_tiny_x2plus

    (root / ENHANCER_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / ESRGAN_FILE).parent.mkdir(parents=True, exist_ok=True)
    build_tiny_llm(root / ENHANCER_FILE)
    build_tiny_x2plus(root / ESRGAN_FILE)
