"""The one memory-fallback loop (pipeline.render.fallback): down the plan ladder on OOM."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import Budgets, StagePlan, plan_ladder
from pipeline.models.registry import Preset
from pipeline.project.storyboard import Project
from pipeline.render.errors import RenderError
from pipeline.render.fallback import run_down_ladder
from pipeline.stages.base import Cancelled
from pipeline.wire import protocol

REAL = Preset(name="sulphur2-ltx23", family="ltx2", description="22B Q3_K_M test preset")


def _ladder() -> list[StagePlan]:
    plans = plan_ladder("draft", REAL, Project(vram_budget_gb=8, ram_budget_gb=32), "cuda",
                        budgets=Budgets.from_gb(8, 32))
    assert len(plans) >= 3
    return plans


def _run(plans, attempt, models=None, cancel=None):  # noqa: ANN001, ANN202 - test helper
    events: list[protocol.Event] = []
    result = run_down_ladder("draft", "one", plans, attempt, models=models or LoadedModels(),
                             cancel=cancel or threading.Event(), emit=events.append)
    return result, events


def test_cuda_oom_steps_down_one_plan_frees_memory_and_says_so() -> None:
    plans = _ladder()
    tried: list[str] = []
    leaked: list[weakref.ref] = []
    models = LoadedModels()
    models.get("sulphur2-ltx23:transformer", lambda: "held weights")

    def attempt(plan: StagePlan) -> str:
        tried.append(plan.name)
        if len(tried) == 1:
            held = torch.empty(8 * 2**20, dtype=torch.uint8)  # pinned by the traceback if not freed
            leaked.append(weakref.ref(held))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        gc.collect()
        assert leaked[0]() is None, "the failed attempt's tensors are still alive"
        return plan.name

    result, events = _run(plans, attempt, models)
    assert tried == [plans[0].name, plans[1].name] and result == plans[1].name
    assert models.names() == [], "the models of the failed plan were kept"
    (fallback,) = events
    assert isinstance(fallback, protocol.PlanFallback)
    assert (fallback.stage, fallback.segment, fallback.failed_plan, fallback.next_plan) == (
        "draft", "one", plans[0].describe(), plans[1].describe())
    assert "Tried to allocate 1.00 GiB" in fallback.reason


def test_a_real_host_allocation_failure_falls_back_too() -> None:
    plans = _ladder()
    tried: list[StagePlan] = []

    def attempt(plan: StagePlan) -> StagePlan:
        tried.append(plan)
        if len(tried) == 1:
            torch.empty(2**50, dtype=torch.uint8)  # a real host allocation failure
        return plan

    got, events = _run(plans, attempt)
    assert got is plans[1] and len(tried) == 2
    assert [type(e) for e in events] == [protocol.PlanFallback]


def test_ladder_exhausted_is_an_oom_error_naming_every_plan() -> None:
    plans = _ladder()[:3]
    calls: list[str] = []

    def always_oom(plan: StagePlan) -> None:
        calls.append(plan.name)
        raise MemoryError("no RAM")

    with pytest.raises(RenderError) as err:
        _run(plans, always_oom)
    assert calls == [p.name for p in plans]
    assert (err.value.kind, err.value.stage, err.value.segment) == ("oom", "draft", "one")
    assert all(p.describe() in err.value.message for p in plans) and "no RAM" in err.value.message


def test_other_errors_fail_the_stage_at_once_and_keep_the_models() -> None:
    plans = _ladder()
    models = LoadedModels()
    models.get("kept", lambda: "weights")

    def broken(plan: StagePlan) -> None:
        raise ValueError("not memory")

    with pytest.raises(RenderError) as err:
        _run(plans, broken, models)
    assert err.value.kind == "stage_failed" and "ValueError: not memory" in err.value.message
    assert isinstance(err.value.__cause__, ValueError)
    assert models.names() == ["kept"]


def test_a_file_system_error_fails_the_stage_in_words(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    """A stage that cannot write its cache entry (``.sulphur/cache`` is a file) said
    ``NotADirectoryError: [Errno 20] Not a directory: '…'``: now the path and the reason."""
    (tmp_path / "cache").write_text("a file where the cache folder should be")

    def writes_entry(plan: StagePlan) -> None:
        (tmp_path / "cache" / "draft").mkdir(parents=True)

    with pytest.raises(RenderError) as err:
        _run(_ladder(), writes_entry)
    assert err.value.message == f"draft failed: {tmp_path / 'cache' / 'draft'}: Not a directory"
    assert isinstance(err.value.__cause__, NotADirectoryError)


def test_a_cancel_stops_before_the_next_plan() -> None:
    plans = _ladder()
    cancel = threading.Event()
    tried: list[str] = []

    def oom_then_cancel(plan: StagePlan) -> None:
        tried.append(plan.name)
        cancel.set()
        raise MemoryError("no RAM")

    with pytest.raises(Cancelled):
        _run(plans, oom_then_cancel, cancel=cancel)
    assert tried == [plans[0].name]
