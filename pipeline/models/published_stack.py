"""A full-size LTX-2.3 stack with random weights, written to disk the way it is published.

``ltx2-19b-random`` builds its models in memory; a user's first render instead reads files:
the transformer as a community GGUF with Lightricks' tensor names, everything else as the
``diffusers/LTX-2.3-Diffusers`` folder, the upsampler as a pipeline folder, the distilled LoRA
with Lightricks' ``diffusion_model.*`` keys and Real-ESRGAN's ``.pth``. This writes that stack
so the presets load it through their real loaders (``SULPHUR_*`` overrides, :func:`overrides`);
the layout, not the weights, is what it checks.

The configs are LTX-2.3's as diffusers converts it (``scripts/convert_ltx2_to_diffusers.py``,
``version == "2.3"``, diffusers commit 17b53f08: transformer, connectors, video VAE, audio VAE,
``LTX2VocoderWithBWE``), and Gemma 3 12B (google/gemma-3-12b-it) as the text encoder, each stored
in the dtype that repo uses (:data:`STORAGE_DTYPES`). Caps
(:class:`Caps`) shrink the repeated layers for a smoke run on a small machine, and the text
encoder for a device whose disk or time cannot take 24 GB of bf16 (say so where it is used).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.models import ltx_keys, tiny_ltx2
from pipeline.models.gguf_writer import write_random_gguf
from pipeline.models.ltx2_random import GEMMA3_12B

# Deferred imports: torch, accelerate, diffusers, transformers, safetensors, pipeline.models.random_weights,
#   pipeline.models.esrgan, pipeline.models.enhancer — only writing the stack needs them

VERSION = 1

#: LTX2VideoTransformer3DModel, LTX-2.3 (18.99B parameters: the "22B" counts the bundled connectors).
TRANSFORMER: dict[str, Any] = {
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
    "attention_head_dim": 128, "cross_attention_dim": 4096, "vae_scale_factors": [8, 32, 32],
    "pos_embed_max_pos": 20, "base_height": 2048, "base_width": 2048, "gated_attn": True, "cross_attn_mod": True,
    "audio_in_channels": 128, "audio_out_channels": 128, "audio_patch_size": 1, "audio_patch_size_t": 1,
    "audio_num_attention_heads": 32, "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048,
    "audio_scale_factor": 4, "audio_pos_embed_max_pos": 20, "audio_sampling_rate": 16000, "audio_hop_length": 160,
    "audio_gated_attn": True, "audio_cross_attn_mod": True, "num_layers": 48, "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "caption_channels": 3840, "attention_bias": True, "attention_out_bias": True, "rope_theta": 10000.0,
    "rope_double_precision": True, "causal_offset": 1, "timestep_scale_multiplier": 1000,
    "cross_attn_timestep_scale_multiplier": 1000, "rope_type": "split", "use_prompt_embeddings": False,
    "perturbed_attn": True,
}

#: LTX2TextConnectors, LTX-2.3: per-modality projections of the 49 stacked Gemma hidden states.
CONNECTORS: dict[str, Any] = {
    "caption_channels": 3840, "text_proj_in_factor": 49, "video_connector_num_attention_heads": 32,
    "video_connector_attention_head_dim": 128, "video_connector_num_layers": 8,
    "video_connector_num_learnable_registers": 128, "video_gated_attn": True,
    "audio_connector_num_attention_heads": 32, "audio_connector_attention_head_dim": 64,
    "audio_connector_num_layers": 8, "audio_connector_num_learnable_registers": 128, "audio_gated_attn": True,
    "connector_rope_base_seq_len": 4096, "rope_theta": 10000.0, "rope_double_precision": True,
    "causal_temporal_positioning": False, "rope_type": "split", "per_modality_projections": True,
    "video_hidden_dim": 4096, "audio_hidden_dim": 2048, "proj_bias": True,
}

#: AutoencoderKLLTX2Video, LTX-2.3 (a fourth decoder stage; 32× space, 8× time).
VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 128, "block_out_channels": [256, 512, 1024, 1024],
    "down_block_types": ["LTX2VideoDownBlock3D"] * 4, "decoder_block_out_channels": [256, 512, 512, 1024],
    "layers_per_block": [4, 6, 4, 2, 2], "decoder_layers_per_block": [4, 6, 4, 2, 2],
    "spatio_temporal_scaling": [True] * 4, "decoder_spatio_temporal_scaling": [True] * 4,
    "decoder_inject_noise": [False] * 5, "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "temporal", "spatial"],
    "upsample_residual": [False] * 4, "upsample_factor": [2, 2, 1, 2], "timestep_conditioning": False,
    "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6, "encoder_causal": True, "decoder_causal": False,
    "encoder_spatial_padding_mode": "zeros", "decoder_spatial_padding_mode": "zeros",
    "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
}

#: AutoencoderKLLTX2Audio: LTX-2.3 keeps LTX-2.0's.
AUDIO_VAE: dict[str, Any] = {
    "base_channels": 128, "output_channels": 2, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": None,
    "in_channels": 2, "resolution": 256, "latent_channels": 8, "norm_type": "pixel", "causality_axis": "height",
    "dropout": 0.0, "mid_block_add_attention": False, "sample_rate": 16000, "mel_hop_length": 160,
    "is_causal": True, "mel_bins": 64, "double_z": True,
}

#: LTX2VocoderWithBWE, LTX-2.3: 16 kHz vocoder + bandwidth extension to 48 kHz.
VOCODER: dict[str, Any] = {
    "in_channels": 128, "hidden_channels": 1536, "out_channels": 2, "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
    "upsample_factors": [5, 2, 2, 2, 2, 2], "resnet_kernel_sizes": [3, 7, 11],
    "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "act_fn": "snakebeta", "leaky_relu_negative_slope": 0.1,
    "antialias": True, "antialias_ratio": 2, "antialias_kernel_size": 12, "final_act_fn": None, "final_bias": False,
    "bwe_in_channels": 128, "bwe_hidden_channels": 512, "bwe_out_channels": 2,
    "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4], "bwe_upsample_factors": [6, 5, 2, 2, 2],
    "bwe_resnet_kernel_sizes": [3, 7, 11], "bwe_resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "bwe_act_fn": "snakebeta", "bwe_leaky_relu_negative_slope": 0.1, "bwe_antialias": True, "bwe_antialias_ratio": 2,
    "bwe_antialias_kernel_size": 12, "bwe_final_act_fn": None, "bwe_final_bias": False, "filter_length": 512,
    "hop_length": 80, "window_length": 512, "num_mel_channels": 64, "input_sampling_rate": 16000,
    "output_sampling_rate": 48000,
}

#: LTX2LatentUpsamplerModel at the class defaults (x2 spatial, 1024 wide): 497.9M parameters, the count the
#: same third-party script records for ltx-2.3-spatial-upscaler-x2-1.1.safetensors.
UPSAMPLER: dict[str, Any] = {}

#: What the distilled LoRA adapts in every block (Lightricks' names = diffusers' names inside a block).
LORA_TARGETS = tuple(f"{attn}.{proj}" for attn in ("attn1", "attn2", "audio_attn1", "audio_attn2",
                                                   "audio_to_video_attn", "video_to_audio_attn")
                     for proj in ("to_q", "to_k", "to_v", "to_out.0")) + (
    "ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2")

#: Storage dtypes in diffusers/LTX-2.3-Diffusers. Not read by us (nothing was downloaded): a third-party
#: script that fetched the repo records text_encoder/ as "48.75GB of fp32" (12.19B params x 4), connectors/
#: as 12.7 GB (3.2B x 4: fp32), vae/ as 1.45 GB (0.73B x 2: bf16) and transformer/ as 37.99 GB of bf16.
#: The audio VAE and vocoder are not recorded there; bf16 is assumed.
STORAGE_DTYPES = {"text_encoder": "float32", "connectors": "float32", "vae": "bfloat16", "audio_vae": "bfloat16",
                  "vocoder": "bfloat16", "upsampler": "bfloat16"}

# Files inside the written folder.
GGUF_FILE = "ltx-2.3-22b-dev-Q4_0.gguf"
DIFFUSERS_DIR = "diffusers"
UPSAMPLER_DIR = "spatial-upsampler"
ESRGAN_FILE = "esrgan/RealESRGAN_x2plus.pth"
ENHANCER_FILE = "enhancer/tiny-gemma3.gguf"


@dataclass(frozen=True)
class Caps:
    """Where the written stack departs from the published sizes (None: as published)."""

    layers: int | None = None       # transformer blocks and connector layers
    text_layers: int | None = None  # Gemma 3 text layers (the connectors' projections follow: layers + 1)
    vision_layers: int | None = None
    vocab: int | None = None        # Gemma's vocabulary (a smoke run's 1B-parameter embedding)
    lora_rank: int = 32             # the published distilled LoRA is rank 384 (7.6 GB)
    block_quant: str = "Q4_0"       # published GGUFs: Q3_K_M and others; random K-quants are not written
    other_quant: str = "Q8_0"       # 2-D weights outside the blocks

    def lora_file(self) -> str:
        return f"ltx-2.3-22b-distilled-lora-r{self.lora_rank}.safetensors"


def configs(caps: Caps) -> dict[str, dict[str, Any]]:
    """Every component's config, with the caps applied."""
    transformer, connectors = dict(TRANSFORMER), dict(CONNECTORS)
    gemma = {**GEMMA3_12B, "text_config": dict(GEMMA3_12B["text_config"]),
             "vision_config": dict(GEMMA3_12B["vision_config"])}
    if caps.layers:
        transformer["num_layers"] = caps.layers
        connectors["video_connector_num_layers"] = connectors["audio_connector_num_layers"] = caps.layers
    if caps.text_layers:
        gemma["text_config"]["num_hidden_layers"] = caps.text_layers
        connectors["text_proj_in_factor"] = caps.text_layers + 1
    if caps.vision_layers:
        gemma["vision_config"]["num_hidden_layers"] = caps.vision_layers
    if caps.vocab:
        gemma["text_config"]["vocab_size"] = caps.vocab
    return {"transformer": transformer, "connectors": connectors, "text_encoder": gemma, "vae": VAE,
            "audio_vae": AUDIO_VAE, "vocoder": VOCODER, "upsampler": UPSAMPLER}


