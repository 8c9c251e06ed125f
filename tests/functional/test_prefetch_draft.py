"""A cold draft has the kernel read its weights while the text encoder computes (issue 20 goal 3):
the real tiny stack, the real draft stage and the real prefetch, watched by spies that pass through."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.plan import StagePlan
from pipeline.models import ltx2
from pipeline.models.prefetch import Prefetch, weight_files
from pipeline.models.registry import get_preset
from pipeline.stages import draft as draft_module
from pipeline.stages.base import StageContext
from pipeline.stages.draft import DraftStage
from pipeline.wire.protocol import Log
from tests.functional.test_draft_refine import Runner, make_job

pytestmark = pytest.mark.slow


def tiny_root() -> Path:
    return ltx2.require(get_preset("tiny"), "transformer_gguf").parents[1]


def test_the_draft_files_are_the_components_not_yet_held() -> None:
    preset = get_preset("tiny")
    root = tiny_root()
    gguf, lora = ltx2.require(preset, "transformer_gguf"), ltx2.require(preset, "lora")
    parts = [root / "diffusers" / name for name in ("vae", "audio_vae", "vocoder", "connectors")]
    models = LoadedModels()
    assert ltx2.draft_files(models, preset) == [gguf, lora, *parts], "load order: transformer and LoRA first"
    files = [f for f, _ in weight_files(ltx2.draft_files(models, preset))]
    assert root / "diffusers" / "vae" / "diffusion_pytorch_model.safetensors" in files
    assert not any("text_encoder" in f.parts or "upsampler" in str(f) for f in files), "not what the draft reads"

    models.get("tiny:transformer", object)
    assert ltx2.draft_files(models, preset) == [lora, *parts], "the connectors still read the LoRA"
    for name in ("connectors", "vae", "audio_vae", "vocoder"):
        models.get(f"tiny:{name}", object)
    assert ltx2.draft_files(models, preset) == []
    assert ltx2.draft_files(LoadedModels(), get_preset("ltx2-19b-random")) == [], "weights built in memory"


def test_the_encoder_reports_loaded_before_it_computes() -> None:
    preset, models = get_preset("tiny"), LoadedModels()
    plan = StagePlan(name="cpu")
    held: list[bool] = []
    ltx2.encode_prompts(models, preset, plan, ["a boat"], on_loaded=lambda: held.append("tiny:text_encoder" in models))
    assert held == [True] and "tiny:text_encoder" not in models, "called once, with the encoder loaded"


def test_a_cold_draft_prefetches_its_weights_once_the_encoder_is_loaded(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    models = LoadedModels()
    calls: list[tuple[list[Path], bool, Prefetch]] = []
    real_prefetch = draft_module.prefetch

    def prefetch_spy(paths: Any, **kwargs: Any) -> Prefetch:
        paths = list(paths)
        ahead = real_prefetch(paths, **kwargs)
        calls.append((paths, "tiny:text_encoder" in models, ahead))
        return ahead

    monkeypatch.setattr(draft_module, "prefetch", prefetch_spy)
    run = Runner(tmp_path, models)
    run(DraftStage(), make_job(tmp_path))

    (paths, encoder_loaded, ahead), = calls
    root = tiny_root()
    assert paths[0] == ltx2.require(get_preset("tiny"), "transformer_gguf")
    assert root / "diffusers" / "vae" in paths and root / "diffusers" / "connectors" in paths
    assert encoder_loaded, "the reads start once the encoder is loaded, while it computes"
    assert ahead.thread is not None
    ahead.thread.join(30)
    assert not ahead.thread.is_alive()
    logs = [e.message for e in run.events if isinstance(e, Log) and e.message.startswith("prefetch:")]
    assert logs == [f"prefetch: {len(ahead.files)} files, {ahead.nbytes / 1e9:.1f} GB"]
    loaded = [e.message for e in run.events if isinstance(e, Log) and e.message.startswith("draft: loaded ")]
    assert len(loaded) == 1, "where the cold start went after the text pass, once"
    parts = dict(part.split(" ", 1) for part in loaded[0].removeprefix("draft: loaded ").split(", "))
    assert sorted(parts) == sorted(ltx2.DRAFT_COMPONENTS), loaded[0]
    assert not parts["transformer"].startswith("held"), "loaded cold, however fast"

    # The next segment holds every component and finds its embeddings cached: nothing is read ahead.
    run.events.clear()
    run(DraftStage(), make_job(tmp_path))
    assert len(calls) == 1
    assert not [e for e in run.events if isinstance(e, Log) and e.message.startswith(("prefetch:", "draft: loaded"))]


def test_a_failed_text_pass_stops_the_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stops: list[threading.Event] = []
    real_prefetch = draft_module.prefetch

    def prefetch_spy(paths: Any, **kwargs: Any) -> Prefetch:
        stops.append(kwargs["stop"])
        return real_prefetch(paths, **kwargs)

    real_encode = ltx2.encode_prompts

    def encode_then_fail(*args: Any, **kwargs: Any) -> Any:
        real_encode(*args, **kwargs)
        raise RuntimeError("the pass failed after the encoder loaded")

    monkeypatch.setattr(draft_module, "prefetch", prefetch_spy)
    monkeypatch.setattr(ltx2, "encode_prompts", encode_then_fail)
    with pytest.raises(RuntimeError, match="pass failed"):
        Runner(tmp_path, LoadedModels())(DraftStage(), make_job(tmp_path))
    assert len(stops) == 1 and stops[0].is_set()


def test_an_encoder_reading_from_disk_keeps_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(draft_module, "prefetch", lambda *a, **k: calls.append(a))
    ctx = StageContext(emit=lambda e: None, cancel=threading.Event(), models=LoadedModels(),
                       plan=StagePlan(name="cpu", options={"text_encoder": "disk"}))
    draft_module.text_pass(ctx, make_job(tmp_path))
    assert calls == []


def test_component_timings_tell_a_load_from_a_held_component() -> None:
    preset, models, plan = get_preset("tiny"), LoadedModels(), StagePlan(name="cpu")
    first: ltx2.Timings = {}
    vae = ltx2.component(models, preset, "vae", plan, first)
    load, place = first["vae"]
    assert load is not None and load > 0 and place >= 0
    again: ltx2.Timings = {}
    assert ltx2.component(models, preset, "vae", plan, again) is vae
    assert again["vae"][0] is None, "held: nothing was loaded"
    assert ltx2.describe_timings({"vocoder": (0.04, 0.0), "connectors": (None, 0.3), "transformer": (6.6, 5.8)}) \
        == "transformer 6.6+5.8 s, connectors held+0.3 s, vocoder 0.0+0.0 s", "slowest first"
