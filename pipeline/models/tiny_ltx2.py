"""Tiny random-weight LTX-2 stack, built offline from configs with fixed seeds.

Tests and the ``tiny`` preset run the very loaders the real weights use: every
component is saved with ``save_pretrained`` into a diffusers-style folder (one
subfolder per component), the transformer is *also* written as a GGUF file (Q8_0
where llama.cpp's block size allows, F32 elsewhere) so ``from_single_file`` +
``GGUFQuantizationConfig`` is exercised, and a distilled-LoRA stand-in is written in
the same non-diffusers key layout (``diffusion_model.…``) as Lightricks' LoRA files.

Sizes: the video VAE compresses 32× in space (patch 4 × three 2× stages) and 8× in
time, like the real LTX-2 VAE, so presets share the frame rule 8k+1 and multiples of
32 (``LTX2Pipeline.check_inputs`` demands /32 anyway).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.models.build_once import (
    DONE_MARKER,  # noqa: F401 - where the build marker lives
    build_once,
)
from pipeline.models.gguf_writer import write_state_dict_gguf
from pipeline.models.ltx_keys import to_lightricks
from pipeline.models.registry import sulphur_home

# Deferred imports: torch, diffusers, transformers, tokenizers, safetensors, pipeline.models.enhancer,
#   pipeline.models.esrgan — only building the tiny twin needs them

#: Bump whenever a config or the file layout below changes: the folder name and the
#: model identity (cache keys) follow it, so stale builds are never reused.
BUILDER_VERSION = 4  # 4: the audio VAE encodes too (ch_mult 1, 2, 4)
FOLDER_NAME = f"tiny-ltx2-v{BUILDER_VERSION}"

# Files inside the built folder (relative paths), shared with pipeline.models.ltx2.
DIFFUSERS_DIR = "diffusers"
GGUF_FILE = "transformer-gguf/ltx23-tiny-Q8_0.gguf"
#: The same transformer as Lightricks publishes it: one safetensors file, original tensor names.
SAFETENSORS_FILE = "ltx23-tiny-dev.safetensors"
GGUF_CONFIG_DIR = "transformer-gguf"
LORA_FILE = "lora/ltx2-tiny-distilled-lora.safetensors"
#: Published as an LTX2LatentUpsamplePipeline folder; the model sits in its latent_upsampler/.
UPSAMPLER_DIR = "spatial-upsampler"
ENHANCER_FILE = "enhancer/tiny-llm.gguf"
ESRGAN_FILE = "esrgan/tiny_x2plus.pth"

_WORDS = (
    "a an the of in on at and with to from over under into through by is are "
    "cinematic shot camera slow pan tilt dolly zoom close wide aerial tracking handheld static "
    "light lighting sun sunset sunrise golden hour night moon neon soft warm cold blue red green "
    "orange purple yellow white black grey dark bright fog mist rain snow wind storm cloud clouds "
    "sky sea ocean wave waves beach river lake forest tree trees mountain mountains desert city "
    "street road car train boat ship bridge tower house window door room table chair lamp fire "
    "smoke water ice glass metal stone wood sand grass flower flowers leaf leaves bird birds fish "
    "dog cat horse robot man woman child people person face eyes hair hand hands walking running "
    "dancing flying falling standing sitting looking smiling talking singing playing moving "
    "slowly quickly gently calm quiet loud music sound voice footsteps ambient distant close-up "
    "background foreground detailed realistic film grain 35mm anamorphic lens flare shallow depth "
    "field bokeh reflection reflections shadow shadows silhouette motion blur frame scene"
).split()


def text_encoder_config() -> dict[str, Any]:
    """Gemma 3 text+vision config, tiny: 2 text layers 32 wide (the pipeline stacks all hidden states)."""
    vocab = 4 + len(_WORDS)
    return {
        "text_config": {
            "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
            "max_position_embeddings": 256, "sliding_window": 64, "pad_token_id": 0,
            "eos_token_id": 1, "bos_token_id": 2,
        },
        "vision_config": {
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "image_size": 28, "patch_size": 14,
        },
        "mm_tokens_per_image": 4, "boi_token_index": vocab - 3, "eoi_token_index": vocab - 2,
        "image_token_index": vocab - 1,
    }


TEXT_HIDDEN = 32
TEXT_LAYERS = 2
LATENT_CHANNELS = 8
AUDIO_LATENT_CHANNELS = 2
AUDIO_MEL_BINS = 16   # latent mel bins = 16 // 4 = 4; packed audio width = 2 * 4 = 8

TRANSFORMER_CONFIG: dict[str, Any] = {
    "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS, "patch_size": 1, "patch_size_t": 1,
    "num_attention_heads": 2, "attention_head_dim": 16, "cross_attention_dim": 32,
    "vae_scale_factors": [8, 32, 32],
    "audio_in_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4,
    "audio_out_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4,
    "audio_num_attention_heads": 2, "audio_attention_head_dim": 16, "audio_cross_attention_dim": 32,
    "num_layers": 2, "qk_norm": "rms_norm_across_heads", "caption_channels": TEXT_HIDDEN,
    "rope_double_precision": False, "rope_type": "split",
    # LTX-2.3's shape: gated attention, cross-attention modulation, prompt AdaLN (video and audio).
    "gated_attn": True, "cross_attn_mod": True, "audio_gated_attn": True, "audio_cross_attn_mod": True,
    "use_prompt_adaln_single": True,
}

CONNECTORS_CONFIG: dict[str, Any] = {
    # Inner width (heads × head dim) must equal the text encoder's hidden size.
    "caption_channels": TEXT_HIDDEN, "text_proj_in_factor": TEXT_LAYERS + 1,
    "video_connector_num_attention_heads": 2, "video_connector_attention_head_dim": 16,
    "video_connector_num_layers": 1, "video_connector_num_learnable_registers": None,
    "audio_connector_num_attention_heads": 2, "audio_connector_attention_head_dim": 16,
    "audio_connector_num_layers": 1, "audio_connector_num_learnable_registers": None,
    "connector_rope_base_seq_len": 32, "rope_theta": 10000.0, "rope_double_precision": False,
    "causal_temporal_positioning": False, "rope_type": "split",
}

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": LATENT_CHANNELS,
    "block_out_channels": [8, 16, 32], "down_block_types": ["LTX2VideoDownBlock3D"] * 3,
    "decoder_block_out_channels": [8, 16, 32], "layers_per_block": [1, 1, 1, 1],
    "decoder_layers_per_block": [1, 1, 1, 1], "spatio_temporal_scaling": [True, True, True],
    "decoder_spatio_temporal_scaling": [True, True, True], "decoder_inject_noise": [False] * 4,
    "downsample_type": ["spatiotemporal"] * 3, "upsample_type": ["spatiotemporal"] * 3,
    "upsample_residual": [False] * 3, "upsample_factor": [1, 1, 1], "timestep_conditioning": False,
    "patch_size": 4, "patch_size_t": 1, "encoder_causal": True, "decoder_causal": False,
}

AUDIO_VAE_CONFIG: dict[str, Any] = {
    # base_channels must equal latent channels × latent mel bins (the pipeline normalizes packed latents).
    # ch_mult (1, 2, 4) like the real VAE: two 2× downsamples make the encoder compress time and
    # mel bins 4×, as the pipeline assumes (with [1] only the decoder did; encoding audio broke).
    "base_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4, "output_channels": 2, "ch_mult": [1, 2, 4],
    "num_res_blocks": 1, "attn_resolutions": None, "in_channels": 2, "resolution": 32,
    "latent_channels": AUDIO_LATENT_CHANNELS, "norm_type": "pixel", "causality_axis": "height",
    "dropout": 0.0, "mid_block_add_attention": False, "sample_rate": 16000, "mel_hop_length": 160,
    "is_causal": True, "mel_bins": AUDIO_MEL_BINS,
}

VOCODER_CONFIG: dict[str, Any] = {
    # LTX-2.3's LTX2VocoderWithBWE, tiny: 100 mel frames/s × 160 = 16 kHz, then the bandwidth
    # extension's mel (hop 80) × 240 = 48 kHz, the real vocoder's rates. Kernels 2×factor (11 for 5)
    # keep every transposed convolution's length exact, as the BWE's residual + skip sum needs.
    "in_channels": 2 * AUDIO_MEL_BINS, "hidden_channels": 32, "out_channels": 2,
    "upsample_kernel_sizes": [11, 8, 4, 4, 4], "upsample_factors": [5, 4, 2, 2, 2],
    "resnet_kernel_sizes": [3], "resnet_dilations": [[1, 3]],
    "bwe_in_channels": 2 * 16, "bwe_hidden_channels": 32, "bwe_out_channels": 2,
    "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4], "bwe_upsample_factors": [6, 5, 2, 2, 2],
    "bwe_resnet_kernel_sizes": [3], "bwe_resnet_dilations": [[1, 3]],
    "filter_length": 160, "hop_length": 80, "window_length": 160, "num_mel_channels": 16,
    "input_sampling_rate": 16000, "output_sampling_rate": 48000,
}

UPSAMPLER_CONFIG: dict[str, Any] = {
    "in_channels": LATENT_CHANNELS, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3,
    "spatial_upsample": True, "temporal_upsample": False,
}

SCHEDULER_CONFIG: dict[str, Any] = {
    # LTX-2's scheduler settings (token-count dependent shift), as in Lightricks/LTX-2.
    "use_dynamic_shifting": True, "base_shift": 0.95, "max_shift": 2.05, "base_image_seq_len": 1024,
    "max_image_seq_len": 4096, "shift_terminal": 0.1, "num_train_timesteps": 1000,
}

#: Transformer modules the tiny distilled LoRA adapts (the real LoRA adapts every projection).
LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")
LORA_RANK = 4


def all_configs() -> dict[str, Any]:
    return {
        "builder_version": BUILDER_VERSION, "text_encoder": text_encoder_config(), "words": _WORDS,
        "transformer": TRANSFORMER_CONFIG, "connectors": CONNECTORS_CONFIG, "vae": VAE_CONFIG,
        "audio_vae": AUDIO_VAE_CONFIG, "vocoder": VOCODER_CONFIG, "upsampler": UPSAMPLER_CONFIG,
        "scheduler": SCHEDULER_CONFIG, "lora": [list(LORA_TARGETS), LORA_RANK],
    }


def config_digest() -> str:
    """Stable hash of everything that determines the tiny weights (part of the model identity)."""
    blob = json.dumps(all_configs(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- building


def default_root() -> Path:
    return sulphur_home() / FOLDER_NAME


def build_tiny(root: Path | None = None) -> Path:
    """Build the whole tiny stack once (LTX-2 parts, enhancer LLM, ESRGAN); return its folder.

    Idempotent and safe against concurrent callers (see :mod:`pipeline.models.build_once`).
    """
    def build(tmp: Path) -> None:
        build_ltx2_parts(tmp)
        _build_other_families(tmp)

    return build_once(Path(root) if root is not None else default_root(), build, _marker())


def _marker() -> dict[str, Any]:
    """What the finished folder was built from: a change in any builder rebuilds it."""
    from pipeline.models.enhancer import TINY_LLM_VERSION
    from pipeline.models.esrgan import TINY_X2PLUS_VERSION

    return {"digest": config_digest(), "llm": TINY_LLM_VERSION, "x2plus": TINY_X2PLUS_VERSION}


def _build_other_families(root: Path) -> None:
    # The enhancer LLM and ESRGAN belong to other model families; their builders write
    # real files that the real loaders (llama.cpp, spandrel) read.
    from pipeline.models.enhancer import build_tiny_llm
    from pipeline.models.esrgan import build_tiny_x2plus

    (root / ENHANCER_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / ESRGAN_FILE).parent.mkdir(parents=True, exist_ok=True)
    build_tiny_llm(root / ENHANCER_FILE)
    build_tiny_x2plus(root / ESRGAN_FILE)


def build_ltx2_parts(root: Path) -> Path:
    """Write the LTX-2 components (diffusers folder, GGUF transformer, LoRA) into ``root``."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel, LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    root = Path(root)
    d = root / DIFFUSERS_DIR
    d.mkdir(parents=True, exist_ok=True)

    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(d / "tokenizer")

    torch.manual_seed(0)
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(**text_encoder_config())).eval()
    text_encoder.save_pretrained(d / "text_encoder")

    torch.manual_seed(1)
    transformer = LTX2VideoTransformer3DModel(**TRANSFORMER_CONFIG)
    transformer.save_pretrained(d / "transformer")
    torch.manual_seed(2)
    LTX2TextConnectors(**CONNECTORS_CONFIG).save_pretrained(d / "connectors")
    torch.manual_seed(3)
    AutoencoderKLLTX2Video(**VAE_CONFIG).save_pretrained(d / "vae")
    torch.manual_seed(4)
    AutoencoderKLLTX2Audio(**AUDIO_VAE_CONFIG).save_pretrained(d / "audio_vae")
    torch.manual_seed(5)
    LTX2VocoderWithBWE(**VOCODER_CONFIG).save_pretrained(d / "vocoder")
    FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(d / "scheduler")
    torch.manual_seed(6)
    LTX2LatentUpsamplerModel(**UPSAMPLER_CONFIG).save_pretrained(root / UPSAMPLER_DIR / "latent_upsampler")
    write_upsampler_index(root / UPSAMPLER_DIR)
    write_model_index(d)

    published = lightricks_state_dict(transformer.state_dict())
    write_transformer_gguf(published, root / GGUF_FILE)
    _save_safetensors(published, root / SAFETENSORS_FILE)
    transformer.save_config(root / GGUF_CONFIG_DIR)
    write_lora(transformer, root / LORA_FILE)
    return root


