"""A published GGUF's tensors mapped from the file, not copied out of it (published.read_gguf):
the same tensors as diffusers' ``load_gguf_checkpoint``, without a second host copy of the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.gguf_writer import write_random_gguf
from pipeline.models.published import WeightsMismatch, read_gguf

MiB = 1 << 20


def _anon_bytes() -> int:
    """This process's anonymous resident memory (the heap a copy lands in; mapped file pages are not counted)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no RssAnon in /proc/self/status")


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    # 72 MiB of Q4_0 blocks, plus Q8_0, F16 and F32 tensors as a transformer GGUF mixes them
    write_random_gguf(path, "ltxv", [("blocks.0.ff.weight", (8192, 16384), "Q4_0"),
                                     ("blocks.0.attn.weight", (1024, 1024), "Q8_0"),
                                     ("proj_in.weight", (256, 128), "F16"), ("norm.bias", (4096,), "F32")])
    return path


def test_the_mapped_tensors_are_the_ones_diffusers_reads(gguf_file: Path) -> None:
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import GGUFParameter

    ours, theirs = read_gguf(gguf_file), load_gguf_checkpoint(str(gguf_file))
    assert ours.keys() == theirs.keys()
    for name, want in theirs.items():
        got = ours[name]
        assert type(got) is type(want) and got.dtype == want.dtype and got.shape == want.shape, name
        assert getattr(got, "quant_type", None) == getattr(want, "quant_type", None), name
        assert torch.equal(got, want), name
    assert isinstance(ours["blocks.0.ff.weight"], GGUFParameter)


def test_reading_a_gguf_does_not_copy_it_into_the_heap(gguf_file: Path) -> None:
    size = gguf_file.stat().st_size
    assert size > 60 * MiB
    before = _anon_bytes()
    tensors = read_gguf(gguf_file)
    total = sum(int(t.as_tensor().sum()) for t in tensors.values() if hasattr(t, "as_tensor"))  # every byte read
    grown = _anon_bytes() - before
    assert total > 0 and grown < size // 8, f"{grown / MiB:.0f} MiB of heap for a {size / MiB:.0f} MiB file"


def test_a_write_stays_private_to_the_process(gguf_file: Path) -> None:
    before = gguf_file.read_bytes()
    tensors = read_gguf(gguf_file)
    tensors["norm.bias"].fill_(7.0)  # copy-on-write: the file is the user's
    assert gguf_file.read_bytes() == before


def test_a_type_diffusers_cannot_dequantize_names_the_tensor(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "ltxv")
    w.add_tensor("odd.weight", np.zeros((4, 32), dtype=np.float64))  # F64: no GGUF kernel in diffusers
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(WeightsMismatch, match="odd.weight"):
        read_gguf(path)
