"""The memory planner: plans per budget pair, ladder order, refusals, OOM fallback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.memory.planner import (
    Budgets,
    GiB,
    PlanError,
    StagePlan,
    beside_held,
    component_sizes,
    detect_budgets,
    is_oom,
    oom_kind,
    plan_ladder,
)
from pipeline.models.registry import ModelFile, Preset
from pipeline.project.storyboard import Project

REAL = Preset(name="sulphur2-ltx23", family="ltx2", description="22B Q3_K_M test preset")
STAGES = ("enhance", "draft", "refine", "upscale")


def ladders(vram_gb: float, host_gb: float, project: Project | None = None) -> dict[str, list[StagePlan]]:
    project = project or Project(vram_budget_gb=vram_gb, ram_budget_gb=host_gb)
    b = Budgets.from_gb(vram_gb, host_gb)
    return {s: plan_ladder(s, REAL, project, "cuda", budgets=b) for s in STAGES}


def test_cpu_is_one_plan_unless_a_lean_rung_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SULPHUR_DEVICE_LADDER", raising=False)
    plans = plan_ladder("draft", REAL, Project(), device="cpu")
    assert [(p.device, p.offload) for p in plans] == [("cpu", "resident")]
    monkeypatch.setenv("SULPHUR_DEVICE_LADDER", "cpu,cpu-lean")
    lean = plan_ladder("refine", REAL, Project(), device="cpu")
    assert [p.name for p in lean] == ["cpu", "cpu-lean"]
    assert lean[1].vae_tiling and lean[1].options["evict_between_stages"]


@pytest.mark.parametrize("vram_gb", [6, 8, 12, 24])
@pytest.mark.parametrize("host_gb", [16, 32, 64])
def test_every_plan_fits_both_budgets(vram_gb: int, host_gb: int) -> None:
    b = Budgets.from_gb(vram_gb, host_gb)
    for stage, plans in ladders(vram_gb, host_gb).items():
        assert plans, stage
        for p in plans:
            assert (p.vram_bytes > 0 or p.device == "cpu") and p.vram_bytes <= b.vram, (stage, p.describe())
            assert p.host_bytes <= b.host, (stage, p.describe())
            assert p.device == "cuda" or p.options.get("n_gpu_layers") == 0


def test_weights_that_fit_stay_resident() -> None:
    big = ladders(24, 64)
    assert big["draft"][0].offload == "resident"
    assert big["refine"][0].offload == "resident"
    assert big["enhance"][0].options["n_gpu_layers"] == -1


def test_upscale_fits_beside_held_models_before_it_evicts_them() -> None:
    ladder = ladders(8, 32)["upscale"]
    assert [p.name for p in beside_held(ladder, None)] == [p.name for p in ladder]
    # Room for one frame's batch beside the held transformer: that rung first, the rest after
    # (each tried after an OOM has evicted everything), none lost.
    one = next(p for p in ladder if p.name == "batch1")
    reordered = beside_held(ladder, one.vram_bytes + GiB // 8)
    fitting = [p for p in reordered if p.vram_bytes <= one.vram_bytes + GiB // 8]
    assert reordered[0].name == "batch1" and reordered[:len(fitting)] == fitting
    assert sorted(p.name for p in reordered) == sorted(p.name for p in ladder)
    assert [p.name for p in reordered[len(fitting):]] == [p.name for p in ladder if p not in fitting]
    # No room at all: the ladder as it was (its first OOM evicts the held models).
    assert [p.name for p in beside_held(ladder, 0)] == [p.name for p in ladder]


def test_seed_machine_8gb_32gb() -> None:
    """The brief's laptop: the 11 GB transformer streams, the text encoder runs without
    pinning 24 GB, everything stays inside 8 GiB of VRAM and 32 GiB of RAM."""
    lad = ladders(8, 32)
    weights = component_sizes(REAL)["transformer"].nbytes
    draft = lad["draft"][0]
    assert draft.offload == "group_block" and draft.options["streamer"] == "sulphur"
    assert draft.options["text_encoder"] in ("group", "disk")
    # Sulphur's streamer pins the weights in place: one host copy
    assert draft.options["pinned_bytes"] == weights
    assert weights <= draft.host_bytes < 2 * weights
    # diffusers' use_stream group offload keeps a pinned copy beside the pageable one: counted
    # 2×, so the lean streamer (no more VRAM, half the host) leaves it out of this ladder
    from pipeline.memory.planner import _weights_mode

    peer = _weights_mode(component_sizes(REAL)["transformer"], "group_block", 0, stream=True, low_cpu=False)
    assert peer.pinned == weights and peer.host >= 2 * weights
    # ... it stays only as a fallback after the streamer, for the VRAM the streamer's slots and
    # dequant scratch hold beside the decode
    lean = next(p for p in lad["draft"] if p.name.startswith("stream-lean"))
    assert lean.host_bytes < peer.host
    names = [p.name for p in lad["draft"]]
    for i, p in enumerate(lad["draft"]):
        if p.name.startswith("group_block+stream+vaetiles"):
            assert names.index(lean.name) < i and p.vram_bytes < lean.vram_bytes
    assert lad["refine"][0].options.get("streamer") == "sulphur"
    assert lad["upscale"][0].options["esrgan_tile"] == 0  # ×2plus needs no tiles on 8 GB


def test_streamer_keeps_blocks_resident_when_vram_allows() -> None:
    small = ladders(8, 32)["refine"][0]
    big = ladders(12, 32)["refine"][0]
    assert big.options["streamer"] == small.options["streamer"] == "sulphur"
    assert big.options["resident_blocks"] > small.options["resident_blocks"]
    assert big.vram_bytes <= Budgets.from_gb(12, 32).vram


def test_a_streamer_that_runs_out_of_vram_falls_back_to_streaming_every_block() -> None:
    """The first fallback keeps the streamer and drops only its resident blocks: the held
    model is re-streamed in place (seconds) instead of reloaded under another offload mode."""
    refine = ladders(8, 32)["refine"]
    first, second = refine[0], refine[1]
    assert first.options["streamer"] == second.options["streamer"] == "sulphur"
    assert first.options["resident_blocks"] > 0 and second.options["resident_blocks"] == 0
    assert second.name.startswith("stream-lean") and second.vram_bytes < first.vram_bytes
    assert second.host_bytes == first.host_bytes  # the same weights, just fewer of them on the GPU


def test_make_room_can_keep_what_will_be_reused() -> None:
    from pipeline.memory.loaded import LoadedModels

    models = LoadedModels()
    models.get("a", lambda: "streamed")
    models.get("b", lambda: "vae")
    assert models.make_room(keep=lambda name, obj: obj == "streamed") == ["b"]
    assert models.names() == ["a"]
    assert models.make_room() == ["a"]
    assert models.names() == []


def test_make_room_drops_exactly_what_it_is_told_and_frees_it() -> None:
    import weakref

    from pipeline.memory.loaded import LoadedModels

    class Weights:
        pass

    models = LoadedModels()
    held = {name: weakref.ref(models.get(name, Weights)) for name in ("tiny:transformer", "tiny:vae", "upscaler")}
    assert models.make_room(drop=["tiny:vae", "not-held", "tiny:vae"]) == ["tiny:vae"]
    assert models.names() == ["tiny:transformer", "upscaler"]
    assert held["tiny:vae"]() is None and held["upscaler"]() is not None  # no other reference kept it


def test_small_host_avoids_pinned_copy() -> None:
    plans = ladders(8, 16)["refine"]
    weights = component_sizes(REAL)["transformer"].nbytes
    assert all(p.options["pinned_bytes"] < weights for p in plans)


@pytest.mark.parametrize("vram_gb,host_gb", [(8, 32), (24, 64), (6, 16)])
def test_ladder_goes_from_fast_to_lean(vram_gb: int, host_gb: int) -> None:
    for stage in ("draft", "refine"):
        plans = ladders(vram_gb, host_gb)[stage]
        # every fallback is leaner than each plan before it in VRAM or in host RAM
        for i, p in enumerate(plans):
            for q in plans[:i]:
                assert p.vram_bytes < q.vram_bytes or p.host_bytes < q.host_bytes, (p.name, q.name)
        assert plans[-1].vram_bytes == min(p.vram_bytes for p in plans)
    upscale = ladders(vram_gb, host_gb)["upscale"]
    vrams = [p.vram_bytes for p in upscale]
    assert vrams == sorted(vrams, reverse=True)


def test_longer_and_larger_jobs_need_more_vram() -> None:
    b = Budgets.from_gb(80, 256)
    short = plan_ladder("refine", REAL, Project(), "cuda", budgets=b, frames=49)[0]
    long = plan_ladder("refine", REAL, Project(), "cuda", budgets=b, frames=241)[0]
    big = plan_ladder("refine", REAL, Project(refine_size=(1920, 1088)), "cuda", budgets=b, frames=49)[0]
    assert short.vram_bytes < long.vram_bytes
    assert short.vram_bytes < big.vram_bytes


def test_refusal_names_component_amount_and_a_setting_that_fits() -> None:
    project = Project(refine_size=(1280, 704))
    with pytest.raises(PlanError) as info:
        plan_ladder("refine", REAL, project, "cuda", budgets=Budgets.from_gb(3.5, 64))
    err = info.value
    msg = str(err)
    assert msg.startswith("refine: transformer needs ")
    assert "GiB of VRAM" in msg and "vram_budget_gb = " in msg and "refine_size such as" in msg
    assert err.need > err.have
    suggested = int(msg.split("vram_budget_gb = ")[1].split()[0])
    assert plan_ladder("refine", REAL, project, "cuda", budgets=Budgets.from_gb(suggested, 64))
    w, h = (int(v) for v in msg.split("refine_size such as [")[1].split("]")[0].split(", "))
    assert plan_ladder("refine", REAL, Project(refine_size=(w, h)), "cuda", budgets=Budgets.from_gb(3.5, 64))


def test_refusal_for_host_ram() -> None:
    with pytest.raises(PlanError) as info:
        plan_ladder("draft", REAL, Project(), "cuda", budgets=Budgets.from_gb(24, 4))
    msg = str(info.value)
    assert "host RAM" in msg and "ram_budget_gb = " in msg
    suggested = int(msg.split("ram_budget_gb = ")[1].split()[0])
    assert plan_ladder("draft", REAL, Project(), "cuda", budgets=Budgets.from_gb(24, suggested))


def test_budgets_come_from_settings_else_detection() -> None:
    set_ = detect_budgets(Project(vram_budget_gb=8, ram_budget_gb=32), device="cuda")
    assert set_.vram_setting == 8 and set_.host_setting == 32
    assert set_.vram == Budgets.from_gb(8, 32).vram and set_.host == Budgets.from_gb(8, 32).host
    detected = detect_budgets(Project(), device="cpu")
    assert detected.host_setting is None and detected.host > 0


def test_measured_file_size_wins(tmp_path) -> None:
    gguf = tmp_path / "t.gguf"
    gguf.write_bytes(b"\0" * 12345)
    preset = replace(REAL, files=(ModelFile("transformer_gguf", "transformer", path=str(gguf)),))
    assert component_sizes(preset)["transformer"].nbytes == 12345
    assert component_sizes(replace(REAL, extra={"memory": {"transformer": {"params": 2e9}}}))["transformer"].nbytes \
        == int(2e9 * 0.52)


def test_oom_classification() -> None:
    assert oom_kind(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "cuda"
    assert oom_kind(RuntimeError("CUDA error: out of memory")) == "cuda"
    assert oom_kind(MemoryError()) == "host"
    try:  # a real failed host allocation
        torch.empty(2**50, dtype=torch.uint8)
    except RuntimeError as exc:
        assert oom_kind(exc) == "host"
    assert not is_oom(ValueError("bad prompt"))
    assert not is_oom(RuntimeError("shape mismatch"))


def _seed_ladder() -> list[StagePlan]:
    return ladders(8, 32)["draft"]


def test_describe_is_one_readable_line() -> None:
    text = _seed_ladder()[0].describe()
    assert "\n" not in text and "group_block+stream" in text and "GiB VRAM" in text
    assert GiB == 1024**3


def test_other_families_use_their_recipe_ladders() -> None:
    from pipeline.memory import recipes
    from pipeline.models.registry import all_presets

    wan = next(p for p in all_presets() if p.family == "wan" and p.builder is None)
    plans = plan_ladder("draft", wan, Project(), "cuda", budgets=Budgets.from_gb(12, 64))
    # every recipe of the preset, measured-to-fit ones first
    assert sorted(p.options["recipe"] for p in plans) == sorted(r.name for r in recipes.ladder(wan))
    assert plan_ladder("refine", wan, Project(), "cuda")[0].device == "cpu"
    assert plan_ladder("upscale", wan, Project(), "cuda", budgets=Budgets.from_gb(12, 64))[0].options["esrgan_batch"]


def test_the_text_encoders_disk_copy_is_named_after_its_weights(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers reuses group files it finds on disk: two models must never share a copy,
    and only the current model's copy is kept (24 GB each for the real encoder)."""
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    monkeypatch.setenv("SULPHUR_HOME", str(tmp_path))
    plan = StagePlan(name="stream", device="cuda", offload="group_block", options={"text_encoder": "disk"})
    tiny_dir = ltx2._text_encoder_plan(plan, get_preset("tiny")).options["offload_to_disk_path"]
    assert tiny_dir == ltx2._text_encoder_plan(plan, get_preset("tiny")).options["offload_to_disk_path"]
    (tmp_path / "offload" / "text_encoder").mkdir(parents=True, exist_ok=True)
    Path(tiny_dir).mkdir()
    (Path(tiny_dir) / "group_x.safetensors").write_bytes(b"tiny")
    other = ltx2._text_encoder_plan(plan, get_preset("ltx2-19b-random")).options["offload_to_disk_path"]
    assert other != tiny_dir and Path(other).parent == Path(tiny_dir).parent
    assert not Path(tiny_dir).exists()  # the other model's copy is gone, not reused


def test_measured_safetensors_count_float32_at_the_16_bits_they_load_in(tmp_path) -> None:
    """diffusers/LTX-2.3-Diffusers stores Gemma and the connectors in fp32 (48.75 GB on disk); the
    loaders cast them to bf16, so the planner must not take the file size for their footprint."""
    from safetensors.torch import save_file

    folder = tmp_path / "diffusers"
    (folder / "connectors").mkdir(parents=True)
    save_file({"w": torch.zeros(1000, 1000), "ids": torch.zeros(1000, dtype=torch.int64)},
              str(folder / "connectors" / "model.safetensors"))
    file_size = (folder / "connectors" / "model.safetensors").stat().st_size
    preset = replace(REAL, files=(ModelFile("diffusers", "folder", path=str(folder)),))
    loaded = component_sizes(preset)["connectors"].nbytes
    assert loaded == file_size - 2 * 1000 * 1000  # fp32 at 2 bytes; the int64 ids as stored
