"""A LoRA part read alone (ltx2.lora_parts(only=...)): the same tensors as that part of the whole
file, nothing of the other part, and the same strictness about keys of no known part."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.models import ltx2, tiny_ltx2
from pipeline.models.published import WeightsMismatch


@pytest.fixture(scope="module")
def lora() -> Path:
    return tiny_ltx2.build_tiny() / tiny_ltx2.LORA_FILE


@pytest.mark.parametrize("part,other", [("transformer", "connectors"), ("connectors", "transformer")])
def test_a_part_read_alone_is_that_part_of_the_whole_file(lora: Path, part: str, other: str) -> None:
    whole, alone = ltx2.lora_parts(lora), ltx2.lora_parts(lora, only=part)
    assert whole[part] and alone[part].keys() == whole[part].keys() and not alone[other]
    assert all(torch.equal(alone[part][k], whole[part][k]) for k in whole[part])


def test_a_key_of_no_part_is_refused_when_a_part_is_read_alone(lora: Path, tmp_path: Path) -> None:
    tensors = dict(ltx2.lora_parts(lora)["transformer"])  # diffusers' own names
    tensors["vae.decoder.lora_A.weight"] = torch.zeros(2, 2)
    odd = tmp_path / "odd.safetensors"
    save_file(tensors, str(odd))
    assert "vae.decoder.lora_A.weight" in load_file(str(odd))
    for only in (None, "transformer", "connectors"):
        with pytest.raises(WeightsMismatch, match="vae.decoder"):
            ltx2.lora_parts(odd, only=only)
