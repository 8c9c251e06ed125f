"""A resident transformer's steps replayed as a CUDA graph (pipeline/memory/cuda_graphs.py).

On the CPU: which calls may be replayed, which plans and modules get graphs at all. On a GPU
(``-m gpu``): a replayed step gives the eager step's output for each call's own inputs, and a
forward that cannot be recorded runs eagerly with nothing lost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from diffusers import LTX2VideoTransformer3DModel

from pipeline.memory import cuda_graphs
from pipeline.memory.cuda_graphs import GraphedSteps, enabled_for, graphed_steps, signature
from pipeline.memory.plan import StagePlan
from pipeline.memory.planner import Budgets, GiB, plan_ladder
from pipeline.models.registry import Preset
from pipeline.models.tiny_ltx2 import TRANSFORMER_CONFIG
from pipeline.project.storyboard import Project

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from ltx2_inputs import ltx2_step_inputs, pipeline_coords  # noqa: E402

GGUF = Preset(name="sulphur2-ltx23", family="ltx2", description="22B Q3_K_M, as published")


def _call(x: torch.Tensor, **kw: object) -> tuple[tuple[torch.Tensor], dict[str, object]]:
    return (x,), {"timestep": torch.zeros(1), "fps": 24.0, "return_dict": False, **kw}


def test_calls_that_differ_only_in_tensor_values_share_a_recording() -> None:
    a = signature(*_call(torch.randn(2, 3)), device_type="cpu")
    assert a is not None and a == signature(*_call(torch.randn(2, 3)), device_type="cpu")


@pytest.mark.parametrize("other", [
    _call(torch.randn(2, 4)),                      # a shape
    _call(torch.randn(2, 3, dtype=torch.float64)),  # a dtype
    _call(torch.randn(3, 2).t()),                  # strides
    _call(torch.randn(2, 3), fps=25.0),            # a plain argument's value
    _call(torch.randn(2, 3), extra=None),          # the arguments' structure
])
def test_any_other_difference_needs_its_own_recording(other: tuple) -> None:
    base = signature(*_call(torch.randn(2, 3)), device_type="cpu")
    assert signature(*other, device_type="cpu") not in (None, base)


def test_calls_that_cannot_be_replayed_have_no_signature() -> None:
    assert signature(*_call(torch.randn(2, 3))) is None  # a tensor off the GPU: its copy is a host step
    assert signature(*_call(torch.randn(2, 3, requires_grad=True)), device_type="cpu") is None
    # an object is compared by identity: its insides could change and a replay would be stale
    assert signature(*_call(torch.randn(2, 3), scale=torch.nn.Identity()), device_type="cpu") is None
    assert signature(*_call(torch.randn(2, 3), weights=bytearray(b"x")), device_type="cpu") is None
    assert signature(*_call(torch.randn(2, 3), dtype=torch.bfloat16, device=torch.device("cpu")),
                     device_type="cpu") is not None


def test_only_resident_gpu_transformer_plans_replay_their_steps() -> None:
    for stage in ("draft", "refine"):
        plans = plan_ladder(stage, GGUF, Project(), "cuda", budgets=Budgets(vram=10_000 * GiB, host=10_000 * GiB),
                            frames=121)
        resident = [p for p in plans if p.offload == "resident"]
        assert resident and all(p.options.get("cuda_graph") for p in resident)
        assert "CUDA graph steps" in resident[0].describe()
        others = [p for p in plans if p.offload != "resident"]
        assert others and not any(p.options.get("cuda_graph") for p in others)
        cpu = plan_ladder(stage, GGUF, Project(), "cpu", budgets=Budgets(vram=0, host=10_000 * GiB), frames=121)
        assert not any(p.options.get("cuda_graph") for p in cpu)


def test_the_environment_turns_graphs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = StagePlan(name="resident", device="cuda", options={"cuda_graph": True})
    assert enabled_for(plan)
    assert not enabled_for(StagePlan(name="resident", device="cuda"))
    monkeypatch.setenv(cuda_graphs.ENV, "0")
    assert not enabled_for(plan)


def _tiny() -> LTX2VideoTransformer3DModel:
    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(**TRANSFORMER_CONFIG).eval()


def test_modules_with_offload_hooks_are_not_recorded() -> None:
    from diffusers.hooks import apply_group_offloading

    model = _tiny()
    assert not cuda_graphs._hooked(model)
    apply_group_offloading(model, onload_device=torch.device("cpu"), offload_type="block_level",
                           num_blocks_per_group=1)
    assert cuda_graphs._hooked(model)


def test_a_module_that_cannot_take_graphs_says_why_and_runs_as_it_is() -> None:
    from diffusers.hooks import apply_group_offloading

    plan = StagePlan(name="resident", device="cuda", options={"cuda_graph": True})
    with graphed_steps(_tiny(), StagePlan(name="resident", device="cuda")) as report:
        assert report is None  # the plan asks for none: nothing to say
    hooked = _tiny()
    apply_group_offloading(hooked, onload_device=torch.device("cpu"), offload_type="block_level",
                           num_blocks_per_group=1)
    patched = _tiny()
    patched.forward = patched.forward  # an instance attribute, as a hook's leftover leaves it
    for model, why in ((hooked, "offload hooks on the module"), (patched, "the module's forward is replaced")):
        before = vars(model).get("forward")
        with graphed_steps(model, plan) as report:
            assert report.declined == (why if torch.cuda.is_available() else "no CUDA device")
            assert report.describe().startswith("CUDA graph not used")
        assert vars(model).get("forward") is before


def test_resident_fp8_plans_promise_no_graphs() -> None:
    bf16 = Preset(name="bf16-test", family="ltx2", description="",
                  extra={"memory": {"transformer": {"fmt": "bfloat16", "params": 19e9}}})
    plans = plan_ladder("draft", bf16, Project(), "cuda", budgets=Budgets(vram=10_000 * GiB, host=10_000 * GiB),
                        frames=121)
    resident = [p for p in plans if p.offload == "resident"]
    assert {p.options["weights"] for p in resident} == {"bfloat16", "fp8"}
    assert all(bool(p.options.get("cuda_graph")) == (p.options["weights"] != "fp8") for p in resident)


# --------------------------------------------------------------------------- on a GPU

def _inputs(model: torch.nn.Module, seed: int) -> dict[str, object]:
    inputs = ltx2_step_inputs(model.config, (128, 64), 9, audio_tokens=8, text_tokens=8, device="cuda",
                              seed=seed, as_rendered=True)
    return inputs | pipeline_coords(model, inputs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_replayed_steps_give_each_calls_eager_output() -> None:
    model = _tiny().to("cuda", torch.bfloat16)  # as the render holds it (the inputs are bf16)
    steps = GraphedSteps(model)
    with torch.no_grad():
        for seed in range(5):  # eager, recorded, then three replays, each with new values
            inputs = _inputs(model, seed)
            got = steps(**inputs)
            want = model(**inputs)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    r = steps.report
    assert (r.eager, r.recorded, r.replayed, r.failure) == (1, 1, 3, "")
    steps.release()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_forward_that_cannot_be_recorded_runs_eagerly() -> None:
    class HostStep(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float(x.sum().item())  # reads the GPU's value on the host: not recordable

    model = HostStep()
    steps = GraphedSteps(model)
    with torch.no_grad():
        for v in (1.0, 2.0, 3.0):
            x = torch.full((4,), v, device="cuda")
            assert torch.equal(steps(x), x * float(x.sum().item()))
    assert steps.report.failure and steps.report.recorded == 0 and steps.report.eager == 3
    assert "previous error" not in steps.report.failure  # the first error, not the one ending the recording
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # back on its own stream


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_call_patterns_past_the_limit_run_eagerly_and_share_one_pool() -> None:
    model = torch.nn.Linear(8, 8).to("cuda")
    steps = GraphedSteps(model)
    with torch.no_grad():
        for rows in (1, 2, 3):  # three call patterns, each called three times
            for seed in range(3):
                x = torch.randn(rows, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
                torch.testing.assert_close(steps(x), model(x))
    r = steps.report
    assert (r.recorded, r.replayed, r.eager) == (cuda_graphs.MAX_RECORDINGS, 2, 3 + 2)
    steps.release()
