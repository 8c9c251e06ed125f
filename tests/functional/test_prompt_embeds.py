"""The text encoder runs once per render for the whole storyboard, and its embeddings are
cached by content: the real tiny pipeline, the real Gemma 3 loader, counted by a spy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.render.runner import render
from pipeline.wire import protocol
from tests.functional.conftest import tiny_storyboard

pytestmark = pytest.mark.slow

SHOTS = [dict(id="a", prompt="a red boat on a calm sea", frames=9),
         dict(id="b", prompt="the boat sails towards a green island", frames=9),
         dict(id="c", prompt="the sun sets behind the island", frames=9)]


def _story(seed_c: int) -> str:
    shots = [dict(s) for s in SHOTS]
    shots[2]["seed"] = seed_c
    return tiny_storyboard(shots, title="embeds", fps=24, seed=5, output_size=[320, 180], enhance=False)


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count text-encoder loads (the real loader runs) and forward passes of what it loaded."""
    from transformers import Gemma3ForConditionalGeneration

    real = Gemma3ForConditionalGeneration.from_pretrained.__func__
    seen = {"loads": 0, "forwards": 0}

    def counting(cls: Any, *args: Any, **kwargs: Any) -> Any:
        result = real(cls, *args, **kwargs)
        # strict loads ask for the loading info: (model, info)
        model = result[0] if isinstance(result, tuple) else result
        seen["loads"] += 1
        model.register_forward_pre_hook(lambda *_: seen.__setitem__("forwards", seen["forwards"] + 1))
        return result

    monkeypatch.setattr(Gemma3ForConditionalGeneration, "from_pretrained", classmethod(counting))
    return seen


def test_one_encoder_pass_per_render_and_cache_hits_after_an_edit(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy(monkeypatch)
    path = tmp_path / "story.toml"
    path.write_text(_story(seed_c=7))
    render(path)
    assert seen == {"loads": 1, "forwards": 3}, "one load encodes all three shots' prompts"
    assert len(list((tmp_path / ".sulphur" / "cache" / "prompt_embeds").glob("*.safetensors"))) == 3

    # Edit the last shot (its seed): its draft runs again, its prompt's embeddings are a cache hit.
    path.write_text(_story(seed_c=8))
    events: list[protocol.Event] = []
    render(path, emit=events.append)
    ran = {(e.segment, e.stage) for e in events if isinstance(e, protocol.StageFinished)}
    assert ("c", "draft") in ran and ("a", "draft") not in ran
    assert seen == {"loads": 1, "forwards": 3}, "no text-encoder load on the re-render"


def test_cached_embeddings_equal_a_fresh_encode(tmp_path: Path) -> None:
    """Behaviour is unchanged: what the draft reads back is exactly what the encoder gives."""
    import threading

    import torch

    from pipeline.memory.loaded import LoadedModels
    from pipeline.memory.plan import StagePlan
    from pipeline.models import ltx2
    from pipeline.project.storyboard import load
    from pipeline.render.job import Overrides, RenderJob
    from pipeline.stages.base import StageContext
    from pipeline.stages.prompt_embeds import prompt_embeds

    path = tmp_path / "story.toml"
    path.write_text(_story(seed_c=7))
    seg = RenderJob.resolve(load(path), Overrides()).segment_job(1)
    seg.prompt = seg.segment.prompt
    plan = StagePlan(name="cpu", device="cpu", offload="resident", dtype="float32")
    models = LoadedModels()
    ctx = StageContext(emit=lambda e: None, cancel=threading.Event(), models=models, plan=plan)
    cached = prompt_embeds(ctx, seg)
    again = prompt_embeds(ctx, seg)  # read back from the file
    fresh = ltx2.encode_prompt(models, seg.preset, plan, seg.prompt)
    assert torch.equal(cached.embeds, fresh.embeds) and torch.equal(again.embeds, fresh.embeds)
    assert torch.equal(cached.mask, fresh.mask)
