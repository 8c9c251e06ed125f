"""The text encoder is evicted after each prompt unless the host can hold every component at once."""

from __future__ import annotations

import pytest
import torch

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import StagePlan, cpu_ladder, plan_ladder
from pipeline.models import ltx2
from pipeline.models.registry import get_preset
from pipeline.project.storyboard import Project


@pytest.mark.parametrize(("host_gb", "mode"), [(32, "disk"), (64, "group")])
def test_the_planner_keeps_the_encoder_when_it_fits_beside_the_rest(host_gb: int, mode: str) -> None:
    """At 64 GiB every component fits at once; at 32 GiB the encoder lives on disk with a
    few layers in RAM, which fits too. A plan that drops the transformer to encode keeps nothing."""
    ladder = plan_ladder("draft", get_preset("sulphur2-ltx23"), Project(vram_budget_gb=8, ram_budget_gb=host_gb),
                         "cuda", frames=121)
    draft = ladder[0]
    assert draft.options["text_encoder"] == mode and draft.options["keep_text_encoder"]
    assert "kept in host RAM" in " ".join(draft.notes)
    evicting = [p for p in ladder if p.options["evict"]]
    assert evicting and not any(p.options["keep_text_encoder"] for p in evicting)


def test_with_too_little_host_for_everything_a_ram_resident_encoder_is_evicted() -> None:
    ladder = plan_ladder("draft", get_preset("sulphur2-ltx23"), Project(vram_budget_gb=8, ram_budget_gb=44),
                         "cuda", frames=121)
    in_ram = [p for p in ladder if p.options["text_encoder"] in ("group", "cpu") and not p.options["evict"]]
    assert in_ram and not any(p.options["keep_text_encoder"] for p in in_ram)


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loads: list[str] = []
    real = ltx2._load_diffusers_component

    def counting(preset, name, plan):  # noqa: ANN001, ANN202
        loads.append(name)
        return real(preset, name, plan)

    monkeypatch.setattr(ltx2, "_load_diffusers_component", counting)
    return loads


@pytest.mark.parametrize("keep", [True, False])
def test_a_kept_encoder_is_loaded_once_for_several_prompts(keep: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = _count_loads(monkeypatch)
    preset, models = get_preset("tiny"), LoadedModels()
    plan = StagePlan(name="cpu", device="cpu", offload="resident", dtype="float32",
                     options={"keep_text_encoder": keep})
    first = ltx2.encode_prompt(models, preset, plan, "a lighthouse at dawn")
    second = ltx2.encode_prompt(models, preset, plan, "a storm rolls in")
    again = ltx2.encode_prompt(models, preset, plan, "a lighthouse at dawn")
    assert loads.count("text_encoder") == (1 if keep else 3)
    assert (f"{preset.name}:text_encoder" in models) is keep
    assert not torch.equal(first.embeds, second.embeds)
    assert torch.equal(first.embeds, again.embeds)  # a kept encoder encodes exactly as a fresh one


def test_the_cpu_plan_keeps_it_and_the_lean_rung_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SULPHUR_DEVICE_LADDER", "cpu,cpu-lean")
    cpu, lean = cpu_ladder()
    assert cpu.options.get("keep_text_encoder") and not lean.options.get("keep_text_encoder")


def test_a_new_job_drops_what_other_presets_left_loaded(tmp_path) -> None:  # noqa: ANN001
    """A worker keeps models between jobs; a job evicts those of presets it does not use."""
    import shutil
    import threading
    from pathlib import Path

    from pipeline.project.storyboard import load
    from pipeline.render.job import RenderJob
    from pipeline.render.runner import Renderer

    story = tmp_path / "story.toml"
    shutil.copy(Path(__file__).resolve().parents[2] / "storyboards" / "example.toml", story)
    models = LoadedModels()
    models.get("sulphur2-ltx23:text_encoder", lambda: "another job's encoder")
    models.get("tiny:transformer", lambda: "this preset's transformer")
    models.get("upscaler", lambda: "shared upscaler")
    Renderer.create(RenderJob.resolve(load(story)), emit=lambda e: None, cancel=threading.Event(), job_id="t", models=models)
    assert sorted(models.names()) == ["tiny:transformer", "upscaler"]