def overrides(root: Path, caps: Caps) -> dict[str, str]:
    """The ``SULPHUR_*`` variables that point ``ltx23-distilled`` / ``sulphur2-ltx23`` at this stack."""
    return {
        "SULPHUR_LTX_GGUF": str(root / GGUF_FILE),
        "SULPHUR_LTX_CONFIG": str(root / DIFFUSERS_DIR / "transformer"),
        "SULPHUR_LTX_DIFFUSERS": str(root / DIFFUSERS_DIR),
        "SULPHUR_LTX_LORA": str(root / caps.lora_file()),
        "SULPHUR_LTX_UPSAMPLER": str(root / UPSAMPLER_DIR),
        "SULPHUR_ESRGAN": str(root / ESRGAN_FILE),
        "SULPHUR_ENHANCER_GGUF": str(root / ENHANCER_FILE),
    }


def write_stack(root: Path, caps: Caps) -> dict[str, Any]:
    """Write every file of the stack under ``root``; return bytes and seconds per part."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = configs(caps)
    parts: dict[str, dict[str, Any]] = {}
    steps = (("transformer_gguf", lambda: _write_transformer(root, cfg["transformer"], caps)),
             ("lora", lambda: _write_lora(root / caps.lora_file(), cfg["transformer"], caps.lora_rank)),
             ("text_encoder", lambda: _write_text_encoder(root / DIFFUSERS_DIR, cfg["text_encoder"])),
             ("diffusers_parts", lambda: _write_diffusers_parts(root / DIFFUSERS_DIR, cfg)),
             ("upsampler", lambda: _write_upsampler(root / UPSAMPLER_DIR)),
             ("upscaler_and_enhancer", lambda: _write_others(root)))
    for name, fn in steps:
        t0 = time.perf_counter()
        paths = fn()
        parts[name] = {"bytes": sum(_size(p) for p in paths), "seconds": round(time.perf_counter() - t0, 2),
                       "files": [str(Path(p).relative_to(root)) for p in paths]}
    (root / "stack.json").write_text(json.dumps({"version": VERSION, "caps": asdict(caps), "configs": cfg}, indent=1))
    return {"bytes": sum(p["bytes"] for p in parts.values()),
            "seconds": round(sum(p["seconds"] for p in parts.values()), 2), "parts": parts}


def _size(path: Path) -> int:
    p = Path(path)
    return p.stat().st_size if p.is_file() else sum(q.stat().st_size for q in p.rglob("*") if q.is_file())


def _meta_transformer(config: dict[str, Any]) -> Any:
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel

    with init_empty_weights():
        return LTX2VideoTransformer3DModel.from_config(config)


def _write_transformer(root: Path, config: dict[str, Any], caps: Caps) -> list[Path]:
    """The GGUF, streamed tensor by tensor from the meta model's names and shapes (Lightricks' names),
    and the config folder (``transformer/`` of the diffusers folder holds only its config here)."""
    model = _meta_transformer(config)
    tensors = []
    for name, t in model.state_dict().items():
        shape = tuple(t.shape)
        kind = "F32"
        if len(shape) == 2 and name.endswith(".weight") and shape[1] % 32 == 0:
            kind = caps.block_quant if name.startswith("transformer_blocks.") else caps.other_quant
        tensors.append((ltx_keys.to_lightricks(name), shape, kind))
    path = root / GGUF_FILE
    write_random_gguf(path, "ltxv", tensors)
    model.save_config(root / DIFFUSERS_DIR / "transformer")
    return [path, root / DIFFUSERS_DIR / "transformer" / "config.json"]


def _write_lora(path: Path, config: dict[str, Any], rank: int) -> list[Path]:
    """Lightricks' layout: ``diffusion_model.transformer_blocks.N.<module>.lora_A/B.weight``, bf16."""
    import torch
    from safetensors.torch import save_file

    model = _meta_transformer(config)
    gen = torch.Generator().manual_seed(7)
    bank = (torch.randn(1 << 22, generator=gen) * 0.01).to(torch.bfloat16)
    tensors: dict[str, torch.Tensor] = {}
    for i, block in enumerate(model.transformer_blocks):
        for target in LORA_TARGETS:
            out_f, in_f = block.get_submodule(target).weight.shape
            key = f"diffusion_model.transformer_blocks.{i}.{target}"
            tensors[f"{key}.lora_A.weight"] = bank[:rank * in_f].view(rank, in_f).clone()
            tensors[f"{key}.lora_B.weight"] = bank[-out_f * rank:].view(out_f, rank).clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return [path]


