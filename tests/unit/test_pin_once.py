"""The streamed transformer is packed and pinned once per render: draft ↔ refine switches of
a two-segment render re-use the packed blocks (the real tiny GGUF transformer, on the CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pipeline.memory.offload import BlockStreamer
from pipeline.memory.plan import StagePlan

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from ltx2_inputs import ltx2_step_inputs  # noqa: E402


def _plan(resident_blocks: int, dequant: str = "block") -> StagePlan:
    return StagePlan(name=f"stream{resident_blocks}", device="cpu", offload="group_block", dtype="float32",
                     options={"streamer": "sulphur", "resident_blocks": resident_blocks, "dequant": dequant})


def _run(model: torch.nn.Module) -> torch.Tensor:
    inputs = ltx2_step_inputs(model.config, (128, 64), 9, audio_tokens=8, text_tokens=8,
                              dtype=torch.float32, seed=1)
    with torch.no_grad():
        video, audio = model(**inputs)
    return torch.cat([video.flatten(), audio.flatten()])


def test_two_segments_pack_each_block_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.memory.loaded import LoadedModels
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset, models = get_preset("tiny"), LoadedModels()
    reference = _run(ltx2.load_transformer(preset, StagePlan(name="cpu")))
    packs: list[int] = []
    real_pack = BlockStreamer._pack

    def counting_pack(self: BlockStreamer, *args: object, **kwargs: object) -> object:
        packs.append(1)
        return real_pack(self, *args, **kwargs)

    monkeypatch.setattr(BlockStreamer, "_pack", counting_pack)
    held = None
    for _segment in range(2):
        for resident in (0, 1):  # draft streams every block, refine keeps one on the device
            model = ltx2.component(models, preset, "transformer", _plan(resident))
            assert held is None or model is held
            held = model
            st: BlockStreamer = model._sulphur_streamer
            assert len(st.streamed) == len(model.transformer_blocks) - resident
            assert torch.equal(_run(model), reference)
    assert len(packs) == len(held.transformer_blocks), "each block packed (and pinned) once in the render"


def test_another_dequant_mode_repacks() -> None:
    """The packing depends on the dequantization mode: that switch is refused in place."""
    from pipeline.memory.loaded import LoadedModels
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset, models = get_preset("tiny"), LoadedModels()
    model = ltx2.component(models, preset, "transformer", _plan(0, "block"))
    first = model._sulphur_streamer
    assert not first.restream(1, "layer")
    again = ltx2.component(models, preset, "transformer", _plan(1, "layer"))
    assert again._sulphur_streamer is not first and not again._sulphur_streamer.block_dequant
