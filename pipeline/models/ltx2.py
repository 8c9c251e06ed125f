"""The LTX-2 model family: presets, loaders and the glue the draft/refine stages share.

Three presets register here. ``tiny`` builds random-weight models offline on first use
(:mod:`pipeline.models.tiny_ltx2`), ``sulphur2-ltx23`` names the real stack, and
``ltx2-19b-random`` builds every component full size with random weights in memory
(:mod:`pipeline.models.ltx2_random`, for GPU benchmarks). The first two go
through the same loaders: the transformer from GGUF (``from_single_file`` with a
``GGUFQuantizationConfig``) or a diffusers folder, every other component from a
diffusers-style folder, and the distilled LoRA through ``load_lora_weights``.

Components live in ``ctx.models`` under ``"<preset>:<component>"`` so they survive
between segments. Each carries the offload mode it was placed with; a different plan
(after an OOM fallback) evicts and reloads it rather than stacking hooks.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.memory.cudnn import cudnn_setting
from pipeline.models import ltx2_random, published, sigmas, tiny_ltx2
from pipeline.models.published import WeightsMismatch
from pipeline.models.registry import (
    ESRGAN_X2PLUS_SHA256,
    ESRGAN_X2PLUS_SIZE,
    ESRGAN_X2PLUS_URL,
    ModelFile,
    Preset,
    register,
    sulphur_home,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pipeline.memory.loaded import LoadedModels
    from pipeline.memory.plan import StagePlan

# Deferred imports: torch, diffusers, transformers, safetensors, numpy, PIL, pipeline.memory.offload — the presets
#   are read by the CLI, the registry and cache keys without them; they load with the model

FAMILY = "ltx2"
_OFFLOAD_TAG = "_sulphur_offload"


# --------------------------------------------------------------------------- presets

#: The seed pipeline's Pass 1: ComfyUI LTXVScheduler (max_shift 4.0, base_shift 1.5, stretch, terminal 0.1),
#: computed for the draft's latent token count (pipeline.models.sigmas.ltxv_sigmas).
SEED_PASS1_SCHEDULE = ("ltxv", 4.0, 1.5, True, 0.1)
#: Lightricks' distilled recipe, stage 1 as published (DISTILLED_SIGMA_VALUES).
DISTILLED_SCHEDULE = ("fixed", *sigmas.DISTILLED_SIGMAS)


def _build_tiny() -> Path:
    return tiny_ltx2.build_tiny()


def _tiny(rel: str) -> str:
    # "$SULPHUR_HOME" is resolved when looked up (ModelFile.local_path), so tests can move it.
    return f"$SULPHUR_HOME/{tiny_ltx2.FOLDER_NAME}/{rel}"


TINY = register(Preset(
    name="tiny",
    family=FAMILY,
    description="Random-weight LTX-2 stand-in built offline (seconds on a CPU); exercises every real loader.",
    files=(
        ModelFile("transformer_gguf", "LTX-2 transformer, GGUF (Q8_0/F32)", path=_tiny(tiny_ltx2.GGUF_FILE)),
        ModelFile("transformer_config", "transformer config folder", path=_tiny(tiny_ltx2.GGUF_CONFIG_DIR)),
        ModelFile("diffusers", "VAE, audio VAE, vocoder, connectors, text encoder, tokenizer",
                  path=_tiny(tiny_ltx2.DIFFUSERS_DIR)),
        ModelFile("lora", "distilled LoRA", path=_tiny(tiny_ltx2.LORA_FILE)),
        ModelFile("upsampler", "latent x2 upsampler", path=_tiny(tiny_ltx2.UPSAMPLER_DIR)),
        ModelFile("upscaler", "Real-ESRGAN x2plus layout", path=_tiny(tiny_ltx2.ESRGAN_FILE)),
        ModelFile("enhancer", "prompt enhancer LLM (GGUF)", path=_tiny(tiny_ltx2.ENHANCER_FILE)),
    ),
    # /32 sizes (LTX2Pipeline demands it) closest to 16:9 at this scale: 224×128 is 1.75:1.
    draft_size=(224, 128),
    refine_size=(448, 256),
    steps=8,
    frame_multiple=8,    # the tiny VAE compresses time 8×, like the real one: frames = 8k + 1
    size_multiple=32,    # 32× spatial compression, and the pipeline's own /32 check
    builder=_build_tiny,
    extra={"max_sequence_length": 64, "use_cross_timestep": True, "draft_schedule": SEED_PASS1_SCHEDULE},
))

# Default places under $SULPHUR_HOME (~/.cache/sulphur); each file can be pointed elsewhere with its env var.
_HOME = "$SULPHUR_HOME"

# What was verified, and where (2026-12-04, with the search tools; no file was downloaded, so no
# tensor of these files was read: their key layout is what the loaders expect, not what was checked).
#
# Sulphur 2 (SulphurAI/Sulphur-2-base, https://huggingface.co/SulphurAI/Sulphur-2-base): an LTX-2.3
# finetune. Its model card says: use a dev build (fp8mixed or bf16) with the distill LoRA it provides;
# its prompt enhancer is a GGUF plus an mmproj, and "There is no system prompt for it, just send the text
# (and an image)". The repo publishes the DiT as single-file safetensors (sulphur_dev_bf16,
# sulphur_dev_fp8mixed, sulphur_distil_bf16 .safetensors), NOT as GGUF: every GGUF of it is a community
# quantization. Files used here:
# - distill_loras/ltx-2.3-22b-distilled-lora-1.1_fro90_ceil72_condsafe.safetensors: the seed's LoRA
#   (doc.davidhsaiou.com/…/sulphur2-pipeline.html, strength 0.7). Path in SulphurAI/Sulphur-2-base found
#   in many download scripts (exact search); size 662072824 and sha256 e970f64a… as pinned by one of them
#   at revision 65587bbb38c700622f9434a16e732c8b280c115e (NOT checked against the Hub by us, so not pinned:
#   a wrong pin would refuse the real file, and the Hub's own etag already checks what is downloaded).
# - prompt_enhancer/sulphur_prompt_enhancer_model-q8_0.gguf + prompt_enhancer/mmproj-BF16.gguf: named in
#   the Hub's own llama-cpp-python snippet on the model page (mmproj-BF16.gguf) and in download scripts.
#   Its architecture is NOT verified: a third-party ComfyUI node loads it with its "qwen35" chat handler
#   (KLL535/ComfyUI_Simple_Qwen3-VL-gguf issue #28) and one split repo calls it
#   "Qwen3.5-sulphur_prompt_enhancer-Q8_0.gguf", so it is likely Qwen3.5-based, not Gemma 3.
# - The GGUF transformer: aman5g/Sulphur-2-base-GGUF lists sulphur_dev-Q3_K_M.gguf on its own model card
#   (https://huggingface.co/aman5g/Sulphur-2-base-GGUF, architecture ltxv). The same file name is also
#   published by vantagewithai/Sulphur-2-Base-GGUF and Abiray/Sulphur-2-base-GGUF (third-party catalogues
#   and scripts only). Size and sha256 NOT verified; whether these GGUFs bundle the text connectors (which
#   the loader drops) or a finetuned VAE is NOT verified either: the VAEs, vocoder and connectors come from
#   the stock LTX-2.3 diffusers folder.
# Stock LTX-2.3 (for ltx23-distilled): unsloth/LTX-2.3-GGUF names its dev quants ltx-2.3-22b-dev-<Q>.gguf
# at the repo root (distilled ones under distilled/ and distilled-1.1/); QuantStack/LTX-2.3-GGUF uses
# LTX-2.3-dev/LTX-2.3-dev-<Q>.gguf. Both from two third-party model catalogues and many scripts, not from
# the repos' own file lists; sizes NOT verified. diffusers 0.42.1 names the diffusers folder
# diffusers/LTX-2.3-Diffusers (LTX2InContextPipeline's docstring). `sulphur models pull` fetches its
# model_index.json and the vae/ audio_vae/ vocoder/ connectors/ text_encoder/ tokenizer/ scheduler/
# folders, and of transformer/ only config.json (the GGUF stands in for its ~40 GB of weights). Its
# folder names are those of LTX2Pipeline's components; the repo's own file list and sizes NOT verified
# (a third-party script also names a processor/ folder there, which Sulphur does not load).
# Lightricks/LTX-2.3: MODELS-LTX-2.3.md lists ltx-2.3-22b-dev.safetensors, ltx-2.3-22b-distilled-1.1
# .safetensors and ltx-2.3-spatial-upscaler-x2-1.1.safetensors; the distilled LoRA
# ltx-2.3-22b-distilled-lora-384-1.1.safetensors is named by its README table and diffusers' LTX-2.3 LoRA
# converter docstring (size and sha256 NOT verified). rootonchair/LTX-2.3-spatial-upscaler-x2-v1.1-Diffusers
# is the v1.1 upsampler as an unofficial LTX2LatentUpsamplePipeline folder (model in latent_upsampler/).
# unsloth/gemma-3-12b-it-GGUF's gemma-3-12b-it-Q4_K_M.gguf is named in many download scripts (one records
# 7,300,778,336 bytes; not pinned here). Real-ESRGAN x2plus: see ESRGAN_X2PLUS_* in registry.py.
SULPHUR_REPO = "SulphurAI/Sulphur-2-base"
SULPHUR_GGUF_REPO = "aman5g/Sulphur-2-base-GGUF"
SULPHUR_LORA = "distill_loras/ltx-2.3-22b-distilled-lora-1.1_fro90_ceil72_condsafe.safetensors"
SULPHUR_ENHANCER = "prompt_enhancer/sulphur_prompt_enhancer_model-q8_0.gguf"
SULPHUR_MMPROJ = "prompt_enhancer/mmproj-BF16.gguf"

LTX23_DIFFUSERS_REPO = "diffusers/LTX-2.3-Diffusers"
#: The diffusers folder without transformer/ (its weights are the GGUF's job).
LTX23_DIFFUSERS_PARTS = ("model_index.json", "vae/*", "audio_vae/*", "vocoder/*", "connectors/*",
                         "text_encoder/*", "tokenizer/*", "scheduler/*")

_CONFIG = ModelFile("transformer_config", "LTX-2.3 transformer config folder (config.json; transformer/ of "
                    "diffusers/LTX-2.3-Diffusers)", path=f"{_HOME}/ltx23/diffusers/transformer",
                    env="SULPHUR_LTX_CONFIG", repo=LTX23_DIFFUSERS_REPO, filename=("transformer/config.json",))
_DIFFUSERS = ModelFile("diffusers", "LTX-2.3 diffusers folder (diffusers/LTX-2.3-Diffusers): vae/ audio_vae/ "
                       "vocoder/ connectors/ text_encoder/ tokenizer/ scheduler/", path=f"{_HOME}/ltx23/diffusers",
                       env="SULPHUR_LTX_DIFFUSERS", repo=LTX23_DIFFUSERS_REPO, filename=LTX23_DIFFUSERS_PARTS)
_UPSAMPLER = ModelFile("upsampler", "LTX-2.3 latent x2 spatial upsampler v1.1, pipeline folder (latent_upsampler/)",
                       path=f"{_HOME}/ltx23/spatial-upsampler", env="SULPHUR_LTX_UPSAMPLER",
                       repo="rootonchair/LTX-2.3-spatial-upscaler-x2-v1.1-Diffusers", filename="latent_upsampler/*")
_UPSCALER = ModelFile("upscaler", "Real-ESRGAN x2plus weights", path=f"{_HOME}/esrgan/RealESRGAN_x2plus.pth",
                      env="SULPHUR_ESRGAN", url=ESRGAN_X2PLUS_URL, size=ESRGAN_X2PLUS_SIZE,
                      sha256=ESRGAN_X2PLUS_SHA256)
_LTX23_EXTRA = {"max_sequence_length": 1024, "use_cross_timestep": True, "draft_schedule": SEED_PASS1_SCHEDULE}

REAL = register(Preset(
    name="sulphur2-ltx23",
    family=FAMILY,
    description="Sulphur 2 (LTX-2.3 22B finetune, GGUF Q3_K_M) + its distill LoRA at 0.7, two-stage 8+3 "
                "steps; Sulphur 2's own prompt enhancer, no system prompt.",
    files=(
        ModelFile("transformer_gguf", "Sulphur 2 dev transformer, GGUF Q3_K_M (community quantization)",
                  path=f"{_HOME}/sulphur2/sulphur_dev-Q3_K_M.gguf", env="SULPHUR_LTX_GGUF",
                  repo=SULPHUR_GGUF_REPO, filename="sulphur_dev-Q3_K_M.gguf"),
        _CONFIG,
        _DIFFUSERS,
        ModelFile("lora", "Sulphur 2's distill LoRA (LTX-2.3 distilled LoRA 1.1, fro90 ceil72 condsafe)",
                  path=f"{_HOME}/sulphur2/ltx-2.3-22b-distilled-lora-1.1_fro90_ceil72_condsafe.safetensors",
                  env="SULPHUR_LTX_LORA", repo=SULPHUR_REPO, filename=SULPHUR_LORA),
        _UPSAMPLER,
        _UPSCALER,
        ModelFile("enhancer", "Sulphur 2 prompt enhancer, GGUF Q8_0",
                  path=f"{_HOME}/sulphur2/sulphur_prompt_enhancer_model-q8_0.gguf", env="SULPHUR_ENHANCER_GGUF",
                  repo=SULPHUR_REPO, filename=SULPHUR_ENHANCER),
        ModelFile("enhancer_mmproj", "Sulphur 2 prompt enhancer's vision projector (sees the I2V anchor frame)",
                  path=f"{_HOME}/sulphur2/mmproj-BF16.gguf", env="SULPHUR_ENHANCER_MMPROJ",
                  repo=SULPHUR_REPO, filename=SULPHUR_MMPROJ),
    ),
    draft_size=(512, 288),
    refine_size=(1024, 576),
    steps=8,
    refine_sigmas=(0.85, 0.7250, 0.4219, 0.0),
    lora_strength=0.7,
    guidance_scale=1.0,
    frame_multiple=8,
    size_multiple=32,
    # The publisher's usage: no system prompt, just the text (and the image).
    extra={**_LTX23_EXTRA, "enhance_system_prompt": "none"},
))


# Lightricks' distilled two-stage recipe (ltx-pipelines ``distilled``): 8 steps on DISTILLED_SIGMA_VALUES,
# x2 latent upsample, 3 steps on STAGE_2_DISTILLED_SIGMA_VALUES, CFG 1, on the stock LTX-2.3 dev weights with
# Lightricks' distilled LoRA, and Gemma 3 12B instructed with Lightricks' T2V/I2V prompts.
DISTILLED = register(replace(
    REAL,
    name="ltx23-distilled",
    description="LTX-2.3 22B, Lightricks' distilled two-stage recipe (8 + 3 published sigmas, CFG 1).",
    files=(
        ModelFile("transformer_gguf", "LTX-2.3 22B dev transformer, GGUF Q3_K_M",
                  path=f"{_HOME}/ltx23/ltx-2.3-22b-dev-Q3_K_M.gguf", env="SULPHUR_LTX_GGUF",
                  repo="unsloth/LTX-2.3-GGUF", filename="ltx-2.3-22b-dev-Q3_K_M.gguf"),
        _CONFIG,
        _DIFFUSERS,
        ModelFile("lora", "LTX-2.3 distilled LoRA (rank 384)",
                  path=f"{_HOME}/ltx23/ltx-2.3-22b-distilled-lora-384-1.1.safetensors", env="SULPHUR_LTX_LORA",
                  repo="Lightricks/LTX-2.3", filename="ltx-2.3-22b-distilled-lora-384-1.1.safetensors"),
        _UPSAMPLER,
        _UPSCALER,
        ModelFile("enhancer", "Gemma 3 12B instruct, GGUF, for prompt enhancement",
                  path=f"{_HOME}/gemma/gemma-3-12b-it-Q4_K_M.gguf", env="SULPHUR_ENHANCER_GGUF",
                  repo="unsloth/gemma-3-12b-it-GGUF", filename="gemma-3-12b-it-Q4_K_M.gguf"),
    ),
    steps=len(sigmas.DISTILLED_SIGMAS),
    refine_sigmas=(*sigmas.STAGE_2_DISTILLED_SIGMAS, 0.0),
    lora_strength=1.0,
    extra={**_LTX23_EXTRA, "draft_schedule": DISTILLED_SCHEDULE},
))


# LTX-2.5, "the same way" (issue 17). diffusers 0.42.1 loads it through the same LTX-2 classes (its docs: "there is no
# separate pipeline class"); what changes is in the files. What was verified, and where (2026-12-04; nothing was
# downloaded and the Hub was not reached, so every name below comes from stored third-party pages and code):
# - In the installed diffusers 0.42.1 (read here): the transformer config keys ff_bias and
#   use_keyframes_abs_pos_embedding (a (1, dim) parameter), Gemma4UnifiedForConditionalGeneration as a text encoder,
#   DISTILLED_SIGMA_VALUES / STAGE_2_DISTILLED_SIGMA_VALUES (the 2.3 numbers), LTX2_5_T2V/I2V_DEFAULT_SYSTEM_PROMPT
#   with the same user turns as 2.3 (T2V "user prompt: …", I2V "User Raw Input Prompt: ….", in
#   LTX2Pipeline.enhance_prompt; the research note's "user prompt" for both is not what 0.42.1 does), greedy
#   enhancement with 600 new tokens (GEMMA4_PROMPT_ENHANCEMENT_CONFIG), image CRF 18 when the text encoder is
#   gemma4_unified (LTX2_5_IMAGE_CRF; Sulphur passes it itself because its pipelines run without a text encoder).
#   The installed llama.cpp (llama-cpp-python 0.3.36) knows the gemma4 architecture (its libllama names it).
# - Lightricks/LTX-2.5-Diffusers (gated, "auto" approval): named by diffusers' LTX-2.5 docs and by several third-party
#   projects; one that listed it through the Hub API records 66 files, transformer/ in 4 shards, connectors/, and a
#   port spec that read its configs records transformer ff_bias false + use_keyframes_abs_pos_embedding true,
#   connectors text_proj_in_factor 49, text_encoder gemma4_unified (Gemma 4 12B, 48 layers), vocoder
#   LTX2VocoderWithBWE, latent_upsampler/ (mid_channels 1024, 4 blocks per stage). `sulphur models pull` fetches
#   the same folders as for 2.3 plus latent_upsampler/, and of transformer/ only config.json. Folder names NOT
#   checked against the repo's own file list; the scheduler/ class NOT verified (load_scheduler reads it as
#   FlowMatchEulerDiscreteScheduler; ltx-pipelines samples 2.5 with ancestral Euler, which this preset does not do).
# - The transformer: realrebelai/LTX-2.5_GGUFs, LTX-2.5-Distilled-Q3_K_M.gguf (community quantization of the distilled
#   DiT, ungated): one third-party pinned manifest records 11,525,623,808 bytes and sha256 4286f8de1074c0c4fddfb9
#   2f38bd7df9161782b53c1717ebd69f1189c7933265 at revision 112436f97aaf99ce13ecb7b7eca7e2f6c128d3ec. One source, so
#   NOT pinned here (a wrong pin would refuse the real file; the Hub's etag checks the download). Its tensor names
#   NOT read: the loader takes Lightricks' names with or without the model.diffusion_model. prefix, and one source
#   says community GGUFs store keyframes_abs_pos_embedding 1-D (published.read_transformer_file reshapes it).
#   Alternatives seen: vantagewithai/LTX-2.5-GGUF (ltx-2.5-22b-distilled-transformer-Q4_K_M.gguf), molbal/LTX-2.5-GGUF.
# - Lightricks/LTX-2.5 (the native single files; third-party Hub listing): diffusion_models/ltx-2.5-22b-distilled-
#   transformer-bf16.safetensors (42.0 GB) goes through the same loader (point SULPHUR_LTX25_TRANSFORMER at it):
#   Lightricks' names, its bundled text connectors dropped as for 2.3 (the twin's safetensors has the names but no
#   bundled connectors; the real file NOT tried). Its vae/ files keep their keys at the root and bundle the
#   diffusion decoder, so the VAEs come from the Diffusers folder instead.
# - No stage-2 LoRA: the distilled DiT runs both stages as is (the distilled-lora-450 is for the SFT DiT).
# - Enhancer: google/gemma-4-E2B-it as a llama.cpp GGUF, unsloth/gemma-4-E2B-it-GGUF gemma-4-E2B-it-Q4_K_M.gguf
#   (named by many download scripts; size NOT verified). Its mmproj (mmproj-F16.gguf there) is not used: the I2V
#   prompt goes in as text, as for ltx23-distilled. llama.cpp has no no_repeat_ngram_size, so greedy decoding here
#   is temperature 0 without it. Enhancement stays on, as for every LTX-2 preset.
LTX25_DIFFUSERS_REPO = "Lightricks/LTX-2.5-Diffusers"
LTX25_GGUF_REPO = "realrebelai/LTX-2.5_GGUFs"
LTX25_GGUF = "LTX-2.5-Distilled-Q3_K_M.gguf"
#: LTX-2.5 wants widths and heights divisible by 64 (diffusers' LTX-2.5 docs); the draft keeps 16:9 as near as
#: that allows (576×320 is 1.8:1) and the x2 upsampler's refine size (1152×640) stays divisible too.
LTX25_SIZE_MULTIPLE = 64

LTX25_DISTILLED = register(replace(
    DISTILLED,
    name="ltx25-distilled",
    description="LTX-2.5 22B distilled (GGUF Q3_K_M), Lightricks' distilled two-stage recipe (8 + 3 published "
                "sigmas, CFG 1, no LoRA), Gemma 4 text encoder, gemma-4-E2B enhancer.",
    files=(
        ModelFile("transformer_gguf", "LTX-2.5 22B distilled transformer, GGUF Q3_K_M (community quantization)",
                  path=f"{_HOME}/ltx25/{LTX25_GGUF}", env="SULPHUR_LTX25_TRANSFORMER",
                  repo=LTX25_GGUF_REPO, filename=LTX25_GGUF),
        ModelFile("transformer_config", "LTX-2.5 transformer config folder (config.json; transformer/ of "
                  "Lightricks/LTX-2.5-Diffusers)", path=f"{_HOME}/ltx25/diffusers/transformer",
                  env="SULPHUR_LTX25_CONFIG", repo=LTX25_DIFFUSERS_REPO, filename=("transformer/config.json",)),
        ModelFile("diffusers", "LTX-2.5 diffusers folder (Lightricks/LTX-2.5-Diffusers): vae/ audio_vae/ vocoder/ "
                  "connectors/ text_encoder/ (Gemma 4) tokenizer/ scheduler/", path=f"{_HOME}/ltx25/diffusers",
                  env="SULPHUR_LTX25_DIFFUSERS", repo=LTX25_DIFFUSERS_REPO, filename=LTX23_DIFFUSERS_PARTS),
        ModelFile("upsampler", "LTX-2.5 latent x2 spatial upsampler (latent_upsampler/ of Lightricks/LTX-2.5-Diffusers)",
                  path=f"{_HOME}/ltx25/diffusers/latent_upsampler", env="SULPHUR_LTX25_UPSAMPLER",
                  repo=LTX25_DIFFUSERS_REPO, filename="latent_upsampler/*"),
        _UPSCALER,
        ModelFile("enhancer", "Gemma 4 E2B instruct, GGUF Q4_K_M, for prompt enhancement",
                  path=f"{_HOME}/gemma/gemma-4-E2B-it-Q4_K_M.gguf", env="SULPHUR_LTX25_ENHANCER_GGUF",
                  repo="unsloth/gemma-4-E2B-it-GGUF", filename="gemma-4-E2B-it-Q4_K_M.gguf"),
    ),
    draft_size=(576, 320),
    refine_size=(1152, 640),
    size_multiple=LTX25_SIZE_MULTIPLE,
    lora_strength=0.0,
    extra={**_LTX23_EXTRA, "draft_schedule": DISTILLED_SCHEDULE, "enhance_system_prompt": "ltx25",
           "enhance_max_tokens": 600, "enhance_temperature": 0.0, "image_crf": 18, "strict_sizes": True},
))


_RANDOM_HOME = f"$SULPHUR_HOME/{ltx2_random.FOLDER_NAME}"

# The real stack's sizes, steps and sigmas, with weights built in memory (no LoRA).
RANDOM_FULL = register(replace(
    REAL,
    name="ltx2-19b-random",
    description="Full-size LTX-2 19B stack with random weights (GGUF Q4_0 transformer, Gemma 3 12B): "
                "real memory and speed for GPU benchmarks; renders noise.",
    files=(
        ModelFile("diffusers", "tokenizer and scheduler configs (the tiny stack's)", path=_tiny(tiny_ltx2.DIFFUSERS_DIR)),
        ModelFile("upscaler", "Real-ESRGAN x2plus layout, random", path=f"{_RANDOM_HOME}/{ltx2_random.ESRGAN_FILE}"),
        ModelFile("enhancer", "prompt enhancer LLM (the tiny one)", path=_tiny(tiny_ltx2.ENHANCER_FILE)),
    ),
    lora_strength=0.0,
    builder=ltx2_random.build_files,
    extra={**_LTX23_EXTRA, "random_weights": ltx2_random.VERSION, "memory": ltx2_random.MEMORY},
))


def file_path(preset: Preset, role: str) -> Path | None:
    """Where a role's file is on this machine (building the tiny stack on first use); None if absent."""
    mf = preset.file(role)
    p = mf.local_path()
    if p is None and preset.builder is not None:
        preset.builder()
        p = mf.local_path()
    return p


