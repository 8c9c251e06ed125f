"""The Real-ESRGAN x2plus twin is written as xinntao publishes RealESRGAN_x2plus.pth, and the
loader a real file goes through (spandrel) receives every tensor of it.

The expected layout is restated here from basicsr's ``RRDBNet`` (``archs/rrdbnet_arch.py``:
``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1/2``, ``conv_hr``,
``conv_last``; for scale 2 a 2x pixel-unshuffle first, so 12 input channels), not read from
the builder; the full-size parameter count is the published file's, 16,703,171.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.esrgan import build_tiny_x2plus, load_upscaler

GROWTH = 32  # basicsr's num_grow_ch for every Real-ESRGAN RRDBNet


def published_layout(nf: int, nb: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of an RRDBNet x2 state dict, in basicsr's module order."""
    out: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int) -> None:
        out[f"{name}.weight"], out[f"{name}.bias"] = (cout, cin, 3, 3), (cout,)

    conv("conv_first", nf, 3 * 4)
    for b in range(nb):
        for r in (1, 2, 3):
            for k in range(1, 6):
                conv(f"body.{b}.rdb{r}.conv{k}", nf if k == 5 else GROWTH, nf + (k - 1) * GROWTH)
    conv("conv_body", nf, nf)
    for name in ("conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", 3, nf)
    return out


def spandrel_name(name: str, nb: int) -> str:
    """Where spandrel's ESRGAN (the old ``model.N`` layout) keeps a basicsr tensor."""
    stem, kind = name.rsplit(".", 1)
    if stem.startswith("body."):
        _, b, rdb, conv = stem.split(".")
        return f"model.1.sub.{b}.{rdb.upper()}.{conv}.0.{kind}"
    index = {"conv_first": "model.0", "conv_body": f"model.1.sub.{nb}", "conv_up1": "model.3",
             "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}[stem]
    return f"{index}.{kind}"


def test_full_size_layout_has_the_published_parameter_count() -> None:
    assert sum(int(torch.Size(s).numel()) for s in published_layout(64, 23).values()) == 16_703_171


@pytest.mark.parametrize(("nf", "nb"), [(16, 1), (64, 23)])
def test_twin_is_written_in_the_published_layout(tmp_path: Path, nf: int, nb: int) -> None:
    path = build_tiny_x2plus(tmp_path / "RealESRGAN_x2plus.pth", nf=nf, nb=nb)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == ["params_ema"]
    state = raw["params_ema"]
    expected = published_layout(nf, nb)
    assert list(state) == list(expected)  # names and order
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert all(v.dtype == torch.float32 for v in state.values())


def test_spandrel_detects_x2_esrgan_and_receives_every_tensor(tmp_path: Path) -> None:
    nf, nb = 16, 2
    path = build_tiny_x2plus(tmp_path / "RealESRGAN_x2plus.pth", nf=nf, nb=nb)
    source = torch.load(path, map_location="cpu", weights_only=True)["params_ema"]

    desc = load_upscaler(path, device="cpu", dtype=torch.float32)  # the loader a real file goes through
    assert (desc.architecture.id, desc.scale) == ("ESRGAN", 2)
    assert "unshuffle" in desc.tags and f"{nb}nb" in desc.tags and f"{nf}nf" in desc.tags
    loaded = desc.model.state_dict()
    assert len(loaded) == len(source)
    for name, tensor in source.items():
        assert torch.equal(loaded[spandrel_name(name, nb)], tensor), name