def make_tokenizer() -> Any:
    """A WordLevel tokenizer (no hub access needed) wrapped as a fast tokenizer, left-padded like Gemma's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for w in _WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        padding_side="left", model_max_length=1024,
    )


def write_model_index(d: Path, text_encoder: str = "Gemma3ForConditionalGeneration") -> None:
    # Makes the folder loadable as a whole with LTX2Pipeline.from_pretrained too.
    index = {
        "_class_name": "LTX2Pipeline", "_diffusers_version": "0.42.1",
        "audio_vae": ["diffusers", "AutoencoderKLLTX2Audio"], "connectors": ["ltx2", "LTX2TextConnectors"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", text_encoder],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "LTX2VideoTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLLTX2Video"],
        "vocoder": ["ltx2", "LTX2VocoderWithBWE"],
    }
    (d / "model_index.json").write_text(json.dumps(index, indent=2))


def write_upsampler_index(d: Path) -> None:
    # The published upsampler folder is an LTX2LatentUpsamplePipeline; its VAE is the main folder's.
    index = {"_class_name": "LTX2LatentUpsamplePipeline", "_diffusers_version": "0.42.1",
             "latent_upsampler": ["ltx2", "LTX2LatentUpsamplerModel"]}
    (d / "model_index.json").write_text(json.dumps(index, indent=2))


def lightricks_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A diffusers transformer state dict under Lightricks' published names (``model.diffusion_model.…``)."""
    return {to_lightricks(k): v.detach().contiguous() for k, v in state_dict.items()}