def optional_file(preset: Preset, role: str) -> Path | None:
    """:func:`file_path` for a role a preset may not have at all (``ltx25-distilled`` has no LoRA)."""
    if not any(f.role == role for f in preset.files):
        return None
    return file_path(preset, role)


def require(preset: Preset, role: str) -> Path:
    p = file_path(preset, role)
    if p is None:
        mf = preset.file(role)
        raise FileNotFoundError(f"{preset.name}: missing {mf.description}: put it at {mf.where()}")
    return p


def model_identity(preset: Preset) -> str:
    """A short string that changes whenever the weights a render would use change (for cache keys)."""
    if preset.extra.get("random_weights"):
        return f"{preset.name}:{ltx2_random.identity()}"
    if preset.builder is not None:
        return f"{preset.name}:builder-v{tiny_ltx2.BUILDER_VERSION}:{tiny_ltx2.config_digest()}"
    return preset.files_identity()


# --------------------------------------------------------------------------- placement


def torch_dtype(plan: StagePlan) -> torch.dtype:
    import torch

    return getattr(torch, plan.dtype)


def _held(models: LoadedModels, key: str, plan: StagePlan, loader: Callable[[], Any], *,
          transformer: bool = False) -> Any:
    """Get a component, reloading it if it was placed under a different plan (no hook stacking).

    A transformer under Sulphur's block streamer whose new plan differs only in how many
    blocks stay on the GPU (draft → refine usually does) is re-streamed in place instead:
    detaching keeps every weight where it is, so nothing is read from disk again.
    """
    if key in models:
        obj = models.get(key, loader)
        tag = getattr(obj, _OFFLOAD_TAG, None)
        if tag in (None, _plan_tag(plan, transformer=transformer)):
            return obj
        from pipeline.memory.offload import streamer_of

        streamer = streamer_of(obj)
        if streamer is not None and tag.partition("|")[0] == _fixed_tag(plan):
            if streamer.restream(int(plan.options.get("resident_blocks", 0)), str(plan.options.get("dequant", "layer"))):
                setattr(obj, _OFFLOAD_TAG, _plan_tag(plan, transformer=transformer))  # packed and pinned once
                return obj
            streamer.detach()
            obj.__dict__.pop(_OFFLOAD_TAG, None)
            return obj
        models.make_room(drop=[key], reason="placed for another plan")
    return models.get(key, loader)


