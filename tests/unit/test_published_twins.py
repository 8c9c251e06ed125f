"""The tiny twins are written as the real files are published and load through the real loaders.

Every tensor must arrive: the strict loaders raise on any missing, unexpected or newly
initialised weight, and these tests compare each loaded tensor with its source.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.memory.planner import StagePlan
from pipeline.models import ltx2, ltx_keys, published, tiny_ltx2
from pipeline.models.registry import get_preset


@pytest.fixture(scope="module")
def root() -> Path:
    return tiny_ltx2.build_tiny()


def _plain(t: torch.Tensor) -> torch.Tensor:
    if hasattr(t, "quant_type"):
        from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

        return dequantize_gguf_tensor(t).float()
    return t.float()


def _source_transformer(root: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(root / tiny_ltx2.DIFFUSERS_DIR / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_twin_files_use_lightricks_names_and_ltx23_shape(root: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(root / tiny_ltx2.SAFETENSORS_FILE), "pt") as f:
        names = set(f.keys())
    assert all(n.startswith("model.diffusion_model.") for n in names)
    for published_name in ("prompt_adaln_single.linear.weight", "audio_prompt_adaln_single.linear.weight",
                           "adaln_single.linear.weight", "patchify_proj.weight",
                           "transformer_blocks.0.attn1.q_norm.weight", "transformer_blocks.0.attn1.to_gate_logits.weight"):
        assert "model.diffusion_model." + published_name in names, published_name
    assert not any("time_embed" in n or "norm_q" in n for n in names)
    cfg = json.loads((root / tiny_ltx2.GGUF_CONFIG_DIR / "config.json").read_text())
    assert cfg["gated_attn"] and cfg["cross_attn_mod"] and cfg["use_prompt_adaln_single"]


@pytest.mark.parametrize("rel", [tiny_ltx2.SAFETENSORS_FILE, tiny_ltx2.GGUF_FILE])
def test_transformer_twin_loads_every_tensor_equal(root: Path, rel: str) -> None:
    source = _source_transformer(root)
    model = published.load_transformer(root / rel, root / tiny_ltx2.GGUF_CONFIG_DIR, torch.float32)
    loaded = model.state_dict()
    assert set(loaded) == set(source)
    for name, want in source.items():
        got = _plain(loaded[name]).reshape(want.shape)
        if rel.endswith(".safetensors") or not hasattr(loaded[name], "quant_type"):
            assert torch.equal(got, want.float()), name
        else:  # Q8_0: one scale per 32 values
            assert torch.allclose(got, want.float(), atol=float(want.abs().max()) / 100 + 1e-6), name


def test_renamed_key_is_an_error_naming_file_and_key(root: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(root / tiny_ltx2.SAFETENSORS_FILE))
    sd["model.diffusion_model.prompt_adaln_single_v2.linear.weight"] = sd.pop(
        "model.diffusion_model.prompt_adaln_single.linear.weight")
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(published.WeightsMismatch) as err:
        published.load_transformer(bad, root / tiny_ltx2.GGUF_CONFIG_DIR, torch.float32)
    msg = str(err.value)
    assert str(bad) in msg and "prompt_adaln.linear.weight" in msg and "prompt_adaln_single_v2" in msg
    assert "\n" not in msg


def test_key_tables_round_trip_every_diffusers_name(root: Path) -> None:
    for name in _source_transformer(root):
        assert ltx_keys.to_diffusers(ltx_keys.to_lightricks(name)) == name


def test_folder_components_load_strictly_as_published(root: Path) -> None:
    from safetensors.torch import load_file

    preset, plan = get_preset("tiny"), StagePlan(name="cpu")
    d = root / tiny_ltx2.DIFFUSERS_DIR
    assert json.loads((d / "vocoder" / "config.json").read_text())["_class_name"] == "LTX2VocoderWithBWE"
    assert (root / tiny_ltx2.UPSAMPLER_DIR / "latent_upsampler" / "config.json").is_file()
    for name, folder in (("vocoder", d / "vocoder"), ("vae", d / "vae"), ("audio_vae", d / "audio_vae"),
                         ("connectors", d / "connectors"),
                         ("upsampler", root / tiny_ltx2.UPSAMPLER_DIR / "latent_upsampler")):
        model = ltx2._load_diffusers_component(preset, name, plan)
        source = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
        # the connectors carry the distilled LoRA's text part: PEFT moves a wrapped weight to base_layer
        loaded = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()}
        assert set(source) <= set(loaded), name
        for key, want in source.items():
            assert torch.equal(loaded[key].float(), want.float()), f"{name}: {key}"
    assert type(ltx2._load_diffusers_component(preset, "vocoder", plan)).__name__ == "LTX2VocoderWithBWE"


def test_vocoder_with_extra_tensor_is_an_error(root: Path, tmp_path: Path) -> None:
    import shutil

    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "vocoder"
    shutil.copytree(root / tiny_ltx2.DIFFUSERS_DIR / "vocoder", folder)
    f = folder / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd["bwe_generator.stray.weight"] = torch.zeros(2)
    save_file(sd, str(f))
    with pytest.raises(published.WeightsMismatch, match="bwe_generator.stray.weight"):
        published.load_folder(LTX2VocoderWithBWE, folder)
