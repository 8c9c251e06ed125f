"""What the I2V draft families (Wan2.2, SVD, LTX-Video, CogVideoX) share.

A family module (``pipeline/models/<family>.py``) registers its presets and exposes a
:class:`Family` object: how to load its diffusers pipeline (without the text encoder),
its text encoder, how to turn the encoder's output into pipeline arguments, and the
per-call arguments. The generic draft stage (``pipeline/stages/family_draft.py``) does
the rest the same way for all of them: encode the prompt on the CPU, evict the encoder,
place the pipeline by the preset's memory recipe (``pipeline/memory/recipes.py``), run,
and write frames.

None of these families has a latent upsampler, so their presets say ``refine_scale = 1``
and ``refine_size = draft_size``: the resize "refine" is then a no-op and Real-ESRGAN
gets the model's own pixels (it is trained on degraded low-res input, not on a Lanczos
upscale, and costs 4× less at the draft size). The runner takes ``refine_size`` from the
storyboard or 2× the draft today; honouring ``refine_scale`` is the runner's call.

Tiny twins are built here too: random weights from configs with fixed seeds, written
with ``save_pretrained`` into ``sulphur_home()/tiny-<family>-v<N>`` atomically (temp
folder + rename under a file lock), so every test goes through ``from_pretrained`` /
``from_single_file`` exactly as real weights do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models.build_once import build_once as build_folder
from pipeline.models.gguf_writer import write_state_dict_gguf
from pipeline.models.registry import ESRGAN_X2PLUS_URL, ModelFile, Preset, sulphur_home

if TYPE_CHECKING:
    import torch

    from pipeline.memory.recipes import Recipe

# Deferred imports: torch, diffusers, transformers, tokenizers, pipeline.models.enhancer, pipeline.models.esrgan —
#   the presets are read without them; they load with a model or a tiny build


#: Words of the offline tiny tokenizers (anything else maps to <unk>).
WORDS = (
    "a an the of in on at and with to from over under into through by is are "
    "cinematic shot camera slow pan tilt dolly zoom close wide aerial tracking static light sun night "
    "soft warm cold blue red green orange yellow white black dark bright fog rain snow wind sky sea "
    "wave river lake forest tree mountain city street road car train boat machine excavator digging "
    "dirt wood chipper loader dust smoke water stone sand grass leaf bird dog man woman people hand "
    "walking running moving turning slowly quickly continues keeps"
).split()


# --------------------------------------------------------------------------- building tiny twins


def tiny_root(folder_name: str) -> Path:
    return sulphur_home() / folder_name


def build_once(root: Path, build: Callable[[Path], None], digest: str) -> Path:
    """Build a tiny twin's folder once (see :mod:`pipeline.models.build_once`)."""
    from pipeline.models.enhancer import TINY_LLM_VERSION  # the shared tiny enhancer is in the folder too

    return build_folder(root, build, {"digest": digest, "llm": TINY_LLM_VERSION})


def patch_model_index(d: Path, **entries: list[str]) -> None:
    """Name in model_index.json the components saved outside the pipeline object (the text
    encoder, GGUF experts); the tokenizer is always the offline fast tokenizer."""
    path = d / "model_index.json"
    index = json.loads(path.read_text())
    index.update(entries)
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    path.write_text(json.dumps(index, indent=2))