#: Plan options that change how a module is placed (part of the placement tag); the
#: streamer can change the last ones in place (see _held).
_PLACEMENT_OPTIONS = ("weights", "use_stream", "low_cpu_mem_usage", "num_blocks_per_group", "streamer",
                      "offload_to_disk_path")
_RESTREAMABLE_OPTIONS = ("resident_blocks", "dequant")


def _plan_tag(plan: StagePlan, *, transformer: bool = True) -> str:
    """What a module's placement depends on. The smaller components ride along (resident,
    or leaf-offloaded without streams), so the transformer's options do not move them."""
    if not transformer:
        return f"{plan.device}:{plan.offload}:{plan.dtype}:{plan.options.get('offload_to_disk_path', '')}"
    live = ",".join(f"{k}={plan.options[k]}" for k in _RESTREAMABLE_OPTIONS if k in plan.options)
    return f"{_fixed_tag(plan)}|{live}"


def _fixed_tag(plan: StagePlan) -> str:
    """The part of a transformer's tag that only a reload can change."""
    opts = ",".join(f"{k}={plan.options[k]}" for k in _PLACEMENT_OPTIONS if k in plan.options)
    return f"{plan.device}:{plan.offload}:{plan.dtype}:{opts}"


def _is_quantized(module: Any) -> bool:
    return getattr(module, "hf_quantizer", None) is not None


