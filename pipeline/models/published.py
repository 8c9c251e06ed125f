"""One loading layer for files as they are published, strict about every tensor.

diffusers warns about missing or unexpected weights and initialises what it did not find;
a real render would then produce noise. Here any load whose tensors do not map one to one
onto the model is a :class:`WeightsMismatch` naming the file and the first keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models import ltx_keys

if TYPE_CHECKING:
    import torch

# Deferred imports: diffusers, safetensors, accelerate, transformers, gguf, torch — only a strict load of a
#   published file needs them

_SHOW = 3


class WeightsMismatch(RuntimeError):
    """A file whose tensors do not match the model they are loaded into."""

    def __init__(self, path: Path | str, missing: list[str], unexpected: list[str]) -> None:
        self.path, self.missing, self.unexpected = Path(path), sorted(missing), sorted(unexpected)
        bits = []
        if self.missing:
            bits.append(f"{len(self.missing)} missing ({', '.join(self.missing[:_SHOW])})")
        if self.unexpected:
            bits.append(f"{len(self.unexpected)} unexpected ({', '.join(self.unexpected[:_SHOW])})")
        super().__init__(f"{self.path}: weights do not map: {'; '.join(bits)}")


def check_keys(path: Path | str, expected: set[str], found: set[str]) -> None:
    """Raise unless ``found`` names exactly the ``expected`` tensors."""
    if expected != found:
        raise WeightsMismatch(path, list(expected - found), list(found - expected))


#: LTX-2.5's keyframe-slot marker, a (1, dim) parameter, named alike by Lightricks and diffusers.
KEYFRAMES_EMBEDDING = "keyframes_abs_pos_embedding"


def read_transformer_file(path: Path) -> dict[str, Any]:
    """A published LTX-2 transformer (GGUF or safetensors, Lightricks' names) under diffusers' names.

    GGUF tensors stay quantized (``GGUFParameter``); the bundled text connectors are dropped.
    """
    if path.suffix == ".gguf":
        raw = read_gguf(path)
    else:
        from safetensors.torch import load_file

        raw = load_file(str(path))
    out = {ltx_keys.to_diffusers(k): v for k, v in raw.items() if not ltx_keys.is_connector(k)}
    keyframes = out.get(KEYFRAMES_EMBEDDING)
    if keyframes is not None and keyframes.ndim == 1:
        # LTX-2.5: some community GGUFs store the (1, dim) parameter flattened; the values are the same.
        out[KEYFRAMES_EMBEDDING] = keyframes.reshape(1, -1)
    return out


def read_gguf(path: Path) -> dict[str, Any]:
    """A GGUF's tensors as diffusers' ``load_gguf_checkpoint`` returns them (F32/F16 as plain tensors,
    the rest as ``GGUFParameter``), backed by a copy-on-write map of the file instead of copied out of
    it. diffusers copies every tensor into anonymous memory; for LTX-2.3's 11 GB transformer that
    was a second host copy and seconds of memcpy on a cold start, before the block streamer packs
    the blocks into pinned memory anyway. Mapped, a page is read when first used and stays
    reclaimable page cache; a write (none is made) would stay private to the process."""
    import gguf
    import torch
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES, GGUFParameter

    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    out: dict[str, Any] = {}
    for tensor in gguf.GGUFReader(path, mode="c").tensors:
        kind = tensor.tensor_type
        if kind not in plain and kind not in SUPPORTED_GGUF_QUANT_TYPES:
            raise WeightsMismatch(path, [], [f"{tensor.name} ({kind.name}: a GGUF type diffusers cannot dequantize)"])
        weights = torch.from_numpy(tensor.data)
        out[tensor.name] = weights if kind in plain else GGUFParameter(weights, quant_type=kind)
    return out


def expected_transformer_keys(config_dir: Path) -> set[str]:
    """The tensor names an LTX-2 transformer of this config has (built on the meta device)."""
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel

    config = json.loads((Path(config_dir) / "config.json").read_text())
    with init_empty_weights():
        model = LTX2VideoTransformer3DModel.from_config(config)
    return set(model.state_dict())


def load_transformer(path: Path, config_dir: Path, dtype: torch.dtype) -> Any:
    """The transformer from a published single file, every tensor accounted for."""
    from diffusers import GGUFQuantizationConfig, LTX2VideoTransformer3DModel

    state = read_transformer_file(path)
    check_keys(path, expected_transformer_keys(config_dir), set(state))
    kwargs: dict[str, Any] = {}
    if path.suffix == ".gguf":
        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    model = LTX2VideoTransformer3DModel.from_single_file(state, config=str(config_dir), torch_dtype=dtype, **kwargs)
    assert_materialized(path, model)
    return model


def assert_materialized(path: Path | str, model: Any) -> None:
    """No tensor left on the meta device (diffusers' sign of a weight that never arrived)."""
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise WeightsMismatch(path, left, [])


def load_folder(cls: Any, folder: Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained(folder)`` that fails on any missing, unexpected or mismatched weight."""
    model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys", ()))
    unexpected = list(info.get("unexpected_keys", ())) + [str(m[0]) for m in info.get("mismatched_keys", ())]
    if missing or unexpected:
        raise WeightsMismatch(_weights_file(folder), missing, unexpected)
    assert_materialized(_weights_file(folder), model)
    return model


def _weights_file(folder: Path) -> Path:
    files = sorted(Path(folder).glob("*.safetensors"))
    return files[0] if len(files) == 1 else Path(folder)


def vocoder_class(folder: Path) -> Any:
    """The vocoder class its published config names (LTX-2.3 ships ``LTX2VocoderWithBWE``)."""
    from diffusers.pipelines.ltx2 import vocoder

    name = json.loads((Path(folder) / "config.json").read_text()).get("_class_name", "LTX2Vocoder")
    if name not in ("LTX2Vocoder", "LTX2VocoderWithBWE"):
        raise WeightsMismatch(folder, [], [f"_class_name={name}"])
    return getattr(vocoder, name)


#: Text encoder classes by the ``model_type`` of their published config: Gemma 3 12B for LTX-2.0/2.3,
#: Lightricks' Gemma 4 12B finetune (``gemma4_unified``) for LTX-2.5.
TEXT_ENCODERS = {"gemma3": "Gemma3ForConditionalGeneration", "gemma4_unified": "Gemma4UnifiedForConditionalGeneration"}


def text_encoder_class(folder: Path) -> Any:
    """The transformers class the text encoder folder's ``config.json`` names (by ``model_type``)."""
    import transformers

    config = Path(folder) / "config.json"
    model_type = json.loads(config.read_text()).get("model_type", "") if config.is_file() else ""
    if model_type not in TEXT_ENCODERS:
        raise WeightsMismatch(config, [], [f"model_type={model_type or '(none)'}"])
    return getattr(transformers, TEXT_ENCODERS[model_type])
