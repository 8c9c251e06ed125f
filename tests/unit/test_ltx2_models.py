"""The LTX-2 family: tiny build, GGUF transformer loading, LoRA, presets and model identity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny_root() -> Path:
    from pipeline.models import tiny_ltx2

    return tiny_ltx2.build_tiny()


def test_tiny_build_is_complete_and_idempotent(tiny_root: Path) -> None:
    from pipeline.models import tiny_ltx2
    from pipeline.models.registry import get_preset

    preset = get_preset("tiny")
    for mf in preset.files:
        assert mf.local_path() is not None, f"{mf.role} missing after build: {mf.where()}"
    marker = tiny_root / tiny_ltx2.DONE_MARKER
    before = marker.stat().st_mtime_ns
    assert tiny_ltx2.build_tiny() == tiny_root
    assert marker.stat().st_mtime_ns == before  # not rebuilt
    assert not list(tiny_root.parent.glob(f".{tiny_root.name}.*.partial"))


def test_tiny_build_redone_when_a_builder_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models import enhancer, tiny_ltx2

    root = tiny_ltx2.build_tiny(tmp_path / "tiny")
    first = (root / tiny_ltx2.DONE_MARKER).read_text()
    monkeypatch.setattr(enhancer, "TINY_LLM_VERSION", enhancer.TINY_LLM_VERSION + 1)
    assert tiny_ltx2.build_tiny(root) == root
    assert (root / tiny_ltx2.DONE_MARKER).read_text() != first
    assert (root / tiny_ltx2.ENHANCER_FILE).is_file()


def test_tiny_vae_compression_sets_the_frame_and_size_rules(tiny_root: Path) -> None:
    from diffusers import AutoencoderKLLTX2Video

    from pipeline.models.registry import get_preset

    preset = get_preset("tiny")
    vae = AutoencoderKLLTX2Video.from_pretrained(tiny_root / "diffusers" / "vae")
    assert vae.spatial_compression_ratio == preset.size_multiple == 32
    assert vae.temporal_compression_ratio == preset.frame_multiple == 8
    assert preset.round_frames(10) == 17
    w, h = preset.draft_size
    assert w % 32 == 0 and h % 32 == 0 and preset.refine_size == (2 * w, 2 * h)


def test_gguf_transformer_loads_quantized_and_close_to_original(tiny_root: Path) -> None:
    import torch
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    from pipeline.memory.planner import StagePlan
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    tr = ltx2.load_transformer(get_preset("tiny"), StagePlan(name="cpu"))
    quantized = {n: p for n, p in tr.named_parameters() if isinstance(p, GGUFParameter)}
    assert len(quantized) >= 20
    ref = LTX2VideoTransformer3DModel.from_pretrained(tiny_root / "diffusers" / "transformer").state_dict()
    name = "transformer_blocks.0.attn1.to_q.base_layer.weight"
    assert name in quantized  # the LoRA wraps the quantized projection
    w = dequantize_gguf_tensor(quantized[name]).float()
    r = ref["transformer_blocks.0.attn1.to_q.weight"]
    assert w.shape == r.shape
    assert (w - r).abs().max() <= 0.01 * r.abs().max()
    # The distilled LoRA is loaded and weightable.
    assert "distilled" in tr.peft_config
    ltx2.set_lora_strength(tr, 0.3)
    assert torch.is_tensor(tr.transformer_blocks[0].attn1.to_q.lora_A["distilled"].weight)


def test_real_preset_says_what_is_missing_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models.registry import get_preset

    monkeypatch.setenv("SULPHUR_HOME", str(tmp_path))
    preset = get_preset("sulphur2-ltx23")
    roles = {f.role for f in preset.missing()}
    assert {"transformer_gguf", "diffusers", "lora", "upsampler", "upscaler", "enhancer"} <= roles
    gguf = preset.file("transformer_gguf")
    assert "SULPHUR_LTX_GGUF" in gguf.where() and "Q3_K_M" in gguf.where()
    # The default place resolves under $SULPHUR_HOME; an env var overrides it.
    (tmp_path / "sulphur2").mkdir()
    (tmp_path / "sulphur2" / "sulphur_dev-Q3_K_M.gguf").write_bytes(b"x")
    assert gguf.local_path() == tmp_path / "sulphur2" / "sulphur_dev-Q3_K_M.gguf"
    other = tmp_path / "elsewhere.gguf"
    other.write_bytes(b"y")
    monkeypatch.setenv("SULPHUR_LTX_GGUF", str(other))
    assert gguf.local_path() == other


def test_model_identity_follows_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models import ltx2, tiny_ltx2
    from pipeline.models.registry import get_preset

    tiny = ltx2.model_identity(get_preset("tiny"))
    assert tiny == ltx2.model_identity(get_preset("tiny"))
    assert f"v{tiny_ltx2.BUILDER_VERSION}" in tiny and tiny_ltx2.config_digest() in tiny

    monkeypatch.setenv("SULPHUR_HOME", str(tmp_path))
    real = get_preset("sulphur2-ltx23")
    lora = tmp_path / "lora.safetensors"
    monkeypatch.setenv("SULPHUR_LTX_LORA", str(lora))
    missing = ltx2.model_identity(real)
    lora.write_bytes(b"a" * 10)
    present = ltx2.model_identity(real)
    lora.write_bytes(b"a" * 11)
    assert len({missing, present, ltx2.model_identity(real)}) == 3


@pytest.mark.slow
def test_two_processes_build_once(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    code = ("import sys; from pathlib import Path; from pipeline.models.tiny_ltx2 import build_tiny; "
            "print(build_tiny(Path(sys.argv[1])))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert {o[0].strip() for o in outs} == {str(root)}
    assert (root / ".complete").is_file()
    assert not list(tmp_path.glob(".tiny.*.partial"))


def test_the_tokenizer_pads_on_the_left_whatever_its_file_says(tiny_root: Path, tmp_path: Path) -> None:
    """Embeddings are made left-padded (diffusers' encode_prompt), and the connectors are told the
    held tokenizer's side: a process reading cached embeddings must not tell them the file's side."""
    import dataclasses
    import json
    import shutil

    from transformers import AutoTokenizer

    from pipeline.models import ltx2, tiny_ltx2
    from pipeline.models.registry import ModelFile, get_preset

    folder = tmp_path / "diffusers"
    shutil.copytree(tiny_root / tiny_ltx2.DIFFUSERS_DIR / "tokenizer", folder / "tokenizer")
    config = folder / "tokenizer" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "padding_side": "right"}))
    assert AutoTokenizer.from_pretrained(folder / "tokenizer").padding_side == "right"
    preset = dataclasses.replace(get_preset("tiny"), name="right-padded", builder=None,
                                 files=(ModelFile("diffusers", "diffusers folder", path=str(folder)),))
    assert ltx2.load_tokenizer(preset).padding_side == "left"