def place(module: Any, plan: StagePlan, *, transformer: bool = False, reused: bool = True) -> Any:
    """Put one module where the plan says. Model offload is pipeline-level (see finish_pipeline).

    The transformer goes through :func:`pipeline.memory.offload.apply_plan`, which knows every
    option the planner emits (Sulphur's block streamer, fp8 storage, streams, pinning).
    The smaller components ride along: resident with it, or streamed per leaf. Sequential
    offload of a GGUF transformer becomes stream-less leaf-level group offload, its
    equivalent: accelerate's sequential offload moves weights to the meta device, which
    ``GGUFParameter`` does not survive (``KeyError: None`` in ``GGUFParameter.__new__``).

    ``reused``: the module runs again and again while held (VAE, connectors, upsampler), so a
    leaf-offloaded one gets a page-locked host copy. Not the text encoder, which runs once per
    batch of prompts: pinning its 24 GB costs more than it saves, and making the copy holds
    the weights twice in host RAM for a moment.
    """
    import torch

    tag = _plan_tag(plan, transformer=transformer)
    if not isinstance(module, torch.nn.Module) or getattr(module, _OFFLOAD_TAG, None) == tag:
        return module
    opts = plan.options
    gguf_sequential = plan.offload == "sequential" and _is_quantized(module)
    if transformer and not gguf_sequential:
        from pipeline.memory.offload import apply_plan

        apply_plan(module, plan)
    elif plan.device == "cpu" or plan.offload == "resident":
        module.to(plan.device)
    elif plan.offload in ("group_block", "group_leaf", "sequential"):
        from diffusers.hooks import apply_group_offloading

        # Streams only pay for the big, repeated weights; small parts stream per leaf, synchronously.
        use_stream = transformer and bool(opts.get("use_stream", True)) and plan.offload != "sequential"
        kwargs: dict[str, Any] = {}
        if opts.get("offload_to_disk_path"):
            kwargs["offload_to_disk_path"] = str(opts["offload_to_disk_path"])
        apply_group_offloading(module, onload_device=torch.device(plan.device), offload_device=torch.device("cpu"),
                               offload_type="leaf_level", use_stream=use_stream,
                               low_cpu_mem_usage=use_stream and bool(opts.get("low_cpu_mem_usage", False)),
                               **kwargs)
        if not use_stream and reused:
            from pipeline.memory.offload import keep_host_copies, resident_while_working

            keep_host_copies(module)  # offloading swaps back to one host copy instead of copying out
            resident_while_working(module)  # a (tiled) VAE decode onloads once, not per leaf per tile
    setattr(module, _OFFLOAD_TAG, tag)
    return module


