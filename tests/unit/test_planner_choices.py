"""The memory planner's choices as a user meets them (issue 24: the planner's surviving mutants).

Every test builds ladders from sizes and budgets only (no GPU, no weights): the chosen plan
fits, nothing faster that fits is skipped, a plan fits at exactly its own estimate and not a
byte less, the weight format / audio / CFG / frames / sizes each move the estimates the way
they must, estimates stay near what was measured, and refusals name a setting that works.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.memory.planner import (
    ESRGAN_COMPILE_MIN_FRAMES,
    Budgets,
    GiB,
    MiB,
    PlanError,
    StagePlan,
    audio_tokens,
    beside_held,
    component_sizes,
    cpu_ladder,
    detect_budgets,
    esrgan_compile_pays,
    is_oom,
    oom_kind,
    plan_ladder,
    plan_summary,
    video_tokens,
    vram_room,
)
from pipeline.models.registry import ModelFile, Preset, get_preset
from pipeline.project.storyboard import Project

ROOT = Path(__file__).resolve().parents[2]
GGUF = Preset(name="sulphur2-ltx23", family="ltx2", description="22B Q3_K_M, as published")
#: The same transformer stored in bf16 (a diffusers folder): the planner may store it in fp8.
BF16 = replace(GGUF, name="bf16-test", extra={"memory": {"transformer": {"fmt": "bfloat16", "params": 19e9}}})
#: ... and a preset that prefers fp8 storage when streaming.
BF16_FP8_FIRST = replace(BF16, name="bf16-fp8-first", extra={**BF16.extra, "stream_fp8": True})
HUGE = Budgets(vram=10_000 * GiB, host=10_000 * GiB)
STAGES = ("draft", "refine", "upscale", "enhance")


def ladder(stage: str, b: Budgets, preset: Preset = GGUF, project: Project | None = None,
           frames: int | None = 121) -> list[StagePlan]:
    return plan_ladder(stage, preset, project or Project(), "cuda", budgets=b, frames=frames)


def fits(p: StagePlan, b: Budgets) -> bool:
    return p.vram_bytes <= b.vram and p.host_bytes <= b.host


def base(p: StagePlan) -> str:
    """A transformer plan's rung, without its text placement and VAE tiles."""
    return p.name.split("/")[0].split("+vaetiles")[0]


def by_name(plans: list[StagePlan]) -> dict[str, StagePlan]:
    return {p.name: p for p in plans}


# --------------------------------------------------------------------------- choosing


GRID = [(v, h) for v in (4, 6, 8, 12, 16, 24, 48, 96) for h in (16, 24, 32, 48, 64, 128)]
#: The transformer rungs, fastest first (planner._TRANSFORMER_RUNGS, by the names plans carry).
RUNGS = ("resident", "model", "stream", "group_block+stream", "group_block+stream+lowmem",
         "group_leaf+stream+lowmem", "group_block", "group_block+mmap", "sequential", "sequential+mmap")


def rank(p: StagePlan) -> tuple[int, int, int]:
    """How fast (and exact) a transformer plan is: its rung, then stored weights before fp8 (lossy;
    the planner tries a rung's stored weights at every tile size first), then untiled before 512 px
    tiles before 256 px."""
    base = p.name.split("/")[0].split("+vaetiles")[0].replace("-lean", "")
    fp8 = int(p.options.get("weights") == "fp8")
    return RUNGS.index(base), fp8, (0, 512, 256).index(p.options["vae_tile"])


def candidates(stage: str, preset: Preset, b: Budgets, project: Project | None = None) -> list[StagePlan]:
    """Every plan the planner weighs for ``stage`` at ``b``, fastest first, before filtering."""
    from pipeline.memory import planner

    job = planner._job_from(preset, project or Project(), stage, 121)
    comps = component_sizes(preset)
    if stage == "upscale":
        return planner._upscale_plans(job, comps, "cuda")
    if stage == "enhance":
        return planner._enhance_plans(comps, "cuda")
    plans = planner._transformer_plans(stage, job, comps, "cuda", b)
    return planner._attach_text(plans, comps, b) if stage == "draft" else plans


@pytest.mark.parametrize("preset", [GGUF, BF16, BF16_FP8_FIRST], ids=lambda p: p.name)
@pytest.mark.parametrize("stage", STAGES)
def test_the_ladder_is_every_plan_that_fits_fastest_first_each_leaner_than_the_last(
        stage: str, preset: Preset) -> None:
    """Nothing faster that fits is skipped, nothing that fits and is leaner is dropped."""
    for vram_gb, host_gb in GRID:
        b = Budgets.from_gb(vram_gb, host_gb)
        fitting = [p for p in candidates(stage, preset, b) if fits(p, b)]
        expected: list[str] = []
        for p in fitting:
            if all(p.vram_bytes < q.vram_bytes or p.host_bytes < q.host_bytes for q in fitting[:fitting.index(p)]
                   if q.name in expected):
                expected.append(p.name)
        try:
            got = [p.name for p in ladder(stage, b, preset)]
        except PlanError:
            got = []
        assert got == expected, (vram_gb, host_gb)
        if stage in ("draft", "refine") and got:
            ranks = [rank(p) for p in candidates(stage, preset, b)]
            assert [r[0] for r in ranks] == sorted(r[0] for r in ranks)


def test_more_memory_never_chooses_a_slower_plan() -> None:
    for preset in (GGUF, BF16):
        for host_gb in (32, 64, 128):
            ranks = [rank(ladder("refine", Budgets.from_gb(v, host_gb), preset)[0]) for v in (6, 8, 12, 24, 48, 96)]
            assert ranks == sorted(ranks, reverse=True), (preset.name, host_gb, ranks)
        for vram_gb in (8, 24):
            ranks = [rank(ladder("refine", Budgets.from_gb(vram_gb, h), preset)[0]) for h in ((16,) if preset is GGUF else ()) + (32, 64, 128)]
            assert ranks == sorted(ranks, reverse=True), (preset.name, vram_gb, ranks)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("preset", [GGUF, BF16], ids=lambda p: p.name)
def test_a_plan_fits_at_exactly_its_estimate_and_not_a_byte_less(stage: str, preset: Preset) -> None:
    plans = [p for p in ladder(stage, Budgets.from_gb(24, 256), preset) if not p.name.startswith("stream")]
    assert plans
    for p in plans[:6]:
        exact = Budgets(vram=p.vram_bytes, host=p.host_bytes)
        assert p.name in by_name(ladder(stage, exact, preset)), (stage, p.name)
        for short in (replace(exact, vram=exact.vram - 1), replace(exact, host=exact.host - 1)):
            try:
                names = by_name(ladder(stage, short, preset))
            except PlanError:
                continue
            assert p.name not in names, (stage, p.name, short)


@pytest.mark.parametrize("vram_gb,host_gb", [(6, 24), (8, 32), (12, 64), (24, 64), (48, 128)])
def test_every_fallback_is_leaner_than_every_plan_before_it(vram_gb: int, host_gb: int) -> None:
    for preset in (GGUF, BF16):
        for stage in STAGES:
            plans = ladder(stage, Budgets.from_gb(vram_gb, host_gb), preset)
            for i, p in enumerate(plans):
                assert all(p.vram_bytes < q.vram_bytes or p.host_bytes < q.host_bytes for q in plans[:i]), p.name


def test_a_card_that_holds_everything_runs_resident_with_no_tiles_and_the_encoder_kept() -> None:
    draft = ladder("draft", HUGE)[0]
    assert draft.offload == "resident" and not draft.vae_tiling and draft.options["vae_tile"] == 0
    assert draft.options["text_encoder"] == "resident" and draft.options["keep_text_encoder"]
    assert draft.options["evict"] == [] and draft.device == "cuda" and draft.dtype == "bfloat16"
    assert ladder("refine", HUGE)[0].offload == "resident"
    up = ladder("upscale", HUGE)[0]
    assert (up.offload, up.dtype, up.options["esrgan_batch"], up.options["esrgan_tile"]) == \
        ("resident", "float16", 8, 0)
    enh = ladder("enhance", HUGE)[0]
    assert (enh.device, enh.offload, enh.options["n_gpu_layers"]) == ("cuda", "resident", -1)


def test_a_resident_transformer_holds_its_side_models_between_segments() -> None:
    comps = component_sizes(GGUF)
    draft = ladder("draft", HUGE)[0]
    side = comps["vae"].nbytes + comps["audio"].nbytes
    assert draft.options["held_vram_bytes"] == comps["transformer"].nbytes + side
    refine = ladder("refine", HUGE)[0]
    assert refine.options["held_vram_bytes"] == comps["transformer"].nbytes + comps["vae"].nbytes \
        + comps["upsampler"].nbytes
    # ... while a plan that swaps components in and out holds nothing on the GPU
    swapped = [p for p in ladder("refine", Budgets.from_gb(8, 32)) if p.offload in ("group_leaf", "sequential")
               or (p.offload == "group_block" and "streamer" not in p.options)]
    assert swapped and all(p.options["held_vram_bytes"] == 0 for p in swapped)


def test_a_streamed_draft_counts_the_upsampler_it_holds_in_host_ram() -> None:
    """Between refines the upsampler stays loaded (offloaded to the host under a streamed plan),
    so a capped draft's host estimate and what it holds include it; its GPU share does not."""
    comps = component_sizes(GGUF)
    up = comps["upsampler"].nbytes
    capped = [p for p in ladder("draft", Budgets.from_gb(8, 32)) if "streamer" in p.options]
    assert capped
    refine = {p.name: p for p in ladder("refine", Budgets.from_gb(8, 32))}
    pairs = [(p, refine[p.name.split("/text-")[0]]) for p in capped if p.name.split("/text-")[0] in refine]
    assert pairs
    for draft, twin in pairs:  # the same transformer plan; both hold the VAE and the upsampler
        assert draft.options["held_host_bytes"] - twin.options["held_host_bytes"] == comps["audio"].nbytes
        assert draft.options["held_vram_bytes"] == twin.options["held_vram_bytes"]
        assert draft.host_bytes >= draft.options["held_host_bytes"] >= up
    # after a model-offload refine it is in host RAM beside a resident draft too
    resident = ladder("draft", HUGE)[0]
    assert resident.offload == "resident"
    assert resident.options["side_held_host_bytes"] == up and resident.options["held_host_bytes"] >= up


