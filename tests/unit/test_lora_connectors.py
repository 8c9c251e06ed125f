"""The distilled LoRA's text-connector part reaches the connectors, strictly.

Lightricks' LTX-2.3 distilled LoRA carries ``text_embedding_projection.*`` keys besides the
transformer's; diffusers' LTX-2 LoRA loader routes them to the connectors. Sulphur loads both
parts through the real diffusers/PEFT path, and any key that maps nowhere is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.memory.planner import StagePlan
from pipeline.models import ltx2, published, tiny_ltx2
from pipeline.models.registry import get_preset


@pytest.fixture(scope="module")
def root() -> Path:
    return tiny_ltx2.build_tiny()


def _connector_outputs(connectors: torch.nn.Module) -> list[torch.Tensor]:
    cfg = tiny_ltx2.CONNECTORS_CONFIG
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 8, cfg["caption_channels"], cfg["text_proj_in_factor"], generator=gen)
    mask = torch.ones(1, 8, dtype=torch.long)
    with torch.no_grad():
        return [t.clone() for t in connectors(hidden, mask)[:2]]


def test_the_tiny_lora_twin_carries_a_connector_part_in_the_published_layout(root: Path) -> None:
    keys = set(load_file(str(root / tiny_ltx2.LORA_FILE)))
    assert "text_embedding_projection.aggregate_embed.lora_A.weight" in keys
    assert "text_embedding_projection.aggregate_embed.lora_B.weight" in keys
    assert all(k.startswith(("diffusion_model.", "text_embedding_projection.")) for k in keys)


def test_the_connector_part_changes_the_connectors_and_removing_it_restores_them(root: Path) -> None:
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    preset, plan = get_preset("tiny"), StagePlan(name="cpu")
    base = _connector_outputs(published.load_folder(
        LTX2TextConnectors, root / tiny_ltx2.DIFFUSERS_DIR / "connectors", torch_dtype=torch.float32).eval())
    connectors = ltx2._load_diffusers_component(preset, "connectors", plan)
    assert "distilled" in connectors.peft_config
    ltx2.set_lora_strength(None, 0.0, connectors=connectors)
    off = _connector_outputs(connectors)
    ltx2.set_lora_strength(None, 1.0, connectors=connectors)
    on = _connector_outputs(connectors)
    assert not torch.allclose(off[0], on[0], atol=1e-4)
    connectors.delete_adapters("distilled")
    removed = _connector_outputs(connectors)
    for a, b in zip(base, removed, strict=True):
        assert torch.equal(a, b)


def test_a_renamed_connector_key_is_one_line_naming_the_file_and_key(root: Path, tmp_path: Path) -> None:
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    sd = load_file(str(root / tiny_ltx2.LORA_FILE))
    sd["text_embedding_projection.aggregate_embedX.lora_A.weight"] = sd.pop(
        "text_embedding_projection.aggregate_embed.lora_A.weight")
    bad = tmp_path / "renamed.safetensors"
    save_file(sd, str(bad))
    connectors = published.load_folder(LTX2TextConnectors, root / tiny_ltx2.DIFFUSERS_DIR / "connectors",
                                       torch_dtype=torch.float32)
    with pytest.raises(published.WeightsMismatch) as exc:
        ltx2.load_lora(connectors, bad, "distilled", part="connectors")
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(bad) in msg and "text_proj_inX.lora_A.weight" in msg
    assert not getattr(connectors, "peft_config", None)