def finish_pipeline(pipe: Any, plan: StagePlan) -> Any:
    """Apply model CPU offload and VAE tiling; the other modes were placed per module."""
    if plan.device != "cpu" and plan.offload == "model":
        pipe.enable_model_cpu_offload(device=plan.device)
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        if plan.vae_tiling:
            from pipeline.memory.offload import enable_vae_tiling

            enable_vae_tiling(vae, plan)
        else:
            vae.disable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------- loaders


def _key(preset: Preset, name: str) -> str:
    return f"{preset.name}:{name}"


def evict_for_plan(models: LoadedModels, preset: Preset, plan: StagePlan) -> None:
    """Drop what the plan says must go before the stage (``options["evict"]``, component names)."""
    for name in plan.options.get("evict", ()):
        models.make_room(drop=[_key(preset, name), name], reason="the plan evicts it")


def park_for_plan(models: LoadedModels, preset: Preset, plan: StagePlan) -> None:
    """Move the held components the plan parks (``options["park"]``) to host RAM when they sit
    whole on the GPU: the upsampler a resident refine left there, under a draft with no room
    for it. The next stage that uses one places it again (its placement tag is cleared)."""
    for name in plan.options.get("park", ()):
        key = _key(preset, name)
        if key not in models:
            continue
        obj = models.get(key, lambda: None)
        first = next(obj.parameters(), None) if hasattr(obj, "parameters") else None
        if first is None or first.device.type == "cpu" or ":resident:" not in getattr(obj, _OFFLOAD_TAG, ""):
            continue  # on the host already, or group-offloaded (its hooks keep it there between calls)
        obj.to("cpu")
        delattr(obj, _OFFLOAD_TAG)