def test_a_draft_parks_the_upsampler_a_resident_refine_left_on_the_gpu_unless_it_has_room() -> None:
    """A resident draft's VRAM estimate does not count the upsampler (the half-card Ray layout
    stays resident); instead a draft with no room for it beside its own weights parks it."""
    up = component_sizes(GGUF)["upsampler"].nbytes
    roomy = ladder("draft", HUGE)[0]
    assert roomy.offload == "resident" and "park" not in roomy.options
    tight_vram = roomy.vram_bytes + up // 2  # the resident draft fits, but not with the upsampler
    tight = [p for p in ladder("draft", Budgets(vram=tight_vram, host=HUGE.host)) if p.offload == "resident"]
    assert tight and all(p.vram_bytes <= tight_vram for p in tight)
    parked = {p.name: p.options.get("park") == ["upsampler"] for p in tight}
    assert parked == {p.name: p.vram_bytes + up > tight_vram for p in tight}
    assert set(parked.values()) == {True, False}  # the text encoder resident leaves no room; on disk it does
    streamed = [p for p in ladder("draft", Budgets.from_gb(8, 32)) if "streamer" in p.options]
    assert streamed and all(p.options["park"] == ["upsampler"] for p in streamed)  # it fills the budget
    assert all("park" not in p.options for p in ladder("refine", Budgets.from_gb(8, 32)))


# --------------------------------------------------------------------------- weight formats


def test_bf16_weights_are_offered_in_fp8_and_fp8_is_leaner() -> None:
    plans = ladder("refine", Budgets.from_gb(24, 64), BF16)
    fp8 = [p for p in plans if p.options["weights"] == "fp8"]
    bf16 = by_name([p for p in plans if p.options["weights"] == "bfloat16"])
    assert fp8 and all(p.name.endswith("/fp8") or "/fp8+" in p.name for p in fp8)
    assert all(any("fp8" in n for n in p.notes) for p in fp8)
    for p in fp8:
        twin = bf16.get(p.name.replace("/fp8", ""))
        if twin is not None and not p.name.startswith("stream"):
            assert p.vram_bytes < twin.vram_bytes or p.host_bytes < twin.host_bytes
    assert not [p for p in plans if p.options["weights"] == "bfloat16" and any("fp8" in n for n in p.notes)]
    # GGUF files are never re-stored as fp8, and only they can be paged from a mapped file
    gguf = ladder("refine", HUGE, GGUF) + ladder("refine", Budgets.from_gb(6, 16), GGUF)
    assert not [p for p in gguf if p.options["weights"] == "fp8"]
    assert not [p for p in candidates("refine", BF16, Budgets.from_gb(6, 16)) if p.options["mmap"]]


def test_a_preset_that_prefers_fp8_streams_fp8_first() -> None:
    b = Budgets.from_gb(8, 64)
    first = ladder("refine", b, BF16_FP8_FIRST)[0]
    assert first.options["streamer"] == "sulphur" and first.options["weights"] == "fp8"
    plain = ladder("refine", b, BF16)[0]
    assert plain.options["streamer"] == "sulphur" and plain.options["weights"] == "bfloat16"
    # only the streamer's rung changes its order: the other rungs still try bf16 first
    rest = [p for p in ladder("refine", HUGE, BF16_FP8_FIRST) if not p.name.startswith("stream")]
    assert rest[0].options["weights"] == "bfloat16"


def test_an_fp8_streamer_needs_a_bf16_upcast_buffer_and_gguf_one_of_a_block() -> None:
    comps = component_sizes(BF16)
    block_bf16 = comps["transformer"].block_bytes
    # activations large enough that the denoise, not the decode, is the streamer's peak; room
    # for resident blocks (3 bf16, 8 fp8 at 24 GB), so each format has its lean twin
    b = Budgets.from_gb(24, 64)
    lean = {p.options["weights"]: p for p in candidates("refine", BF16, b, BIGGER_ACT)
            if p.name.startswith("stream-lean") and p.options["vae_tile"] == 256}
    assert set(lean) == {"bfloat16", "fp8"}
    # fp8: half-size blocks in the slots, plus one bf16 block to compute in
    saved = lean["bfloat16"].vram_bytes - lean["fp8"].vram_bytes
    nonblock = comps["transformer"].nonblock_bytes - comps["transformer"].as_format("fp8").nonblock_bytes
    assert abs(saved - nonblock) < 16 * MiB  # the slots' savings go to the bf16 block it computes in
    assert block_bf16 > 16 * MiB
    g = component_sizes(GGUF)["transformer"]
    stream = next(p for p in ladder("refine", b, GGUF) if p.name.startswith("stream-lean"))
    assert stream.options["dequant"] == "block"  # measured 1.05× resident, against 1.14× per layer
    assert not any("dequant" in p.options for p in ladder("refine", b, BF16))
    # the GGUF streamer's working set: non-block weights, two slots, a bf16 block and the activations
    bf16_block = g.params * g.block_fraction / g.blocks * 2
    base = g.nonblock_bytes + 2 * g.block_bytes + bf16_block + g.scratch_bytes + stream.options["activation_bytes"]
    assert stream.vram_bytes == pytest.approx(base, abs=1 * MiB) or stream.vram_bytes > base


def test_the_streamer_keeps_as_many_blocks_resident_as_the_card_leaves_room_for() -> None:
    t = component_sizes(GGUF)["transformer"]
    # between calls it holds its non-block weights, two slots and the bf16 block it dequantizes into
    kept = t.nonblock_bytes + 2 * t.block_bytes + int(t.params * t.block_fraction / t.blocks * 2)
    eight = Budgets.from_gb(8, 64)
    s = next(p for p in candidates("refine", GGUF, eight) if p.name == "stream+vaetiles")
    assert s.options["resident_blocks"] == 0 and s.vram_bytes > eight.vram  # 512 px tiles do not fit beside it
    assert ladder("refine", eight)[0].name == "stream+vaetiles256"
    for vram_gb in (10, 12, 16, 20):
        b = Budgets.from_gb(vram_gb, 64)
        s = next(p for p in candidates("refine", GGUF, b) if p.name == "stream+vaetiles")
        k = s.options["resident_blocks"]
        assert isinstance(k, int) and 0 <= k <= t.blocks - 2 and s.vram_bytes <= b.vram  # whole blocks
        assert s.vram_bytes + t.block_bytes > b.vram or k == t.blocks - 2  # one more would not fit
        assert s.options["held_vram_bytes"] == kept + k * t.block_bytes
        assert f"streams {t.blocks - k} of {t.blocks} blocks" in " ".join(s.notes)
        lean = next((p for p in candidates("refine", GGUF, b) if p.name == "stream-lean+vaetiles"), None)
        if k == 0:
            assert lean is None  # nothing resident: no leaner twin to fall back to
            continue
        assert lean.options["resident_blocks"] == 0 and lean.vram_bytes == s.vram_bytes - k * t.block_bytes
        assert lean.options["held_vram_bytes"] == kept
    huge = next(p for p in candidates("refine", GGUF, HUGE) if p.name.startswith("stream"))
    assert huge.options["resident_blocks"] == t.blocks - 2  # two blocks always stream through the slots


def test_streamer_has_no_lean_twin_when_it_keeps_nothing_resident() -> None:
    b = Budgets.from_gb(6, 64)
    names = [p.name for p in ladder("refine", b)]
    for p in ladder("refine", b):
        if p.name.startswith("stream+") and p.options["resident_blocks"] == 0:
            assert p.name.replace("stream", "stream-lean", 1) not in names