def _write_text_encoder(d: Path, config: dict[str, Any]) -> list[Path]:
    """Gemma 3 in its published storage dtype, sharded at 5 GB (transformers' usual), plus the tokenizer."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from pipeline.models import random_weights

    dtype = getattr(torch, STORAGE_DTYPES["text_encoder"])
    model = random_weights.build(lambda: Gemma3ForConditionalGeneration(Gemma3Config(**config)), dtype)
    model.save_pretrained(d / "text_encoder", max_shard_size="5GB")
    del model
    # Gemma's own tokenizer cannot be made offline; the twin's stands in (ids stay below the vocabulary).
    tiny_ltx2.make_tokenizer().save_pretrained(d / "tokenizer")
    return [d / "text_encoder", d / "tokenizer"]


def _write_diffusers_parts(d: Path, cfg: dict[str, dict[str, Any]]) -> list[Path]:
    import torch
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    from pipeline.models import random_weights

    for name, cls in (("vae", AutoencoderKLLTX2Video), ("audio_vae", AutoencoderKLLTX2Audio),
                      ("vocoder", LTX2VocoderWithBWE), ("connectors", LTX2TextConnectors)):
        model = random_weights.build(lambda c=cls, n=name: c(**cfg[n]), getattr(torch, STORAGE_DTYPES[name]))
        model.save_pretrained(d / name)
        del model
    FlowMatchEulerDiscreteScheduler(**tiny_ltx2.SCHEDULER_CONFIG).save_pretrained(d / "scheduler")
    tiny_ltx2.write_model_index(d)
    return [d / n for n in ("vae", "audio_vae", "vocoder", "connectors", "scheduler", "model_index.json")]


def _write_upsampler(d: Path) -> list[Path]:
    import torch
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

    from pipeline.models import random_weights

    dtype = getattr(torch, STORAGE_DTYPES["upsampler"])
    random_weights.build(lambda: LTX2LatentUpsamplerModel(**UPSAMPLER), dtype).save_pretrained(
        d / "latent_upsampler")
    tiny_ltx2.write_upsampler_index(d)
    return [d]


def _write_others(root: Path) -> list[Path]:
    """Real-ESRGAN x2plus at its published size (23 RRDB blocks, 64 wide); the enhancer stays tiny."""
    from pipeline.models.enhancer import build_tiny_llm
    from pipeline.models.esrgan import build_tiny_x2plus

    (root / ESRGAN_FILE).parent.mkdir(parents=True, exist_ok=True)
    build_tiny_x2plus(root / ESRGAN_FILE, nf=64, nb=23)
    build_tiny_llm(root / ENHANCER_FILE)
    return [root / ESRGAN_FILE, root / ENHANCER_FILE]