def load_transformer(preset: Preset, plan: StagePlan, *, lora_adapter: str = "distilled") -> Any:
    """The transformer from its published single file (GGUF or safetensors, Lightricks' names) or a
    diffusers folder, every tensor accounted for, with the distilled LoRA loaded (not yet weighted)."""
    dtype = torch_dtype(plan)
    if preset.extra.get("random_weights"):
        return ltx2_random.transformer(dtype).eval()
    single = file_path(preset, "transformer_gguf")
    if single is not None:
        transformer = published.load_transformer(single, require(preset, "transformer_config"), dtype)
    else:
        from diffusers import LTX2VideoTransformer3DModel

        transformer = published.load_folder(LTX2VideoTransformer3DModel, require(preset, "diffusers") / "transformer",
                                            torch_dtype=dtype)
    lora = optional_file(preset, "lora")
    if lora is not None:
        load_lora(transformer, lora, lora_adapter)
    return transformer.eval()


#: Where each part's keys start in a LoRA file: Lightricks' names, then diffusers'.
LORA_PART_PREFIXES = {"transformer": ("diffusion_model.", "transformer."),
                      "connectors": ("text_embedding_projection.", "connectors.")}


def lora_parts(path: Path, only: str | None = None) -> dict[str, dict[str, Any]]:
    """Lightricks' LoRA through diffusers' LTX-2 conversion, split by the module it adapts:
    ``transformer`` (``diffusion_model.*``) and ``connectors`` (``text_embedding_projection.*``, which
    diffusers' LTX-2 LoRA loader routes to the connectors). A key of any other prefix is an error (the
    conversion would drop it without a word).

    ``only``: read and convert that part's tensors alone (the other part comes back empty). The
    connectors load their part after the transformer has loaded its own: reading the whole file
    twice cost the published rank-384 LoRA 7.6 GB of reads and host memory for a few megabytes."""
    from diffusers import LTX2Pipeline
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = list(f.keys())
    published = ("diffusion_model.", "text_embedding_projection.")
    if any(k.startswith(published) for k in raw):
        stray = [k for k in raw if not k.startswith(published)]
        if stray:
            raise WeightsMismatch(path, [], stray)
    parts: dict[str, dict[str, Any]] = {"transformer": {}, "connectors": {}}
    if only is None:
        sd = LTX2Pipeline.lora_state_dict(str(path))
    else:
        stray = [k for k in raw if not k.startswith(sum(LORA_PART_PREFIXES.values(), ()))]
        if stray:
            raise WeightsMismatch(path, [], stray)
        with safe_open(str(path), framework="pt") as f:
            subset = {k: f.get_tensor(k) for k in raw if k.startswith(LORA_PART_PREFIXES[only])}
        # diffusers keeps a converted part's Lightricks keys beside it when no diffusion_model.* key is present
        sd = {k: v for k, v in LTX2Pipeline.lora_state_dict(subset).items() if k.startswith(f"{only}.")} \
            if subset else {}
    stray = [k for k in sd if k.split(".", 1)[0] not in parts]
    if stray:
        raise WeightsMismatch(path, [], stray)
    for key, value in sd.items():
        parts[key.split(".", 1)[0]][key] = value
    return parts


def load_lora(module: Any, path: Path, adapter: str, *, part: str = "transformer",
              parts: dict[str, dict[str, Any]] | None = None) -> None:
    """One part of Lightricks' LoRA (``transformer`` or ``connectors``) straight into its module, so the
    adapter survives pipeline re-assembly; a key naming no module there is an error, where diffusers warns.
    ``parts``: the file's :func:`lora_parts`, when the caller already has them (one read per file);
    otherwise only this part's tensors are read."""
    sd = (parts if parts is not None else lora_parts(path, only=part))[part]
    if not sd:
        return
    modules = dict(module.named_modules())
    lost = [k for k in sd if k.removeprefix(f"{part}.").split(".lora_")[0] not in modules]
    if lost:
        raise WeightsMismatch(path, [], lost)
    module.load_lora_adapter(sd, adapter_name=adapter, prefix=part)


def set_lora_strength(transformer: Any, strength: float, adapter: str = "distilled", *,
                      connectors: Any = None) -> None:
    """Weight the distilled LoRA (0 disables it) without reloading anything; on the connectors too,
    where its text-projection part is loaded."""
    for module in (transformer, connectors):
        if getattr(module, "peft_config", None) and adapter in module.peft_config:
            module.set_adapters([adapter], weights=[float(strength)])


def _load_diffusers_component(preset: Preset, name: str, plan: StagePlan) -> Any:
    import torch

    dtype = torch_dtype(plan)
    # Audio VAE and vocoder are small and numerically touchy: keep them in float32.
    keep_fp32 = name in ("audio_vae", "vocoder")
    if preset.extra.get("random_weights"):
        return ltx2_random.component(name, torch.float32 if keep_fp32 else dtype)

    root = require(preset, "diffusers")
    if name == "vae":
        from diffusers import AutoencoderKLLTX2Video as cls
    elif name == "audio_vae":
        from diffusers import AutoencoderKLLTX2Audio as cls
    elif name == "vocoder":
        cls = published.vocoder_class(root / "vocoder")  # LTX-2.3: LTX2VocoderWithBWE
    elif name == "connectors":
        from diffusers.pipelines.ltx2 import LTX2TextConnectors as cls
    elif name == "text_encoder":  # Gemma 3 (LTX-2.3) or Gemma 4 unified (LTX-2.5), as its config says
        folder = root / "text_encoder"
        return published.load_folder(published.text_encoder_class(folder), folder, dtype=dtype).eval()
    elif name == "upsampler":
        from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

        return published.load_folder(LTX2LatentUpsamplerModel, upsampler_dir(require(preset, "upsampler")),
                                     torch_dtype=dtype).eval()
    else:
        raise KeyError(name)
    module = published.load_folder(cls, root / name, torch_dtype=torch.float32 if keep_fp32 else dtype)
    lora = optional_file(preset, "lora") if name == "connectors" else None
    if lora is not None:  # the LoRA's text-projection part (Lightricks' text_embedding_projection.*)
        load_lora(module, lora, "distilled", part="connectors")
    return module.eval()


def upsampler_dir(path: Path) -> Path:
    """The upsampler model's folder: published as a pipeline folder with the model in latent_upsampler/."""
    inner = path / "latent_upsampler"
    return inner if inner.is_dir() else path