def config_digest(configs: dict[str, Any]) -> str:
    blob = json.dumps(configs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_t5_tokenizer(max_length: int = 512) -> Any:
    """An offline T5-style tokenizer: WordLevel vocabulary, ``</s>`` appended, right padding.

    Wrapped in ``PreTrainedTokenizerFast`` so the Wan / LTX-Video / CogVideoX pipelines'
    ``tokenizer(..., padding="max_length", truncation=True)`` calls work unchanged.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   padding_side="right", model_max_length=max_length)


def t5_config(kind: str = "t5", d_model: int = 32) -> Any:
    """A tiny T5 / umT5 encoder config over the tiny vocabulary."""
    from transformers import T5Config, UMT5Config

    cls = UMT5Config if kind == "umt5" else T5Config
    return cls(vocab_size=3 + len(WORDS), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0,
               eos_token_id=1, decoder_start_token_id=0, is_encoder_decoder=False, use_cache=False)


def save_t5(root: Path, kind: str, d_model: int, seed: int) -> None:
    """Tiny text encoder + tokenizer as ``text_encoder/`` and ``tokenizer/`` of a diffusers folder."""
    import torch
    from transformers import T5EncoderModel, UMT5EncoderModel

    torch.manual_seed(seed)
    cls = UMT5EncoderModel if kind == "umt5" else T5EncoderModel
    cls(t5_config(kind, d_model)).eval().save_pretrained(root / "text_encoder")
    make_t5_tokenizer().save_pretrained(root / "tokenizer")


def write_gguf(state_dict: dict[str, Any], path: Path, arch: str) -> Path:
    """A state dict as GGUF: Q8_0 for 2-D weights whose rows split into 32-blocks, F32 elsewhere."""
    return write_state_dict_gguf(state_dict, path, arch)


def build_shared_tiny_parts(root: Path) -> None:
    """The tiny enhancer LLM and Real-ESRGAN x2plus every tiny preset's other stages use."""
    from pipeline.models.enhancer import build_tiny_llm
    from pipeline.models.esrgan import build_tiny_x2plus

    (root / "enhancer").mkdir(parents=True, exist_ok=True)
    (root / "esrgan").mkdir(parents=True, exist_ok=True)
    build_tiny_llm(root / "enhancer" / "tiny-llm.gguf")
    build_tiny_x2plus(root / "esrgan" / "tiny_x2plus.pth")


def tiny_files(folder: str, own: Iterable[ModelFile]) -> tuple[ModelFile, ...]:
    """A tiny preset's files: its own plus the shared enhancer/upscaler, all under its folder."""
    base = f"${{SULPHUR_HOME}}/{folder}"
    own = tuple(ModelFile(f.role, f.description, path=f"{base}/{f.path}") for f in own)
    return own + (
        ModelFile("enhancer", "prompt enhancer LLM (tiny GGUF)", path=f"{base}/enhancer/tiny-llm.gguf"),
        ModelFile("upscaler", "Real-ESRGAN x2plus layout (tiny)", path=f"{base}/esrgan/tiny_x2plus.pth"),
    )


def real_support_files(home: str) -> tuple[ModelFile, ...]:
    """The enhancer and upscaler files the real presets share with LTX-2."""
    return (
        ModelFile("enhancer", "Gemma 3 12B instruct, GGUF, for prompt enhancement",
                  path=f"{home}/gemma/gemma-3-12b-it-Q4_K_M.gguf", env="SULPHUR_ENHANCER_GGUF",
                  repo="unsloth/gemma-3-12b-it-GGUF", filename="gemma-3-12b-it-Q4_K_M.gguf"),
        ModelFile("upscaler", "Real-ESRGAN x2plus weights", path=f"{home}/esrgan/RealESRGAN_x2plus.pth",
                  env="SULPHUR_ESRGAN", url=ESRGAN_X2PLUS_URL),
    )


# --------------------------------------------------------------------------- at render time


def resolve(preset: Preset, role: str) -> Path:
    """Local path of one of a preset's files, building a tiny twin on first use."""
    return preset.resolve(role)


def identity(preset: Preset, roles: Iterable[str]) -> str:
    """Changes whenever the weights a draft would use change (part of the draft's cache key)."""
    if preset.builder is not None:
        return f"{preset.name}:tiny:{preset.extra.get('tiny_digest', '')}"
    return preset.files_identity(roles)


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def apply_recipe(pipe: Any, recipe: Recipe, device: str, denoisers: Iterable[str]) -> None:
    """Place a loaded pipeline as the recipe says (diffusers' own offload machinery only)."""
    import torch

    if device == "cpu" or recipe.offload == "resident":
        pipe.to(device)
    elif recipe.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif recipe.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif recipe.offload in ("group_leaf", "group_block"):
        from diffusers.hooks import apply_group_offloading

        names = set(denoisers)
        for name, module in pipe.components.items():
            if not isinstance(module, torch.nn.Module):
                continue
            if name in names:
                kind = "leaf_level" if recipe.offload == "group_leaf" else "block_level"
                apply_group_offloading(module, onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                       offload_type=kind, use_stream=recipe.use_stream,
                                       num_blocks_per_group=None if kind == "leaf_level" else 1)
            else:
                module.to(device)
    else:
        raise ValueError(f"unknown offload mode {recipe.offload!r}")
    vae = getattr(pipe, "vae", None)
    if recipe.vae_tiling and vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    unet = getattr(pipe, "unet", None)
    if recipe.forward_chunking and unet is not None and hasattr(unet, "enable_forward_chunking"):
        unet.enable_forward_chunking()


@dataclass
class Prepared:
    """What ``Family.prepare`` returns: the pipeline class to call and its static arguments."""

    pipeline_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class Family:
    """One model family's differences from the generic draft; subclasses fill these in.

    ``text_encoder_class`` is None for families without a prompt (SVD). ``denoisers`` are
    the components group offload streams (the experts / the UNet).
    """

    name: str = ""
    #: Passes the recipe's ``decode_chunk_size`` to the pipeline call (SVD decodes in chunks).
    decode_chunks: bool = False
    i2v_class: str = ""
    t2v_class: str | None = None
    text_encoder_class: str | None = None  # transformers class name
    denoisers: tuple[str, ...] = ("transformer",)

    # 1. loading
    def load_pipeline(self, preset: Preset, mode: str, dtype: torch.dtype) -> Any:
        """The diffusers pipeline for ``mode`` ("i2v" / "t2v") without its text encoder."""
        import diffusers

        cls = getattr(diffusers, self.i2v_class if mode == "i2v" else str(self.t2v_class))
        kwargs: dict[str, Any] = {"dtype": dtype}
        if self.text_encoder_class:
            kwargs.update(text_encoder=None, tokenizer=None)
        kwargs.update(self.extra_components(preset, mode, dtype))
        return cls.from_pretrained(str(resolve(preset, "diffusers")), **kwargs)

    def extra_components(self, preset: Preset, mode: str, dtype: torch.dtype) -> dict[str, Any]:
        return {}

    def load_text_encoder(self, preset: Preset) -> tuple[Any, Any]:
        """(tokenizer, encoder) on the CPU in fp32."""
        import torch
        import transformers

        folder = resolve(preset, "diffusers")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        cls = getattr(transformers, str(self.text_encoder_class))
        encoder = cls.from_pretrained(str(folder / "text_encoder"), dtype=torch.float32).eval()
        return tokenizer, encoder

    # 2. the prompt
    def encode(self, pipe: Any, prompt: str, negative: str, cfg: bool, max_len: int,
               dtype: torch.dtype) -> dict[str, Any]:
        """Pipeline arguments carrying the prompt embeddings (pipe has the encoder attached)."""
        import torch

        pos, neg = pipe.encode_prompt(prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=cfg,
                                      max_sequence_length=max_len, device=torch.device("cpu"), dtype=torch.float32)
        out = {"prompt_embeds": pos.to(dtype)}
        if cfg:
            out["negative_prompt_embeds"] = neg.to(dtype)
        return out

    # 3. the call
    def call_kwargs(self, preset: Preset, mode: str, *, width: int, height: int, frames: int, fps: int,
                    steps: int, guidance: float) -> dict[str, Any]:
        return {"width": width, "height": height, "num_frames": frames, "num_inference_steps": steps,
                "guidance_scale": guidance, "max_sequence_length": int(preset.extra.get("max_sequence_length", 226))}

    def uses_cfg(self, guidance: float) -> bool:
        return guidance > 1.0