def _q8_gguf_with_file_type(path: Path) -> Path:
    """A Q8_0 GGUF as llama.cpp's converters write one: Q8_0 blocks and ``general.file_type``."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "ltxv")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    writer.add_tensor("blk.0.w", gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("norm", np.ones(64, np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file,
                 writer.close):
        step()
    return path


def _q4_gguf(path: Path) -> Path:
    """Q4_0 blocks without ``general.file_type`` (how pipeline.models.gguf_writer writes them)."""
    from pipeline.models.gguf_writer import write_random_gguf

    write_random_gguf(path, "ltxv", [("blk.0.w", (64, 64), "Q4_0"), ("blk.1.w", (64, 64), "Q4_0"),
                                     ("norm", (64,), "F32")])
    return path


@pytest.mark.parametrize(("write", "stored"), [(_q4_gguf, "Q4_0"), (_q8_gguf_with_file_type, "Q8_0")],
                         ids=["tensor-types", "file-type"])
def test_a_plan_names_the_quantization_of_the_transformer_file_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Any, stored: str) -> None:
    """sulphur2-ltx23's entry names a Q3_K_M file; the file found there holds another
    quantization: the plans say the file's (read from its header), and say so; with the file
    gone they say the entry's, and that the file is absent."""
    monkeypatch.delenv("SULPHUR_LTX_GGUF", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no pulled copy to find
    real = get_preset("sulphur2-ltx23")
    gguf_file = write(tmp_path / "sulphur_dev-Q3_K_M.gguf")  # the name says Q3_K_M; the file does not
    entry = replace(real.file("transformer_gguf"), path=str(gguf_file))
    preset = replace(real, files=tuple(entry if f.role == "transformer_gguf" else f for f in real.files))
    for stage in ("draft", "refine"):
        for plan in ladder(stage, HUGE, preset):
            assert f"weights {stored} (read from the GGUF)" in plan.describe()
            assert "Q3_K_M" not in plan.describe(), plan.describe()
    gguf_file.unlink()
    for plan in ladder("draft", HUGE, preset):
        assert "weights Q3_K_M (per the preset; file absent)" in plan.describe(), plan.describe()
    named_q4 = replace(entry, path=str(tmp_path / "other-Q4_0.gguf"), filename="other-Q4_0.gguf")
    preset_q4 = replace(real, files=tuple(named_q4 if f.role == "transformer_gguf" else f for f in real.files))
    assert "weights Q4_0 (per the preset; file absent)" in ladder("draft", HUGE, preset_q4)[0].describe()


def _all_on_gpu(preset: Preset) -> int:
    """The VRAM the enhance stage's fastest plan (every layer on the GPU) is estimated at."""
    plan = ladder("enhance", HUGE, preset)[0]
    assert plan.options["n_gpu_layers"] == -1
    return plan.vram_bytes


def test_an_absent_enhancer_is_planned_from_the_presets_own_entry(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a fixed Gemma 3 12B Q3_K_M: sulphur2-ltx23 names its own Q8_0 GGUF, ltx23-distilled
    Gemma's Q4_K_M; a size the entry records is the estimate's, the file's bytes once it is there."""
    monkeypatch.delenv("SULPHUR_ENHANCER_GGUF", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    kv = 512 * MiB  # the KV cache the llama.cpp plans add

    def with_enhancer(name: str, **entry: Any) -> Preset:
        preset = get_preset(name)
        spec = replace(preset.file("enhancer"), path=str(tmp_path / "absent" / "enhancer.gguf"), **entry)
        return replace(preset, files=tuple(spec if f.role == "enhancer" else f for f in preset.files))

    q8 = _all_on_gpu(with_enhancer("sulphur2-ltx23"))
    q4km = _all_on_gpu(with_enhancer("ltx23-distilled"))
    assert q8 - kv == pytest.approx(12.2e9 * 34 / 32, rel=1e-6)  # Q8_0, not Q3_K_M's 0.52 bytes a weight
    assert q4km - kv == pytest.approx(12.2e9 * 0.60, rel=1e-6)
    recorded = _all_on_gpu(with_enhancer("sulphur2-ltx23", size=9_090_000_000))
    assert recorded - kv == pytest.approx(9_090_000_000, abs=1 * MiB)
    on_disk = tmp_path / "absent" / "enhancer.gguf"
    on_disk.parent.mkdir()
    _q8_gguf_with_file_type(on_disk)
    assert _all_on_gpu(with_enhancer("sulphur2-ltx23", size=9_090_000_000)) - kv == pytest.approx(
        on_disk.stat().st_size, abs=1 * MiB)


# --------------------------------------------------------------------------- offload modes


def test_offload_modes_trade_vram_for_host_as_documented() -> None:
    """resident: weights on the GPU, none in RAM (GGUF pages are mapped); model offload keeps
    every weight in RAM; pinned streams double the host copy, lowmem pins two blocks; the
    mapped file pins nothing and holds no pageable copy."""
    plans = {(p.name, p.options["weights"]): p for p in candidates("refine", BF16, Budgets.from_gb(4, 128))
             + candidates("refine", GGUF, Budgets.from_gb(4, 128))}
    t = component_sizes(BF16)["transformer"]
    w = t.nbytes
    gb = next(p for n, p in plans.items() if base(p) == "group_block+stream" and p.options["weights"] == "bfloat16")
    assert gb.options["pinned_bytes"] == w and gb.host_bytes >= 2 * w
    low = next(p for n, p in plans.items() if base(p) == "group_block+stream+lowmem" and p.options["weights"] == "bfloat16")
    assert low.options["pinned_bytes"] == 2 * t.block_bytes and low.options["low_cpu_mem_usage"]
    leaf = next(p for n, p in plans.items() if base(p) == "group_leaf+stream+lowmem" and p.options["weights"] == "bfloat16")
    assert leaf.options["pinned_bytes"] == 2 * t.layer_bytes
    nostream = next(p for n, p in plans.items() if base(p) == "group_block" and p.options["weights"] == "bfloat16")
    assert nostream.options["pinned_bytes"] == 0 and nostream.options["use_stream"] is False
    mm = next(p for p in plans.values() if "+mmap" in p.name)
    assert mm.options["mmap"] and mm.options["pinned_bytes"] == 0 and mm.options["held_host_bytes"] < \
        component_sizes(GGUF)["transformer"].nbytes
    assert all(p.options["num_blocks_per_group"] == 1 for p in plans.values())


def test_sequential_and_leaf_offload_move_a_layer_at_a_time() -> None:
    b = Budgets.from_gb(3, 256)
    plans = candidates("refine", BF16, b, Project(refine_size=(256, 160)))
    seq = [p for p in plans if p.offload == "sequential"]
    assert seq, [p.name for p in plans]
    t = component_sizes(BF16)["transformer"]
    for p in seq:
        held = p.options["held_host_bytes"]
        assert held >= t.nbytes // (2 if p.options["weights"] == "fp8" else 1) * 0.99
        assert not p.options["use_stream"] and p.options["pinned_bytes"] == 0


def test_the_mapped_gguf_file_is_the_plan_for_a_host_without_room_for_the_weights() -> None:
    w = component_sizes(GGUF)["transformer"].nbytes
    plans = ladder("refine", Budgets.from_gb(8, 10))
    assert plans and all(p.options["mmap"] for p in plans)
    assert all(p.host_bytes < w for p in plans)
    assert all("memory-mapped" in " ".join(p.notes) for p in plans)
    assert all(p.name.split("+")[0] in ("group_block", "sequential") and "+mmap" in p.name for p in plans)


def test_lowmem_plans_say_so() -> None:
    plans = candidates("refine", BF16, Budgets.from_gb(4, 128)) + candidates("refine", GGUF, HUGE)
    for p in plans:
        assert ("+lowmem" in p.name) == bool(p.options["low_cpu_mem_usage"]) == \
            any("one block at a time" in n for n in p.notes)
        assert ("+stream" in p.name or p.name.startswith("stream")) == bool(p.options["use_stream"])
        assert ("+mmap" in p.name) == bool(p.options["mmap"])
        assert ("vaetiles" in p.name) == p.vae_tiling == bool(p.options["vae_tile"])
        assert ("vaetiles256" in p.name) == (p.options["vae_tile"] == 256)


# --------------------------------------------------------------------------- what reaches the estimates


def _first(stage: str, preset: Preset = GGUF, **project: object) -> StagePlan:
    return ladder(stage, HUGE, preset, Project(**project))[0]


def test_audio_costs_the_draft_activations_and_its_model_but_not_the_refine() -> None:
    comps = component_sizes(GGUF)
    on, off = _first("draft", audio=True), _first("draft", audio=False)
    tokens = audio_tokens(121, 24)
    assert on.options["activation_bytes"] - off.options["activation_bytes"] == pytest.approx(
        tokens * off.options["activation_bytes"] / video_tokens((512, 288), 121), rel=0.01)
    assert on.options["held_vram_bytes"] - off.options["held_vram_bytes"] == comps["audio"].nbytes
    assert _first("refine", audio=True).options == _first("refine", audio=False).options
    silent = replace(GGUF, audio=False)  # a model without audio ignores the storyboard's setting
    assert _first("draft", silent, audio=True).options["activation_bytes"] == off.options["activation_bytes"]


def test_guidance_doubles_the_batch_and_so_the_activations() -> None:
    plain = _first("refine").options["activation_bytes"]
    cfg = _first("refine", replace(GGUF, guidance_scale=3.0)).options["activation_bytes"]
    assert cfg == 2 * plain
    assert _first("refine", replace(GGUF, guidance_scale=1.0)).options["activation_bytes"] == plain


def test_activations_follow_the_latent_tokens() -> None:
    """0.2 MiB a token (measured 0.17: 0.6 GiB at 3646 tokens, 2.3 GiB at 14206)."""
    for size, frames in (((512, 288), 121), ((1024, 576), 121), ((768, 512), 49)):
        act = ladder("refine", HUGE, GGUF, Project(refine_size=size), frames=frames)[0].options["activation_bytes"]
        tokens = video_tokens(size, frames)
        assert 0.17 * MiB * tokens <= act <= 0.25 * MiB * tokens, (size, frames)
    assert _first("refine").options["activation_bytes"] < ladder(
        "refine", HUGE, frames=241)[0].options["activation_bytes"]
    default = ladder("refine", HUGE, frames=None)[0].options["activation_bytes"]
    assert default == _first("refine").options["activation_bytes"]  # 121 frames unless told


def test_latent_tokens_of_ltx2() -> None:
    """VAE 8× in time (first frame alone), 32× in space; never zero."""
    assert video_tokens((512, 288), 1) == 16 * 9
    assert video_tokens((512, 288), 9) == 2 * 16 * 9
    assert video_tokens((512, 288), 121) == 16 * 16 * 9
    assert video_tokens((1024, 576), 17) == 3 * 32 * 18
    assert video_tokens((544, 320), 121) == 16 * 10 * 17  # not 33 px, not rounded up
    assert video_tokens((16, 16), 1) == 1 and video_tokens((16, 64), 1) == 2 and video_tokens((64, 16), 1) == 2
    assert video_tokens((512, 288), 8) == 9 * 16 and video_tokens((512, 288), 10) == 2 * 9 * 16


def test_audio_tokens_are_25_a_second_plus_one() -> None:
    assert audio_tokens(24, 24) == 26
    assert audio_tokens(121, 24) == 128
    assert audio_tokens(9, 8) == 30


def test_vae_tiles_bound_the_decode_and_smaller_tiles_bound_it_more() -> None:
    project = Project(refine_size=(1024, 576))
    plans = [p for p in ladder("refine", HUGE, GGUF, project) if p.offload == "resident"]
    by_tile = {p.options["vae_tile"]: p for p in plans}
    assert set(by_tile) <= {0, 512, 256}
    full = 1024 * 576 * 121 * 250
    t = component_sizes(GGUF)
    resident = t["transformer"].nbytes + t["vae"].nbytes + t["upsampler"].nbytes
    assert by_tile[0].vram_bytes >= resident + full
    some = candidates("refine", GGUF, Budgets.from_gb(6, 64), project)
    assert {p.options["vae_tile"] for p in some} == {0, 512, 256}
    for p in some:
        same = [q for q in some if q.name.split("+vaetiles")[0] == p.name.split("+vaetiles")[0]
                and q.options["weights"] == p.options["weights"]]
        by_t = [q.vram_bytes for t in (0, 512, 256) for q in same if q.options["vae_tile"] == t]
        assert by_t == sorted(by_t, reverse=True), p.name


def test_a_tile_decode_costs_about_what_was_measured() -> None:
    """2.5 GiB per 512²×16-frame tile beside the weights (19B refine, 1024×576×121)."""
    project = Project(refine_size=(1024, 576))
    plans = ladder("refine", Budgets.from_gb(6, 256), GGUF, project)
    t = component_sizes(GGUF)
    swap = [p for p in plans if p.offload == "group_block" and "streamer" not in p.options and p.options["vae_tile"]]
    assert swap
    for p in swap:
        tile = p.options["vae_tile"]
        decode = tile * tile * 24 * 440
        assert p.vram_bytes >= t["vae"].nbytes + decode + t["transformer"].nonblock_bytes
    tile512 = 512 * 512 * 24 * 440
    assert 2.0 * GiB < tile512 < 3.0 * GiB


def test_larger_frames_and_sizes_need_more_on_every_side_that_depends_on_them() -> None:
    b = HUGE
    for stage, key in (("draft", "draft_size"), ("refine", "refine_size")):
        small = ladder(stage, b, GGUF, Project(**{key: (512, 288)}), frames=49)[0]
        wide = ladder(stage, b, GGUF, Project(**{key: (1024, 288)}), frames=49)[0]
        tall = ladder(stage, b, GGUF, Project(**{key: (512, 576)}), frames=49)[0]
        long = ladder(stage, b, GGUF, Project(**{key: (512, 288)}), frames=97)[0]
        for bigger in (wide, tall, long):
            assert bigger.options["activation_bytes"] > small.options["activation_bytes"], stage
            assert bigger.vram_bytes > small.vram_bytes or stage == "draft", stage  # draft: the encoder's peak


# --------------------------------------------------------------------------- the text encoder


def test_the_text_encoder_placements_cost_what_they_hold() -> None:
    comps = component_sizes(GGUF)
    te, conn = comps["text_encoder"], comps["connectors"]
    plans = ladder("draft", Budgets.from_gb(8, 64))
    seen = {p.options["text_encoder"]: p for p in plans}
    assert {"group", "disk"} <= set(seen)
    disk = seen["disk"].options
    two_blocks = te.nonblock_bytes + 2 * te.block_bytes
    assert disk["text_host_bytes"] == two_blocks + conn.nbytes
    assert disk["text_vram_bytes"] == max(two_blocks, conn.nbytes) + 256 * MiB
    group = seen["group"].options
    assert group["text_host_bytes"] == te.nbytes + conn.nbytes
    big = ladder("draft", HUGE)[0].options
    assert big["text_encoder"] == "resident" and big["text_vram_bytes"] == te.nbytes + te.scratch_bytes + 256 * MiB
    assert big["text_host_bytes"] == te.nbytes + conn.nbytes  # loaded through RAM once


def test_a_draft_fits_the_text_encoder_beside_what_the_transformer_keeps() -> None:
    for vram_gb, host_gb in ((8, 32), (8, 44), (12, 64), (24, 64), (48, 128), (96, 64)):
        b = Budgets.from_gb(vram_gb, host_gb)
        for p in ladder("draft", b):
            o = p.options
            beside = (0, 0) if o["evict"] else (o["held_vram_bytes"], o["held_host_bytes"])
            assert o["text_vram_bytes"] + beside[0] <= b.vram and o["text_host_bytes"] + beside[1] <= b.host
            assert p.vram_bytes >= o["text_vram_bytes"] + beside[0]
            assert p.host_bytes >= o["text_host_bytes"] + beside[1]
            assert ("-evict" in p.name) == bool(o["evict"]) == ("transformer dropped" in " ".join(p.notes))
            assert o["evict"] in ([], ["transformer"])
            assert p.name.endswith(f"text-{o['text_encoder']}" + ("-evict" if o["evict"] else ""))


def test_the_transformer_is_dropped_for_the_prompt_only_when_the_encoder_does_not_fit_beside_it() -> None:
    b = Budgets.from_gb(24, 40)
    plans = ladder("draft", b)
    first = plans[0]
    assert not first.options["evict"]
    evicting = [p for p in plans if p.options["evict"]]
    assert evicting and all(not p.options["keep_text_encoder"] for p in evicting)
    assert all("reloaded after" in " ".join(p.notes) for p in evicting)


def test_a_refused_draft_names_the_text_encoder_when_it_is_what_does_not_fit() -> None:
    with pytest.raises(PlanError) as info:
        ladder("draft", Budgets.from_gb(24, 3.5))
    assert info.value.component == "text encoder + connectors" and info.value.stage == "draft"
    assert "host RAM" in str(info.value)


# --------------------------------------------------------------------------- upscale and enhance


def test_esrgan_estimates_match_the_measured_peaks() -> None:
    """bench/results/esrgan-h200.json: 1024×576 in, peak VRAM per batch (fp16, x2plus)."""
    measured = json.loads((ROOT / "bench/results/esrgan-h200.json").read_text())["untiled"]["stage"]
    plans = by_name(ladder("upscale", HUGE, GGUF, Project(refine_size=(1024, 576))))
    assert [n for n in plans][:4] == ["batch8", "batch4", "batch2", "batch1"]
    for name in ("batch1", "batch4", "batch8"):
        est = plans[name].vram_bytes / GiB
        assert abs(est - measured[name]["peak_vram_gib"]) <= 0.1 * measured[name]["peak_vram_gib"], name
    for p in plans.values():
        assert (p.offload, p.dtype, p.device, p.options["component"]) == ("resident", "float16", "cuda", "esrgan")


def test_esrgan_host_ram_holds_the_input_two_outputs_and_a_batch() -> None:
    project = Project(refine_size=(1024, 576), output_size=(1920, 1080))
    plans = by_name(ladder("upscale", HUGE, GGUF, project, frames=121))
    frames_in = 1024 * 576 * 3 * 121
    frames_out = 1920 * 1080 * 3 * 121
    base = frames_in + 2 * frames_out + component_sizes(GGUF)["esrgan"].nbytes
    in_flight = 2 * (1024 * 576 * 3 + 1920 * 1080 * 3)  # two batches of pinned uint8 buffers
    for batch in (1, 2, 4, 8):
        assert plans[f"batch{batch}"].host_bytes == base + batch * (2048 * 1152 * 3 * 2 + in_flight)
    for tile in (512, 256, 128):
        assert plans[f"tiles{tile}"].host_bytes == base
    wider = by_name(ladder("upscale", HUGE, GGUF, replace(project, output_size=(3840, 1080)), frames=121))
    assert wider["batch1"].host_bytes - plans["batch1"].host_bytes == 2 * 1920 * 1080 * 3 * (121 + 1)


def test_esrgan_tiles_are_the_last_resort_and_bounded_by_the_tile() -> None:
    plans = ladder("upscale", Budgets.from_gb(1, 16), GGUF)
    names = [p.name for p in plans]
    assert names and all(n.startswith("tiles") for n in names)
    tiles = by_name(ladder("upscale", HUGE))
    esr = component_sizes(GGUF)["esrgan"].nbytes
    per_pixel = 0.55 * GiB / (1024 * 576)
    for tile in (512, 256, 128):
        p = tiles[f"tiles{tile}"]
        assert p.options == {**p.options, "esrgan_batch": 1, "esrgan_tile": tile}
        assert esr + tile * tile * per_pixel < p.vram_bytes <= esr + tile * tile * per_pixel * 1.5
        assert any("tiles" in n for n in p.notes)
    assert all(not p.notes for p in tiles.values() if p.name.startswith("batch"))


def test_compiling_esrgan_pays_only_untiled_on_cuda_from_the_break_even_frame_count() -> None:
    cuda = StagePlan(name="batch4", device="cuda", options={"esrgan_tile": 0})
    assert esrgan_compile_pays(ESRGAN_COMPILE_MIN_FRAMES, cuda) and esrgan_compile_pays(10_000, cuda)
    assert not esrgan_compile_pays(ESRGAN_COMPILE_MIN_FRAMES - 1, cuda)
    assert not esrgan_compile_pays(10_000, replace(cuda, device="cpu"))
    assert not esrgan_compile_pays(10_000, replace(cuda, options={"esrgan_tile": 256}))
    assert esrgan_compile_pays(10_000, replace(cuda, options={}))


def test_the_enhancer_puts_as_many_layers_on_the_gpu_as_fit() -> None:
    llm = component_sizes(GGUF)["enhancer"]
    every = ladder("enhance", HUGE)
    assert [p.options["n_gpu_layers"] for p in every] == [-1, 36, 24, 12, 0]
    per_layer = llm.nbytes * llm.block_fraction / llm.blocks
    for p in every:
        n = llm.blocks if p.options["n_gpu_layers"] == -1 else p.options["n_gpu_layers"]
        assert p.host_bytes == int(llm.nbytes - n * per_layer)
        assert p.options["component"] == "enhancer" and p.dtype == "float16"
        if n == 0:
            assert (p.device, p.offload, p.vram_bytes, p.name) == ("cpu", "resident", 0, "llm-cpu")
        else:
            assert p.device == "cuda" and p.name == f"llm-gpu{n}"
            assert p.offload == ("resident" if n == llm.blocks else "group_block")
            kv = 512 * MiB
            assert p.vram_bytes == int(n * per_layer + (llm.nonblock_bytes if n == llm.blocks else 0) + kv)
    for vram_gb in (2, 3, 4, 5, 6, 7, 8):
        b = Budgets.from_gb(vram_gb, 64)
        first = ladder("enhance", b)[0]
        assert first.vram_bytes <= b.vram
        assert all(p.vram_bytes > b.vram for p in every[:every.index(by_name(every)[first.name])])
    assert ladder("enhance", Budgets.from_gb(0.4, 64))[0].name == "llm-cpu"


def test_a_single_layer_llm_is_all_or_nothing() -> None:
    one = replace(GGUF, extra={"memory": {"enhancer": {"blocks": 0}}})
    plans = ladder("enhance", HUGE, one)
    assert [p.options["n_gpu_layers"] for p in plans][0] == -1
    assert plans[-1].name == "llm-cpu"


# --------------------------------------------------------------------------- refusals


def test_a_vram_refusal_suggests_a_card_and_a_smaller_size_that_both_fit() -> None:
    project = Project(draft_size=(1536, 864))
    b = Budgets.from_gb(4.0, 256)
    with pytest.raises(PlanError) as info:
        ladder("draft", b, project=project)
    err = info.value
    assert err.resource == "VRAM" and err.have == b.vram and err.need > b.vram
    msg = str(err)
    m = re.search(r"draft_size such as \[(\d+), (\d+)\]", msg)
    setting = int(msg.split("vram_budget_gb = ")[1].split()[0])
    assert ladder("draft", Budgets.from_gb(setting, 256), project=project)
    assert not _fits_any("draft", Budgets.from_gb(setting - 1, 256), project)
    assert m is not None  # the activations are what grew: a smaller size is the other way out
    assert ladder("draft", b, project=Project(draft_size=(int(m[1]), int(m[2]))))


def _fits_any(stage: str, b: Budgets, project: Project) -> bool:
    try:
        return bool(ladder(stage, b, project=project))
    except PlanError:
        return False


def test_a_refusal_without_room_for_the_weights_suggests_no_size() -> None:
    with pytest.raises(PlanError) as info:
        ladder("refine", Budgets.from_gb(1, 256))
    assert "refine_size such as" not in str(info.value) and "vram_budget_gb" in str(info.value)
    assert info.value.component == "transformer"


def test_a_host_refusal_names_the_leanest_plan_and_the_ram_to_set() -> None:
    b = Budgets.from_gb(24, 4)
    with pytest.raises(PlanError) as info:
        ladder("refine", b, BF16)
    err = info.value
    assert err.resource.startswith("host RAM") and err.have == b.host
    msg = str(err)
    suggested = int(msg.split("ram_budget_gb = ")[1].split()[0])
    plan = re.search(r"\(plan ([^)]+)\)", msg)[1]
    fitted = ladder("refine", Budgets.from_gb(24, suggested), BF16)
    assert plan in [p.name for p in fitted]
    assert not _fits_any_preset("refine", Budgets.from_gb(24, suggested - 1), BF16)
    assert "smaller quantized file" in msg


def _fits_any_preset(stage: str, b: Budgets, preset: Preset) -> bool:
    try:
        return bool(ladder(stage, b, preset))
    except PlanError:
        return False


def test_a_host_refusal_of_a_pinned_plan_says_pinned() -> None:
    with pytest.raises(PlanError) as info:
        ladder("upscale", Budgets.from_gb(24, 2.6))
    assert info.value.resource == "host RAM" and info.value.component == "esrgan"
    with pytest.raises(PlanError) as info:
        ladder("enhance", Budgets.from_gb(0.1, 2.6))
    assert info.value.stage == "enhance" and info.value.component == "enhancer"


@pytest.mark.parametrize(("stage", "gb", "size"), [("refine", 3.5, (1280, 704)), ("refine", 2.5, (896, 480)),
                                                   ("refine", 4.0, (1920, 1088)), ("draft", 4.5, (1536, 864))])
def test_the_smaller_size_a_refusal_suggests_fits(stage: str, gb: float, size: tuple[int, int]) -> None:
    """The hint's size is one the planner accepts (where the decode is the peak, scaling the
    activations alone had suggested sizes that still did not fit), and no larger one on its
    5% ladder does; when nothing fits at any size, no size is offered."""
    b = Budgets.from_gb(gb, 64)
    key = f"{stage}_size"
    with pytest.raises(PlanError) as info:
        ladder(stage, b, project=Project(**{key: size}))
    m = re.search(rf"{key} such as \[(\d+), (\d+)\]", str(info.value))
    if m is None:
        assert "such as" not in str(info.value)
        with pytest.raises(PlanError):
            ladder(stage, b, project=Project(**{key: (64, 32)}))
        return
    offered = (int(m[1]), int(m[2]))
    assert offered[0] < size[0] and offered[1] <= size[1]
    assert ladder(stage, b, project=Project(**{key: offered}))


# --------------------------------------------------------------------------- inputs


def test_a_tiny_preset_is_planned_with_tiny_weights_and_a_random_stack_with_real_ones() -> None:
    tiny = component_sizes(get_preset("tiny"))
    assert all(c.nbytes < 16 * MiB for c in tiny.values())
    assert tiny["transformer"].fmt == "Q8_0" and tiny["vae"].fmt == "float32"
    named_tiny = component_sizes(replace(GGUF, name="tiny"))
    assert named_tiny["transformer"].nbytes == tiny["transformer"].nbytes
    rnd = component_sizes(get_preset("ltx2-19b-random"))
    assert rnd["transformer"].nbytes == int(18.9e9 * 18 / 32)  # its stated Q4_0 transformer
    assert rnd["vae"].nbytes == component_sizes(GGUF)["vae"].nbytes  # the rest from the real table
    built = replace(GGUF, builder=lambda: Path("."))
    assert component_sizes(built)["transformer"].nbytes == tiny["transformer"].nbytes
    assert component_sizes(replace(built, extra={"random_weights": 1}))["vae"].nbytes == \
        component_sizes(GGUF)["vae"].nbytes


def test_memory_overrides_take_a_size_in_bytes_or_fields(tmp_path: Path) -> None:
    sizes = component_sizes(replace(GGUF, extra={"memory": {"vae": 123456, "newpart": {"params": 1e6}}}))
    assert sizes["vae"].nbytes == 123456 and sizes["vae"].largest_layer_params == 9.4e6
    assert sizes["newpart"].nbytes == int(1e6 * 2) and sizes["newpart"].name == "newpart"
    fp8 = component_sizes(BF16)["transformer"].as_format("fp8")
    assert fp8.fmt == "fp8" and fp8.nbytes == int(19e9) and fp8.params == 19e9
    measured = replace(component_sizes(BF16)["transformer"], file_bytes=5)
    assert measured.as_format("fp8").nbytes == int(19e9)  # the measured file is not the fp8 copy


def test_measured_sizes_count_weight_files_only_and_try_each_role(tmp_path: Path) -> None:
    folder = tmp_path / "ltx"
    (folder / "text_encoder").mkdir(parents=True)
    (folder / "text_encoder" / "model-1.safetensors").write_bytes(b"\0" * 1000)
    (folder / "text_encoder" / "model-2.safetensors").write_bytes(b"\0" * 500)
    (folder / "text_encoder" / "notes.txt").write_bytes(b"\0" * 99999)
    (folder / "text_encoder" / "sub").mkdir()
    (folder / "text_encoder" / "sub" / "w.bin").write_bytes(b"\0" * 7)
    (folder / "vae").mkdir()
    (folder / "vae" / "v.safetensors").write_bytes(b"\0" * 42)
    files = (ModelFile("diffusers", "ltx", path=str(folder)),
             ModelFile("upscaler", "esrgan", path=str(tmp_path / "absent.pth")))
    sizes = component_sizes(replace(GGUF, files=files))
    assert sizes["text_encoder"].nbytes == 1507
    assert sizes["vae"].nbytes == 42
    assert sizes["connectors"].nbytes == component_sizes(GGUF)["connectors"].nbytes  # no such sub-folder
    assert sizes["esrgan"].nbytes == component_sizes(GGUF)["esrgan"].nbytes  # file absent: the default
    # the first role with files wins; a role the preset lacks is skipped, not the end of the search
    pth = tmp_path / "x2.pth"
    pth.write_bytes(b"\0" * 77)
    second = component_sizes(replace(GGUF, files=(ModelFile("esrgan", "esrgan", path=str(pth)),)))
    assert second["esrgan"].nbytes == 77
    empty = tmp_path / "empty"
    (empty / "vae").mkdir(parents=True)
    (empty / "vae" / "config.json").write_text("{}")
    assert component_sizes(replace(GGUF, files=(ModelFile("diffusers", "e", path=str(empty)),)))["vae"].nbytes \
        == component_sizes(GGUF)["vae"].nbytes  # no weight file: not a size of zero


def test_budgets_mix_settings_and_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    only_vram = detect_budgets(Project(vram_budget_gb=8), device="cuda")
    assert only_vram.vram == Budgets.from_gb(8, 1).vram and only_vram.vram_setting == 8
    assert only_vram.host_setting is None
    avail = psutil.virtual_memory().available
    assert abs(only_vram.host - avail) < 3 * GiB  # the reserve is not taken twice (that would be 5 GiB off)
    only_host = detect_budgets(Project(ram_budget_gb=32), device="cpu")
    assert only_host.vram == 0 and only_host.vram_setting is None and only_host.host_setting == 32
    assert only_host.host == Budgets.from_gb(0, 32).host
    assert detect_budgets(None, device="cpu").vram == 0
    assert detect_budgets(None, device="cpu").host_setting is None
    import pipeline.memory.planner as planner

    monkeypatch.setattr(planner, "_free_vram", lambda: 6 * GiB)
    seen = detect_budgets(Project(ram_budget_gb=32))
    assert seen.vram == int(6 * GiB * 0.9) and seen.vram_setting is None  # no context taken off a free figure
    assert detect_budgets(Project(ram_budget_gb=32), device="cuda:1").vram == seen.vram
    assert detect_budgets(Project(ram_budget_gb=32), device="cpu").vram == 0


# --------------------------------------------------------------------------- ladders by family and stage


def test_stages_without_big_weights_and_other_families_refines_run_on_the_cpu_plan() -> None:
    for stage in ("encode", "grade"):
        assert [p.name for p in ladder(stage, HUGE)] == ["cpu"]
    wan = get_preset("wan22-ti2v-5b")
    assert [p.name for p in plan_ladder("refine", wan, Project(), "cuda", budgets=HUGE)] == ["cpu"]


def test_a_family_without_a_recipe_is_planned_from_its_sizes() -> None:
    odd = replace(GGUF, name="odd", family="hunyuan")
    plans = plan_ladder("draft", odd, Project(), "cuda", budgets=Budgets.from_gb(8, 32))
    assert plans[0].options["component"] == "transformer" and "recipe" not in plans[0].options


def test_the_cpu_ladder_reads_its_rungs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SULPHUR_DEVICE_LADDER", " cpu-lean , nonsense ")
    assert [p.name for p in cpu_ladder()] == ["cpu-lean"]
    monkeypatch.setenv("SULPHUR_DEVICE_LADDER", "nonsense")
    assert [p.name for p in cpu_ladder()] == ["cpu"]
    monkeypatch.delenv("SULPHUR_DEVICE_LADDER")
    assert [p.name for p in cpu_ladder()] == ["cpu"]


def test_the_summary_names_each_stages_first_plan_and_its_fallbacks() -> None:
    one = StagePlan(name="only", device="cuda")
    text = plan_summary({"draft": ladder("draft", Budgets.from_gb(8, 32)), "encode": [one]})
    lines = text.split("\n")
    n = len(ladder("draft", Budgets.from_gb(8, 32)))
    assert lines[0].startswith("draft: stream+vaetiles/text-disk, on cuda,") and lines[0].endswith(f" (+{n - 1} fallbacks)")
    assert lines[1] == "encode: only, on cuda"


def test_vram_room_is_none_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - the CPU suite
        pytest.skip("a CUDA machine holds its own allocations")
    assert vram_room(Project(vram_budget_gb=8)) is None


# --------------------------------------------------------------------------- OOM classification


@pytest.mark.parametrize("message,kind", [
    ("CUDA out of memory. Tried to allocate 2.00 GiB", "cuda"),
    ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)", "cuda"),
    ("cuda runtime error: MemoryAllocation failure", "cuda"),
    ("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory", "host"),
    ("std::bad_alloc: can't allocate memory: you tried to allocate 4096 bytes", "host"),
    ("mmap: Cannot allocate memory", "host"),
    ("out of memory", "cuda"),
    ("CUDA error: device-side assert triggered", None),
    ("Expected all tensors to be on the same device", None),
])
def test_oom_kind_reads_the_message(message: str, kind: str | None) -> None:
    assert oom_kind(RuntimeError(message)) == kind
    assert oom_kind(ValueError(message)) is None


# --------------------------------------------------------------------------- what the stages read


def _readers() -> str:
    """Every source file that applies or reports a plan, the planner excluded."""
    return "\n".join(p.read_text() for p in (ROOT / "pipeline").rglob("*.py") if p.name != "planner.py")


#: Options kept for the worker's report and the planner's own ladder logic, read by no stage.
REPORTED = {"text_vram_bytes", "text_host_bytes", "activation_bytes"}


def test_every_option_a_plan_carries_is_one_some_stage_reads() -> None:
    """A misspelt option is silently ignored by the stage that should apply it (no fp8, no
    mapped file, no tiles): every key the planner sets must be read somewhere by name."""
    source = _readers() + (ROOT / "pipeline/memory/planner.py").read_text()
    plans = [p for stage in STAGES for preset in (GGUF, BF16)
             for p in candidates(stage, preset, Budgets.from_gb(8, 64))]
    plans += [p for stage in STAGES for p in ladder(stage, HUGE)] + cpu_ladder()
    keys = {k for p in plans for k in p.options}
    unread = sorted(k for k in keys - REPORTED
                    if not re.search(rf"""(?:\.get\(|\[)\s*["']{re.escape(k)}["']\s*[,)\]](?!\s*=[^=])""", source))
    assert not unread


def test_option_values_are_ones_the_stages_know() -> None:
    plans = [p for preset in (GGUF, BF16) for p in candidates("refine", preset, Budgets.from_gb(8, 64))]
    readers = _readers()
    for p in plans:
        o = p.options
        assert o["weights"] in ("fp8", "bfloat16", "Q3_K_M") and o["component"] == "transformer"
        assert o.get("dequant", "block") in ("layer", "block") and o.get("streamer", "sulphur") == "sulphur"
        assert p.offload in ("resident", "model", "group_block", "group_leaf", "sequential")
    assert '"sulphur"' in readers and "\"block\"" in readers
    drafts = candidates("draft", GGUF, Budgets.from_gb(8, 64))
    assert {p.options["text_encoder"] for p in drafts} <= {"resident", "group", "disk", "cpu"}
    for mode in ("group", "disk", "cpu"):
        assert f'"{mode}"' in (ROOT / "pipeline/models/ltx2.py").read_text()


# --------------------------------------------------------------------------- second round: what still survived


def _text_modes(preset: Preset = GGUF) -> list[tuple[str, int, int]]:
    """(placement, VRAM, host) of each text-encoder placement, fastest first."""
    from pipeline.memory import planner

    return [(m, e.vram, e.host) for m, e in planner._text_estimates(component_sizes(preset))]


def _held_beside_text(base: StagePlan, evict: bool) -> tuple[int, int]:
    """What stays held while the prompt is encoded: everything the plan holds, or with the
    transformer evicted, the side models (VAEs, the last refine's upsampler) still."""
    o = base.options
    if evict:
        return o["side_held_vram_bytes"], o["side_held_host_bytes"]
    return o["held_vram_bytes"], o["held_host_bytes"]


@pytest.mark.parametrize("vram_gb,host_gb", [(8, 32), (8, 44), (12, 64), (24, 40), (48, 128), (96, 64), (96, 256)])
def test_each_draft_plan_encodes_with_the_fastest_placement_that_fits_beside_what_it_keeps(
        vram_gb: int, host_gb: int) -> None:
    from pipeline.memory import planner

    b = Budgets.from_gb(vram_gb, host_gb)
    job = planner._job_from(GGUF, Project(), "draft", 121)
    bases = by_name(planner._transformer_plans("draft", job, component_sizes(GGUF), "cuda", b))
    firsts: dict[tuple[str, bool], str] = {}
    for p in candidates("draft", GGUF, b):
        firsts.setdefault((p.name.split("/text-")[0], bool(p.options["evict"])), p.options["text_encoder"])
        base, o = bases[p.name.split("/text-")[0]], p.options
        held = _held_beside_text(base, bool(o["evict"]))
        assert p.vram_bytes == max(base.vram_bytes, o["text_vram_bytes"] + held[0]), p.name
        assert p.host_bytes == max(base.host_bytes, o["text_host_bytes"] + held[1]), p.name
    for (name, evict), mode in firsts.items():
        base = bases[name]
        held = _held_beside_text(base, evict)
        fitting = [m for m, v, h in _text_modes() if v + held[0] <= b.vram and h + held[1] <= b.host]
        assert mode == fitting[0], (name, evict)


def test_the_encoder_is_kept_exactly_when_every_component_fits_the_host_at_once() -> None:
    comps = component_sizes(GGUF)
    everything = sum(c.nbytes for n, c in comps.items() if n != "enhancer")  # the LLM runs before, alone
    first = ladder("draft", Budgets.from_gb(8, 64))[0]
    threshold = everything + first.options["pinned_bytes"]
    vram = Budgets.from_gb(8, 64).vram
    for host, keep in ((threshold, True), (threshold - 1, False)):
        same = by_name(ladder("draft", Budgets(vram=vram, host=host))).get(first.name.replace("disk", "group"))
        if same is None:
            same = by_name(ladder("draft", Budgets(vram=vram, host=host)))[first.name]
        if same.options["text_encoder"] != "disk":
            assert same.options["keep_text_encoder"] is keep, host - threshold
    for p in ladder("draft", Budgets.from_gb(8, 44)) + ladder("draft", Budgets.from_gb(8, 128)):
        kept = p.options["keep_text_encoder"]
        text = " ".join(p.notes)
        assert ("then is kept in host RAM for the next segment" in text) == kept
        assert ("then is evicted" in text) == (not kept)
        assert f"text encoder ({p.options['text_encoder']}) runs first" in text
        own = [n for n in p.notes if not n.startswith(("text encoder", "transformer dropped"))]
        assert list(p.notes[:len(own)]) == own  # the transformer plan's own notes come first


def test_the_cpu_encoder_needs_no_vram_so_a_host_short_of_it_is_a_host_refusal() -> None:
    comps = component_sizes(GGUF)
    with pytest.raises(PlanError) as info:
        ladder("draft", Budgets(vram=0, host=GiB))
    err = info.value
    assert err.resource == "host RAM" and err.component == "text encoder + connectors"
    # beside what a draft holds on the host with the transformer evicted: the VAEs, the upsampler
    beside = comps["vae"].nbytes + comps["audio"].nbytes + comps["upsampler"].nbytes
    assert err.need == comps["text_encoder"].nbytes + 256 * MiB + comps["connectors"].nbytes + beside


def test_large_connectors_set_the_text_encoders_vram() -> None:
    """The connectors run after the encoder, alone: whichever is larger is the peak."""
    big = replace(GGUF, extra={"memory": {"connectors": {"params": 4e9}}})
    conn = component_sizes(big)["connectors"].nbytes
    modes = {m: (v, h) for m, v, h in _text_modes(big)}
    assert modes["group"][0] == modes["disk"][0] == conn + 256 * MiB
    assert modes["cpu"][0] == 0
    plans = [p for p in candidates("draft", big, Budgets.from_gb(12, 128)) if p.options["text_encoder"] != "cpu"]
    assert plans and all(p.options["text_vram_bytes"] >= conn + 256 * MiB for p in plans)


def test_resident_weights_cost_what_the_format_says() -> None:
    """A resident GGUF transformer is mapped, not loaded through RAM, and needs a bf16 scratch of its
    largest layer; a bf16 one passes through RAM once; model offload keeps every weight in RAM."""
    project = BIGGER_ACT  # the weights + activations, not the decode beside them, are the peak
    for preset in (GGUF, BF16):
        comps = component_sizes(preset)
        t = comps["transformer"]
        side = comps["vae"].nbytes + comps["upsampler"].nbytes
        plans = by_name(candidates("refine", preset, HUGE, project))
        res = plans["resident+vaetiles256"]
        assert res.vram_bytes == t.nbytes + res.options["activation_bytes"] + t.scratch_bytes + side
        assert res.host_bytes == (0 if preset is GGUF else t.nbytes) + side
        model = plans["model"]
        assert model.options["held_host_bytes"] == t.nbytes + side and model.options["held_vram_bytes"] == 0
    assert component_sizes(GGUF)["transformer"].scratch_bytes == int(100.7e6 * 2)


def test_a_mapped_gguf_holds_none_of_the_transformer_in_ram() -> None:
    comps = component_sizes(GGUF)
    for p in ladder("refine", Budgets.from_gb(8, 10)):
        assert p.options["held_host_bytes"] == comps["vae"].nbytes + comps["upsampler"].nbytes
        assert p.host_bytes == comps["vae"].nbytes + comps["upsampler"].nbytes


def test_a_single_layer_llm_runs_all_on_the_gpu_or_all_on_the_cpu() -> None:
    one = replace(GGUF, extra={"memory": {"enhancer": {"blocks": 0}}})
    assert [p.name for p in ladder("enhance", HUGE, one)] == ["llm-gpu1", "llm-cpu"]


def test_measured_sizes_count_gguf_bin_and_pth_files(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    for name, size in (("t.gguf", 100), ("u.pth", 20), ("v.bin", 3), ("w.safetensors", 4000), ("x.json", 9)):
        (folder / name).write_bytes(b"\0" * size)
    preset = replace(GGUF, files=(ModelFile("upsampler", "u", path=str(folder)),))
    assert component_sizes(preset)["upsampler"].nbytes == 4123


def test_a_vram_refusal_at_exactly_the_leanest_plans_vram_is_about_host_ram() -> None:
    leanest = min(candidates("upscale", GGUF, HUGE), key=lambda p: p.vram_bytes)
    with pytest.raises(PlanError) as info:
        ladder("upscale", Budgets(vram=leanest.vram_bytes, host=1))
    assert info.value.resource == "host RAM"
    with pytest.raises(PlanError) as info:
        ladder("upscale", Budgets(vram=leanest.vram_bytes - 1, host=1))
    assert info.value.resource == "VRAM"


def test_the_size_a_refusal_suggests_keeps_the_drafts_shape_and_grows_with_the_card() -> None:
    project = Project(draft_size=(1536, 864), refine_size=(512, 288))
    sizes = []
    for vram_gb in (4.5, 5, 5.5):  # at 4.25 GB only a draft smaller than 512×288 would fit
        with pytest.raises(PlanError) as info:
            ladder("draft", Budgets.from_gb(vram_gb, 256), project=project)
        m = re.search(r"a smaller draft_size such as \[(\d+), (\d+)\] or fewer frames per segment", str(info.value))
        assert m, str(info.value)
        w, h = int(m[1]), int(m[2])
        assert w % 32 == 0 and h % 32 == 0 and 512 < w < 1536 and 288 < h < 864
        # one scale for both sides, each rounded down to the model's 32 px
        assert max(w / 1536, h / 864) < min((w + 32) / 1536, (h + 32) / 864)
        assert ladder("draft", Budgets.from_gb(vram_gb, 256), project=Project(draft_size=(w, h)))
        sizes.append((w, h))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_a_host_refusal_says_when_pinned_memory_is_part_of_it() -> None:
    # 7 GB: the streamer (pinned in place) fits the card, and no plan needs less host RAM
    with pytest.raises(PlanError) as info:
        ladder("refine", Budgets.from_gb(7, 16), BF16)
    assert "GiB of host RAM (pinned + pageable) in its leanest plan" in str(info.value)
    with pytest.raises(PlanError) as info:
        ladder("upscale", Budgets.from_gb(24, 2.6))
    assert "GiB of host RAM in its leanest plan" in str(info.value)


def test_is_oom_is_true_for_both_kinds() -> None:
    import torch

    assert is_oom(MemoryError()) and is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory"))


def test_a_plan_needing_exactly_the_room_beside_held_models_goes_first() -> None:
    plans = ladder("upscale", Budgets.from_gb(8, 32))
    one = next(p for p in plans if p.name == "batch1")
    assert beside_held(plans, one.vram_bytes)[0].name == "batch1"
    assert beside_held(plans, one.vram_bytes - 1)[0].name != "batch1"


def test_a_ladder_of_two_plans_has_one_fallback() -> None:
    two = [StagePlan(name="a", device="cuda"), StagePlan(name="b", device="cuda")]
    assert plan_summary({"upscale": two}) == "upscale: a, on cuda (+1 fallbacks)"


# --------------------------------------------------------------------------- third round: the documented cost model


BIG_ACT = Project(refine_size=(1536, 864))  # activations large enough to be each plan's peak
#: ... even beside the decode of a rung that swaps the VAE in (its tiles are kept until blended, and
#: two clips sit beside them at the blend): over 1 GiB of margin on every rung
BIGGER_ACT = Project(refine_size=(3072, 1728))


@pytest.mark.parametrize("preset", [GGUF, BF16], ids=lambda p: p.name)
def test_each_offload_mode_needs_on_the_card_what_the_cost_model_says(preset: Preset) -> None:
    """block-level group offload: non-block weights + 2 blocks; leaf-level: 2 largest layers;
    sequential: 1 layer; model offload: the whole model; each + activations + dequant scratch."""
    plans = by_name(candidates("refine", preset, Budgets.from_gb(8, 256), BIGGER_ACT))
    for fmt in ("", "/fp8") if preset is BF16 else ("",):
        t = component_sizes(preset)["transformer"]
        t = t.as_format("fp8") if fmt else t
        extra = {"group_block+stream": t.nonblock_bytes + 2 * t.block_bytes,
                 "group_block+stream+lowmem": t.nonblock_bytes + 2 * t.block_bytes,
                 "group_block": t.nonblock_bytes + 2 * t.block_bytes,
                 "group_leaf+stream+lowmem": 2 * t.layer_bytes,
                 "sequential": t.layer_bytes, "model": t.nbytes}
        for rung, weights in extra.items():
            p = plans[f"{rung}{fmt}+vaetiles256"]
            assert p.vram_bytes == weights + p.options["activation_bytes"] + t.scratch_bytes, (rung, fmt)


def test_each_offload_mode_holds_in_host_ram_what_the_cost_model_says() -> None:
    comps = component_sizes(BF16)
    t, side = comps["transformer"], comps["vae"].nbytes + comps["upsampler"].nbytes
    plans = by_name(candidates("refine", BF16, Budgets.from_gb(8, 256), BIG_ACT))
    expect = {"group_block+stream": 2 * t.nbytes,                        # pageable + a pinned copy
              "group_block+stream+lowmem": t.nbytes + 2 * t.block_bytes,  # pinned two blocks at a time
              "group_leaf+stream+lowmem": t.nbytes + 2 * t.layer_bytes,
              "group_block": t.nbytes, "sequential": t.nbytes, "model": t.nbytes}
    for rung, host in expect.items():
        p = plans[f"{rung}+vaetiles256"]
        assert p.host_bytes == host + side and p.options["held_host_bytes"] == host + side, rung
        assert p.options["pinned_bytes"] == host - t.nbytes, rung


def test_streamed_blocks_are_upcast_into_one_bf16_block() -> None:
    """fp8 storage: half-size slots and one bf16 block to compute in; GGUF: a bf16 block plus
    the per-layer scratch of the layers outside the blocks (dequant per block)."""
    b = Budgets.from_gb(24, 256)  # room for resident blocks, so the lean twins exist
    bf16 = component_sizes(BF16)["transformer"]
    fp8 = bf16.as_format("fp8")
    lean = by_name(candidates("refine", BF16, b, BIGGER_ACT))["stream-lean/fp8+vaetiles256"]
    assert lean.vram_bytes == fp8.nonblock_bytes + 2 * fp8.block_bytes + bf16.block_bytes + \
        lean.options["activation_bytes"]
    g = component_sizes(GGUF)["transformer"]
    gl = by_name(candidates("refine", GGUF, b, BIGGER_ACT))["stream-lean+vaetiles256"]
    bf16_block = int(g.params * g.block_fraction / g.blocks * 2)
    assert gl.vram_bytes == g.nonblock_bytes + 2 * g.block_bytes + bf16_block + g.scratch_bytes + \
        gl.options["activation_bytes"]
    plain = by_name(candidates("refine", BF16, b, BIGGER_ACT))
    s = next(p for n, p in plain.items() if n.startswith("stream") and p.options["weights"] == "bfloat16")
    assert isinstance(s.options["resident_blocks"], int)


def test_every_float_format_may_be_stored_in_fp8_and_no_quantized_one() -> None:
    for fmt in ("bfloat16", "float16", "float32"):
        preset = replace(GGUF, extra={"memory": {"transformer": {"fmt": fmt, "params": 2e9}}})
        weights = {p.options["weights"] for p in candidates("refine", preset, HUGE)}
        assert weights == {fmt, "fp8"}, fmt
    for fmt in ("Q3_K_M", "Q8_0"):
        preset = replace(GGUF, extra={"memory": {"transformer": {"fmt": fmt}}})
        assert {p.options["weights"] for p in candidates("refine", preset, HUGE)} == {fmt}


def test_a_preset_preferring_fp8_still_offers_its_bf16_streamer_after_it() -> None:
    streams = [p.options["weights"] for p in candidates("refine", BF16_FP8_FIRST, Budgets.from_gb(8, 64))
               if p.name.startswith("stream+") or p.name.startswith("stream/")]
    assert streams[0] == "fp8" and "bfloat16" in streams


def test_plans_use_the_measured_size_of_the_transformer_file(tmp_path: Path) -> None:
    gguf = tmp_path / "t.gguf"
    gguf.write_bytes(b"\0" * 54321)
    preset = replace(GGUF, files=(ModelFile("transformer_gguf", "transformer", path=str(gguf)),))
    comps = component_sizes(preset)
    res = by_name(candidates("refine", preset, HUGE))["resident"]
    assert res.options["held_vram_bytes"] == 54321 + comps["vae"].nbytes + comps["upsampler"].nbytes


def test_a_transformer_without_blocks_is_offloaded_layer_by_layer() -> None:
    flat = replace(GGUF, extra={"memory": {"transformer": {"blocks": 0}}})
    t = component_sizes(flat)["transformer"]
    group = [p for p in candidates("refine", flat, Budgets.from_gb(8, 256), BIGGER_ACT)
             if p.name == "group_block+vaetiles256"]
    assert group and group[0].vram_bytes == 2 * t.layer_bytes + group[0].options["activation_bytes"] + t.scratch_bytes


def test_a_tiny_or_random_preset_ignores_the_files_it_has(tmp_path: Path) -> None:
    big = tmp_path / "t.gguf"
    big.write_bytes(b"\0" * 4096)
    files = (ModelFile("transformer_gguf", "transformer", path=str(big)),)
    tiny = replace(get_preset("tiny"), files=files)
    assert component_sizes(tiny)["transformer"].nbytes == component_sizes(get_preset("tiny"))["transformer"].nbytes
    rnd = replace(get_preset("ltx2-19b-random"), files=files)
    assert component_sizes(rnd)["transformer"].nbytes == int(18.9e9 * 18 / 32)


def test_a_component_missing_from_the_diffusers_folder_is_measured_from_its_own_file(tmp_path: Path) -> None:
    folder = tmp_path / "ltx"
    (folder / "text_encoder").mkdir(parents=True)
    (folder / "text_encoder" / "m.safetensors").write_bytes(b"\0" * 10)
    vae = tmp_path / "vae.safetensors"
    vae.write_bytes(b"\0" * 321)
    preset = replace(GGUF, files=(ModelFile("diffusers", "ltx", path=str(folder)),
                                  ModelFile("vae", "vae", path=str(vae))))
    assert component_sizes(preset)["vae"].nbytes == 321


def test_latent_tokens_of_sizes_off_the_grid_round_down() -> None:
    assert video_tokens((100, 70), 1) == 3 * 2
    assert video_tokens((100, 70), 9) == 2 * 3 * 2


def test_any_guidance_above_one_doubles_the_batch() -> None:
    plain = _first("refine").options["activation_bytes"]
    assert _first("refine", replace(GGUF, guidance_scale=1.5)).options["activation_bytes"] == 2 * plain


def test_activations_are_proportional_to_the_tokens() -> None:
    one = ladder("refine", HUGE, GGUF, Project(refine_size=(32, 32)), frames=1)[0].options["activation_bytes"]
    many = ladder("refine", HUGE, GGUF, Project(refine_size=(512, 288)), frames=1)[0].options["activation_bytes"]
    assert abs(many - 144 * one) <= 144
    silent = ladder("draft", HUGE, GGUF, Project(draft_size=(32, 32), audio=False), frames=1)[0]
    assert silent.options["activation_bytes"] == one


def test_a_vae_tile_costs_about_the_measured_two_and_a_half_gib() -> None:
    """bench/results/segment_budget_*: 2.5 GiB per 512 px tile beside the weights (19B refine)."""
    comps = component_sizes(GGUF)
    t, vae = comps["transformer"], comps["vae"]
    plans = by_name(candidates("refine", GGUF, Budgets.from_gb(8, 256), Project(refine_size=(1024, 576))))
    # every decoded tile is kept until the blend: at 1024×576 the 512 px tiles (stride 448) cover
    # 512+512+128 × 512+128 px, the 256 px ones (stride 224) 4×256+128 × 2×256+128: the same
    # 1152 × 640 px, over 121 frames of bf16 RGB
    kept = 1152 * 640 * 121 * 3 * 2
    # and at the blend the rows, then the clip, concatenated beside them: two 1024×576×121 clips
    blend = 2 * 1024 * 576 * 121 * 3 * 2
    for tile, expected in ((512, 2.5), (256, 2.5 / 4)):
        p = plans[f"group_leaf+stream+lowmem+vaetiles{'' if tile == 512 else tile}"]
        decode = p.vram_bytes - vae.nbytes - t.nonblock_bytes - kept - blend
        assert abs(decode / GiB - expected) <= 0.05 * expected, tile


def test_the_refine_at_the_seed_budget_picks_a_plan_that_fits_what_was_measured() -> None:
    """bench/results/chain_h200_2026-12-04_run3.json (19B Q4_0, 1024×576×121, 8 GiB, allocator capped
    at 7.08 GiB): every capped shot's first refine plan, stream+vaetiles256 with 8 blocks resident,
    ran out of memory, and its lean twin stream-lean+vaetiles256 then peaked at 5.74 GiB allocated
    (5.75-5.77 reserved) after the decode, where the planner said 4.72. Counting the two clips
    beside the kept tiles at the blend it says 5.52, so at run2's 0.8 GiB context the first plan
    keeps 4 blocks (est. 6.33 GiB): the measured peak plus 4 blocks stays under the cap, plus 8
    did not. run2 (before the decoded tiles were counted) peaked at 7.35-7.53 GiB reserved under
    the 512 px lean rung, which the planner now does not try at all. run4 (..._run4_capped.json)
    ran the chain under the fixed planner."""
    random19b = get_preset("ltx2-19b-random")
    project = Project(vram_budget_gb=8, ram_budget_gb=32, output_size=(1920, 1080))
    b = Budgets.from_gb(8, 32, context=int(0.8 * GiB))
    cap = 7.08 * GiB  # what run3's out-of-memory errors say the allocator was allowed
    plans = by_name(candidates("refine", random19b, b, project))
    blk = component_sizes(random19b)["transformer"].block_bytes
    measured = 5.74 * GiB  # run3's lean 256 px rung, allocated
    lean = plans["stream-lean+vaetiles256"]
    assert lean.options["resident_blocks"] == 0
    assert abs(lean.vram_bytes - measured) <= 0.05 * measured  # est. 5.52 GiB
    assert measured + 8 * blk > cap  # run3's first plan: 8 blocks beside it could not fit
    run2_lean = plans["stream+vaetiles"]
    assert run2_lean.options["resident_blocks"] == 0
    assert run2_lean.vram_bytes > b.vram  # so it is not tried
    first = plan_ladder("refine", random19b, project, "cuda", budgets=b, frames=121)[0]
    assert first.name == "stream+vaetiles256" and first.options["resident_blocks"] == 4
    assert first.vram_bytes == lean.vram_bytes + 4 * blk  # est. 6.33 GiB
    assert first.vram_bytes <= b.vram < first.vram_bytes + blk  # a fifth block would not fit
    assert measured + 4 * blk < cap  # what run3 measured, with the 4 blocks beside it
    # run4 (the same chain after the fix; its 7.08 GiB cap implies a 0.67 GiB context): the first
    # plan kept 5 blocks, peaked at 6.78 GiB allocated after the decode and never fell back
    run4 = plan_ladder("refine", random19b, project, "cuda", budgets=Budgets.from_gb(8, 32, context=int(0.67 * GiB)),
                       frames=121)[0]
    assert run4.name == "stream+vaetiles256" and run4.options["resident_blocks"] == 5
    assert abs(run4.vram_bytes - 6.78 * GiB) <= 0.05 * 6.78 * GiB and 6.78 * GiB < cap  # est. 6.53 GiB
    # its held blocks and buffers leave the upscaler room beside them for batch 4, not 8
    room = b.vram - first.options["held_vram_bytes"]
    up = plan_ladder("upscale", random19b, project, "cuda", budgets=b, frames=121)
    assert [p.name for p in beside_held(up, room)][0] == "batch4"
    # the draft (512×288, run3: 6.61 GiB allocated with 1 block resident) keeps none now
    draft = plan_ladder("draft", random19b, project, "cuda", budgets=b, frames=121)[0]
    assert draft.name.startswith("stream+vaetiles/") and draft.options["resident_blocks"] == 0
    assert draft.vram_bytes <= b.vram


def test_other_families_run_their_recipes_on_the_card_for_the_default_segment() -> None:
    """640×256 is just inside the A14B's measured 640×384×81 at 121 frames (not at 125)."""
    wan = get_preset("wan22-i2v-a14b-gguf")
    project = Project(draft_size=(640, 256))
    default = plan_ladder("draft", wan, project, "cuda", budgets=Budgets.from_gb(12, 64))
    explicit = plan_ladder("draft", wan, project, "cuda", budgets=Budgets.from_gb(12, 64), frames=121)
    assert [p.name for p in default] == [p.name for p in explicit] == ["recipe-model", "recipe-group_leaf"]
    assert {p.device for p in default} == {"cuda"}


def test_without_a_budget_the_free_vram_is_planned_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.memory.planner as planner

    monkeypatch.setattr(planner, "_free_vram", lambda: 80 * GiB)
    plans = plan_ladder("refine", GGUF, Project(ram_budget_gb=256), "cuda")
    assert plans[0].offload == "resident"
    monkeypatch.setattr(planner, "_free_vram", lambda: 6 * GiB)
    assert plan_ladder("refine", GGUF, Project(ram_budget_gb=256), "cuda")[0].offload != "resident"


def test_even_the_smallest_size_a_refusal_suggests_is_one_the_model_takes() -> None:
    with pytest.raises(PlanError) as info:
        ladder("refine", Budgets.from_gb(3.5, 64), project=Project(refine_size=(896, 480)))
    m = re.search(r"refine_size such as \[(\d+), (\d+)\]", str(info.value))
    assert m is not None  # only a very small size fits here: still whole latent patches a side
    assert all(int(v) >= 32 and int(v) % 32 == 0 for v in (m[1], m[2])), m[0]


def test_a_refine_refusal_scales_the_refine_size_not_the_drafts() -> None:
    with pytest.raises(PlanError) as info:
        ladder("refine", Budgets.from_gb(4.0, 64), project=Project(refine_size=(1280, 960)))
    m = re.search(r"a smaller refine_size such as \[(\d+), (\d+)\]", str(info.value))
    assert m, str(info.value)
    w, h = int(m[1]), int(m[2])
    assert w < 1280 and h < 960 and max(w / 1280, h / 960) < min((w + 32) / 1280, (h + 32) / 960)  # 4:3 kept


def test_a_transformer_without_blocks_is_never_offered_the_block_streamer() -> None:
    """Sulphur's streamer moves repeated blocks one at a time; a transformer the planner knows
    no blocks of would get a plan its stage cannot run (found by the mutation run)."""
    blockless = replace(GGUF, extra={**GGUF.extra, "memory": {"transformer": {"blocks": 0}}})
    for stage in ("draft", "refine"):
        offered = candidates(stage, blockless, Budgets.from_gb(8, 64))
        assert offered and not [p for p in offered if p.options.get("streamer")], stage
        assert [p for p in candidates(stage, GGUF, Budgets.from_gb(8, 64)) if p.options.get("streamer")]


def test_the_planner_plans_for_the_device_torch_can_use() -> None:
    import torch

    from pipeline.memory.planner import detect_device

    assert detect_device() == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("wide_enough,expected", [(40, (32, 32)), (96, (96, 32)), (0, None)])
def test_a_suggested_smaller_size_keeps_sides_multiple_of_32_down_to_the_32_floor(wide_enough: int,
                                                                                  expected: tuple | None) -> None:
    """A refusal's "or a smaller size such as W×H" must be a size the storyboard accepts."""
    from pipeline.memory.planner import _largest_fitting_size

    assert _largest_fitting_size((1280, 64), lambda s: s[0] <= wide_enough) == expected


def test_an_upscaler_short_of_vram_is_refused_naming_only_the_budget() -> None:
    """The upscaler's size is the output size, not one a smaller draft/refine_size would change."""
    with pytest.raises(PlanError) as info:
        ladder("upscale", Budgets.from_gb(0.05, 256))
    assert info.value.resource == "VRAM" and info.value.stage == "upscale"
    assert "vram_budget_gb" in str(info.value) and "such as" not in str(info.value)