def load_tokenizer(preset: Preset) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(require(preset, "diffusers") / "tokenizer")
    # diffusers' encode_prompt pads on the left and then tells the connectors the tokenizer's side;
    # set it here too, or a process that reads cached embeddings gives them the file's side.
    tokenizer.padding_side = "left"
    return tokenizer


def load_scheduler(preset: Preset) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_pretrained(require(preset, "diffusers") / "scheduler")


#: ``component``'s timings: name → (load seconds, or None when it was held; placement seconds).
Timings = dict[str, tuple[float | None, float]]


def component(models: LoadedModels, preset: Preset, name: str, plan: StagePlan,
              timings: Timings | None = None) -> Any:
    """A held, placed component: transformer, vae, audio_vae, vocoder, connectors, text_encoder, upsampler.

    ``timings``: receives the load and placement seconds, so a stage can say where its cold start
    went. A held transformer re-streamed for this plan (draft ↔ refine) was not loaded: that time
    is placement."""
    if name == "transformer":
        loader = lambda: load_transformer(preset, plan)  # noqa: E731
    else:
        loader = lambda: _load_diffusers_component(preset, name, plan)  # noqa: E731
    key = _key(preset, name)
    prior = models.peek(key)
    t0 = time.perf_counter()
    obj = _held(models, key, plan, loader, transformer=name == "transformer")
    t1 = time.perf_counter()
    if plan.device != "cpu" and plan.offload == "model":
        setattr(obj, _OFFLOAD_TAG, _plan_tag(plan, transformer=name == "transformer"))  # hooks: finish_pipeline
    else:
        place(obj, plan, transformer=name == "transformer", reused=name != "text_encoder")
    if timings is not None:
        t2 = time.perf_counter()
        timings[name] = (None, t2 - t0) if obj is prior else (t1 - t0, t2 - t1)
    return obj


def describe_timings(timings: Timings) -> str:
    """``transformer 12.1+3.4 s, vae held+0.0 s`` (load + placement), slowest first."""
    def cost(item: tuple[str, tuple[float | None, float]]) -> float:
        return -((item[1][0] or 0.0) + item[1][1])

    return ", ".join(f"{name} {'held' if load is None else f'{load:.1f}'}+{place:.1f} s"
                     for name, (load, place) in sorted(timings.items(), key=cost))


@dataclass
class PromptEmbeds:
    """Raw text-encoder hidden states (stacked layers); the connectors run inside the pipeline."""

    embeds: torch.Tensor
    mask: torch.Tensor


def encode_prompt(models: LoadedModels, preset: Preset, plan: StagePlan, prompt: str) -> PromptEmbeds:
    """One prompt's embeddings on the stage's device (see :func:`encode_prompts`)."""
    import torch

    enc = encode_prompts(models, preset, plan, [prompt])[0]
    dev = torch.device(plan.device)
    return PromptEmbeds(embeds=enc.embeds.to(dev, torch_dtype(plan)), mask=enc.mask.to(dev))


def text_encoder_dtype(plan: StagePlan, preset: Preset) -> str:
    """The dtype the text encoder runs in under ``plan`` (its embeddings are that dtype)."""
    return _text_encoder_plan(plan, preset).dtype


def encode_prompts(models: LoadedModels, preset: Preset, plan: StagePlan, prompts: list[str], *,
                   on_loaded: Callable[[], None] | None = None) -> list[PromptEmbeds]:
    """Encode every prompt in one text-encoder placement, then evict it: it is a memory peak
    of its own (Gemma 3 12B ≈ 24 GB) and each load or device move costs seconds to a minute.

    Returns the embeddings on the CPU in the encoder's own dtype (lossless; the caller casts).
    When the plan says the host can hold every component at once (``keep_text_encoder``),
    the encoder is parked in host RAM instead, so the next segment does not load 24 GB again.
    ``on_loaded`` is called once the encoder is loaded and placed, before it computes (the
    draft starts its page-cache prefetch there, when the disk is free again).
    """
    import torch
    from diffusers import LTX2Pipeline

    key = _key(preset, "text_encoder")
    te_plan = _text_encoder_plan(plan, preset)
    keep = bool(plan.options.get("keep_text_encoder"))
    text_encoder = component(models, preset, "text_encoder", te_plan)
    tokenizer = models.get(_key(preset, "tokenizer"), lambda: load_tokenizer(preset))
    if on_loaded is not None:
        on_loaded()
    # The pipeline's own encode_prompt, so tokenization and layer stacking match the real path.
    pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, text_encoder=text_encoder,
                        tokenizer=tokenizer, connectors=None, transformer=None, vocoder=None)
    out = []
    try:
        with torch.no_grad():
            for prompt in prompts:  # one at a time: a batch would pad and round differently
                embeds, mask, _, _ = pipe.encode_prompt(
                    prompt, do_classifier_free_guidance=False, device=torch.device(te_plan.device),
                    max_sequence_length=int(preset.extra.get("max_sequence_length", 1024)))
                out.append(PromptEmbeds(embeds=embeds.detach().cpu(), mask=mask.detach().cpu()))
    finally:
        if keep and te_plan.device != "cpu" and te_plan.offload == "resident":
            # off the GPU, still loaded: placed on the device again next time
            text_encoder.to("cpu")
            text_encoder.__dict__.pop(_OFFLOAD_TAG, None)
        del pipe, text_encoder
        if not keep:
            models.make_room(drop=[key], reason="the prompt is encoded")
    return out


def _text_encoder_plan(plan: StagePlan, preset: Preset) -> StagePlan:
    """Where the text encoder runs: ``plan.options["text_encoder"]`` (resident/group/group_stream/disk/cpu),
    else derived from the stage's mode (it is alone on the device while it runs)."""
    mode = plan.options.get("text_encoder")
    if plan.device == "cpu" or mode == "cpu":
        return replace(plan, device="cpu", offload="resident", dtype="float32" if plan.device == "cpu" else plan.dtype,
                       options={})
    if mode is None:
        mode = "resident" if plan.offload in ("resident", "model") else "group"
    if mode == "resident":
        return replace(plan, offload="resident", options={})
    opts: dict[str, Any] = {"use_stream": mode == "group_stream", "low_cpu_mem_usage": False}
    if mode == "disk":
        opts["offload_to_disk_path"] = str(_disk_copy_dir(preset))
    return replace(plan, offload="group_leaf", options=opts)


def _disk_copy_dir(preset: Preset) -> Path:
    """Where the text encoder's disk-offload copy lives, named after its weights.

    diffusers reuses whatever group files it finds at the path, so another model (or a
    changed file) must never read this one's copy; older copies (24 GB each for Gemma 3
    12B) are deleted, so the disk holds one.
    """
    identity = (model_identity(preset) if preset.builder is not None
                else preset.files_identity(["diffusers"]))
    root = sulphur_home() / "offload" / "text_encoder"
    here = root / hashlib.sha256(identity.encode()).hexdigest()[:16]
    if root.is_dir():
        for old in root.iterdir():
            if old != here and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return here