def _save_safetensors(state_dict: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(path))


def write_transformer_gguf(state_dict: dict[str, Any], path: Path) -> Path:
    """Write a transformer state dict as GGUF: Q8_0 for 2-D weights whose rows split into 32-blocks, else F32."""
    return write_state_dict_gguf(state_dict, path, "ltxv")


def write_lora(transformer: Any, path: Path) -> Path:
    """A rank-4 LoRA over the video self-attention projections and the connectors' text projection,
    keyed like Lightricks' files (``diffusion_model.*`` and ``text_embedding_projection.aggregate_embed``,
    which diffusers' LTX-2 LoRA loader routes to the connectors' ``text_proj_in``)."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    tensors: dict[str, torch.Tensor] = {}
    for i in range(transformer.config.num_layers):
        for target in LORA_TARGETS:
            layer = transformer.get_submodule(f"transformer_blocks.{i}.{target}")
            out_f, in_f = layer.weight.shape
            key = f"diffusion_model.transformer_blocks.{i}.{target}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(LORA_RANK, in_f, generator=gen) * 0.3
            tensors[f"{key}.lora_B.weight"] = torch.randn(out_f, LORA_RANK, generator=gen) * 0.3
    key = "text_embedding_projection.aggregate_embed"
    text_in = CONNECTORS_CONFIG["caption_channels"] * CONNECTORS_CONFIG["text_proj_in_factor"]
    tensors[f"{key}.lora_A.weight"] = torch.randn(LORA_RANK, text_in, generator=gen) * 0.3
    tensors[f"{key}.lora_B.weight"] = torch.randn(TEXT_HIDDEN, LORA_RANK, generator=gen) * 0.3
    save_file(tensors, str(path))
    return path
