"""The memory recipes are data the draft stage looks up: check the brief's rules hold in it."""

from __future__ import annotations

import pytest

from pipeline.memory import recipes
from pipeline.memory.planner import StagePlan
from pipeline.models.registry import all_presets, get_preset

FAMILIES = ("wan", "svd", "ltxv", "cogvideox")


def test_every_family_preset_has_a_ladder_and_tiny_twins_share_their_real_twins() -> None:
    presets = [p for p in all_presets() if p.family in FAMILIES]
    assert {p.name for p in presets} >= {"wan22-ti2v-5b", "wan22-i2v-a14b-gguf", "svd-xt", "ltxv-0.9",
                                         "cogvideox-5b-i2v"}
    for p in presets:
        ladder = recipes.ladder(p)
        assert ladder and all(r.offload in ("model", "group_leaf", "group_block", "sequential") for r in ladder)
        if p.builder is not None:
            assert ladder == recipes.RECIPES[p.extra["recipe"]]


def test_seed_recipes() -> None:
    # every T5 / umT5 family encodes on the CPU and evicts the encoder
    for name in ("wan22-ti2v-5b", "wan22-i2v-a14b-gguf", "ltxv-0.9", "cogvideox-5b-i2v"):
        assert recipes.ladder(get_preset(name))[0].text_encoder == "cpu_fp32"
    # GGUF experts: no sequential rung (accelerate's meta step drops the quant type)
    a14b = recipes.ladder(get_preset("wan22-i2v-a14b-gguf"))
    assert "sequential" not in {r.offload for r in a14b}
    leaf = next(r for r in a14b if r.offload == "group_leaf")
    assert leaf.use_stream and leaf.vae_tiling
    svd = recipes.ladder(get_preset("svd-xt"))[0]
    assert svd.offload == "model" and svd.forward_chunking
    assert recipes.ladder(get_preset("ltxv-0.9"))[0].offload == "sequential"
    cog = recipes.ladder(get_preset("cogvideox-5b-i2v"))[0]
    assert cog.offload == "sequential" and cog.vae_tiling


def test_plans_put_the_recipe_measured_at_that_size_first() -> None:
    a14b = get_preset("wan22-i2v-a14b-gguf")
    assert recipes.plans(a14b, "cuda", (640, 384), 81)[0].options["recipe"] == "model"
    assert recipes.plans(a14b, "cuda", (1280, 720), 81)[0].options["recipe"] == "group_leaf"
    assert [p.name for p in recipes.plans(a14b, "cpu", (64, 32), 5)] == ["cpu"]


def test_a_draft_that_overflowed_on_the_gpu_starts_one_rung_down() -> None:
    # Wan2.2-TI2V-5B under model offload overflowed 12 GiB at 640×352×121 (bench/family_fit.py).
    ti2v = get_preset("wan22-ti2v-5b")
    long_clip = recipes.plans(ti2v, "cuda", (640, 352), 121)
    short_clip = recipes.plans(ti2v, "cuda", (640, 352), 81)
    assert [p.options["recipe"] for p in long_clip] == ["group_leaf", "sequential", "model"]
    assert short_clip[0].options["recipe"] == "model"


@pytest.mark.parametrize(("offload", "expected"), [("model", "model"), ("group_leaf", "group_leaf"),
                                                   ("sequential", "group_leaf"), ("group_block", "group_leaf")])
def test_generic_plans_map_to_a_recipe_at_least_as_lean(offload: str, expected: str) -> None:
    a14b = get_preset("wan22-i2v-a14b-gguf")
    assert recipes.resolve(a14b, StagePlan(name="x", device="cuda", offload=offload)).name == expected
    assert recipes.resolve(a14b, StagePlan(name="cpu", device="cpu")) is recipes.CPU
