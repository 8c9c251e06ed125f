"""The allocator's cap keeps the whole process, as NVML counts it, within ``vram_budget_gb``
(issue 20): the budget less the context measured at start-up and the libraries' later growth,
and every plan the planner makes fits under that cap."""

from __future__ import annotations

import pytest

from pipeline.memory.plan import LIBRARY_GROWTH, Budgets, GiB, allocator_cap, set_context_cost


@pytest.fixture(autouse=True)
def _estimate_again() -> None:
    yield
    set_context_cost(None)


def test_the_cap_is_the_budget_less_the_measured_context_and_growth() -> None:
    set_context_cost(int(0.8 * GiB))  # what the chain bench measured on an H200
    cap = allocator_cap(8)
    assert cap == 8 * GiB - int(0.8 * GiB) - LIBRARY_GROWTH
    assert cap + int(0.8 * GiB) + LIBRARY_GROWTH == 8 * GiB  # NVML: context + growth + the allocator's reserve
    set_context_cost(int(1.2 * GiB))
    assert allocator_cap(8) == cap - int(0.4 * GiB)  # a costlier context leaves the allocator less


def test_no_budget_no_cap_and_never_below_zero() -> None:
    assert allocator_cap(None) is None
    set_context_cost(int(2 * GiB))
    assert allocator_cap(1) == 0


@pytest.mark.parametrize("context_gib", [0.3, 0.8, 1.5])
@pytest.mark.parametrize("budget_gb", [2.5, 3, 4, 6, 8, 12, 24, 48])
def test_every_plan_fits_under_the_cap(budget_gb: float, context_gib: float) -> None:
    set_context_cost(int(context_gib * GiB))
    planned = Budgets.from_gb(budget_gb, 32).vram
    assert planned <= allocator_cap(budget_gb)
    assert planned >= 0
