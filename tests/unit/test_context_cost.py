"""``vram_budget_gb`` is the whole process as NVML sees it: the context cost measured at
start-up comes off the budget before planning (and off the allocator cap)."""

from __future__ import annotations

import os

import pytest

from pipeline.memory.plan import CUDA_CONTEXT, VRAM_MARGIN, Budgets, GiB, context_cost, set_context_cost
from pipeline.memory.planner import plan_ladder
from pipeline.models.registry import Preset
from pipeline.project.storyboard import Project
from pipeline.telemetry.gpu import context_bytes, process_gpu_bytes

REAL = Preset(name="sulphur2-ltx23", family="ltx2", description="22B Q3_K_M test preset")


@pytest.fixture(autouse=True)
def _estimate_again() -> None:
    yield
    set_context_cost(None)


def test_context_is_what_nvml_sees_beyond_the_allocator() -> None:
    # NVML charges 1.4 GiB to the process; the allocator reserved 0.6 GiB of it
    assert context_bytes(int(1.4 * GiB), int(0.6 * GiB)) == int(1.4 * GiB) - int(0.6 * GiB)
    assert context_bytes(100, 200) == 0  # a sample taken mid-allocation never goes negative


def test_no_nvml_means_no_figure_and_the_estimate_stays() -> None:
    if process_gpu_bytes(os.getpid()) is not None:
        pytest.skip("this machine has NVML and a GPU process")
    assert context_cost() == CUDA_CONTEXT


def test_the_budget_is_the_card_less_the_measured_context() -> None:
    set_context_cost(int(0.9 * GiB))
    b = Budgets.from_gb(8, 32)
    assert b.vram == int((8 * GiB - int(0.9 * GiB)) * (1 - VRAM_MARGIN))
    assert Budgets.from_gb(8, 32, context=0).vram > b.vram
    # a detected budget (free VRAM) already excludes what the process holds
    assert Budgets.from_gb(8, 32, detected=True).vram == int(8 * GiB * (1 - VRAM_MARGIN))


def test_a_costlier_context_keeps_fewer_blocks_on_an_8_gib_card() -> None:
    project = Project(vram_budget_gb=8, ram_budget_gb=32)

    def first_draft_plan(context_gib: float):
        set_context_cost(int(context_gib * GiB))
        return plan_ladder("draft", REAL, project, "cuda", budgets=Budgets.from_gb(8, 32))[0]

    light, heavy = first_draft_plan(0.3), first_draft_plan(2.0)
    assert heavy.vram_bytes <= Budgets.from_gb(8, 32, context=int(2.0 * GiB)).vram
    assert light.vram_bytes > Budgets.from_gb(8, 32, context=int(2.0 * GiB)).vram or \
        light.options.get("resident_blocks", 0) > heavy.options.get("resident_blocks", 0)