def assemble(models: LoadedModels, preset: Preset, plan: StagePlan, *, image_to_video: bool,
             conditions: bool = False, timings: Timings | None = None) -> Any:
    """``LTX2Pipeline`` / ``LTX2ImageToVideoPipeline`` (or, for frames conditioned anywhere,
    ``LTX2ConditionPipeline`` as :mod:`pipeline.models.ltx2_condition` places guides) from held components (no text encoder: embeds are passed).
    ``timings``: see :func:`component`."""
    from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline

    # diffusers at import time: loaded with the model
    from pipeline.models.ltx2_condition import FrameExactConditionPipeline

    cls = FrameExactConditionPipeline if conditions else LTX2ImageToVideoPipeline if image_to_video else LTX2Pipeline
    parts = {name: component(models, preset, name, plan, timings)
             for name in ("transformer", "vae", "audio_vae", "vocoder", "connectors")}
    pipe = cls(scheduler=load_scheduler(preset), text_encoder=None,
               tokenizer=models.get(_key(preset, "tokenizer"), lambda: load_tokenizer(preset)), **parts)
    return finish_pipeline(pipe, plan)


#: What a draft loads after its text pass, in load order (:func:`assemble`).
DRAFT_COMPONENTS = ("transformer", "vae", "audio_vae", "vocoder", "connectors")


def draft_files(models: LoadedModels, preset: Preset) -> list[Path]:
    """The files and folders a draft reads for the components of :data:`DRAFT_COMPONENTS` not yet
    held, in load order: the transformer's single file (else its diffusers folder), the distilled
    LoRA (read by the transformer and the connectors), then the diffusers folder's vae/, audio_vae/,
    vocoder/ and connectors/. Nothing for weights built in memory; an absent file is left out (its
    loader says it is missing)."""
    if preset.extra.get("random_weights"):
        return []
    todo = [name for name in DRAFT_COMPONENTS if _key(preset, name) not in models]
    root = optional_file(preset, "diffusers")
    out: list[Path | None] = []
    if "transformer" in todo:
        single = optional_file(preset, "transformer_gguf")
        out.append(single if single is not None or root is None else root / "transformer")
    if "transformer" in todo or "connectors" in todo:
        out.append(optional_file(preset, "lora"))
    out += [root / name for name in todo if name != "transformer" and root is not None]
    return [p for p in out if p is not None]


def guidance_kwargs(preset: Preset) -> dict[str, Any]:
    """Distilled sampling: plain CFG at the preset's scale, no STG / modality guidance / rescale."""
    g = float(preset.guidance_scale)
    return {
        "guidance_scale": g, "audio_guidance_scale": g, "stg_scale": 0.0, "audio_stg_scale": 0.0,
        "modality_scale": 1.0, "audio_modality_scale": 1.0, "guidance_rescale": 0.0, "audio_guidance_rescale": 0.0,
        "use_cross_timestep": bool(preset.extra.get("use_cross_timestep", True)),
    }


# --------------------------------------------------------------------------- decoding


def decode_video(pipe: Any, latents: torch.Tensor, generator: torch.Generator | None = None,
                 decode_timestep: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """Denormalized video latents [B,C,F,H,W] → uint8 frames (F,H,W,3), as the pipeline decodes them.

    The pixels are made uint8 on the decoding device and cross to the host once (a quarter of
    the float32 bytes ``output_type="np"`` copies, and no float math on the CPU); ``out``, when
    given, receives them (a caller's preallocated buffer)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    vae = pipe.vae
    device = pipe._execution_device
    with torch.no_grad():
        lat = latents.to(device=device, dtype=vae.dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            noise = randn_tensor(lat.shape, generator=generator, device=device, dtype=lat.dtype)
            timestep = torch.tensor([decode_timestep], device=device, dtype=lat.dtype)
            lat = (1 - decode_timestep) * lat + decode_timestep * noise
        video = vae.decode(lat, timestep, return_dict=False)[0]
        return video_to_uint8(pipe, video, out)


#: Frames converted per chunk on the device: bounds the float32 workspace (8 × 3 × 544 × 960 × 4 B = 50 MB
#: at the refine size) beside a decoded clip, which matters under a VRAM cap.
UINT8_CHUNK = 8


def video_to_uint8(pipe: Any, video: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
    """The VAE's output [1,C,F,H,W] → uint8 (F,H,W,C) on the host, bit for bit what
    ``postprocess_video(output_type="np")`` then float32 ×255, round, clip gives: the same
    denormalize in the VAE's dtype (diffusers' own postprocess), then float32 ×255, round half
    to even, clip, cast — done on the device in chunks, copied once per chunk."""
    import numpy as np
    import torch

    _, c, f, h, w = video.shape
    if out is None:
        out = np.empty((f, h, w, c), np.uint8)
    host = torch.from_numpy(out)
    for start in range(0, f, UINT8_CHUNK):
        stop = min(f, start + UINT8_CHUNK)
        x = pipe.video_processor.postprocess_video(video[:1, :, start:stop], output_type="pt")[0]  # f,C,H,W
        x = x.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        host[start:stop].copy_(x.permute(0, 2, 3, 1).contiguous())
    return out


def decode_audio(pipe: Any, audio_latents: torch.Tensor) -> np.ndarray:
    """Denormalized audio latents [B,C,L,M] → float32 waveform (channels, samples)."""
    import numpy as np
    import torch

    # The vocoder's transposed convolutions run cuDNN's backward-data kernels, which add with
    # atomics: on an H100 one mel gave two waveforms in one process (5e-6 apart). Deterministic
    # kernels repeat it bit for bit at the same speed (0.0146 s per 121-frame decode either way;
    # bench/results/README.md, run 23).
    with torch.no_grad(), cudnn_setting(deterministic=True):
        lat = audio_latents.to(device=pipe._execution_device, dtype=pipe.audio_vae.dtype)
        mel = pipe.audio_vae.decode(lat, return_dict=False)[0]
        wav = pipe.vocoder(mel.to(pipe.vocoder.dtype))
    return np.ascontiguousarray(wav[0].float().cpu().numpy(), dtype=np.float32)


def fit_image(image: np.ndarray, size: tuple[int, int]) -> Any:
    """Scale to cover ``size`` (w, h) and center-crop, so an anchor of another aspect isn't squashed."""
    from PIL import Image

    w, h = size
    img = Image.fromarray(image).convert("RGB")
    scale = max(w / img.width, h / img.height)
    nw, nh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - w) // 2, (nh - h) // 2
    return img.crop((left, top, left + w, top + h))
