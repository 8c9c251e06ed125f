"""Where the draft's text encoder goes, decided by VRAM *and* host RAM (issue 24, item 7).

The planner offers, per transformer plan, the fastest text placement that fits beside what
the plan keeps loaded, then the one needing the least host RAM (what a host OOM steps down
to). A placement chosen by VRAM alone would step down to the CPU encoder (0 VRAM, but a
full 25 GB copy in RAM and far slower) instead of disk offload (5 GB of RAM).
"""

from __future__ import annotations

import pytest

from pipeline.memory.planner import GiB, plan_ladder
from pipeline.models.registry import get_preset
from pipeline.project.storyboard import Project

RUNGS = ("resident", "group", "disk", "cpu")  # fastest first


def ladder(vram_gb: int, host_gb: int) -> list:
    return plan_ladder("draft", get_preset("sulphur2-ltx23"), Project(vram_budget_gb=vram_gb, ram_budget_gb=host_gb),
                       "cuda", frames=121)


def _text(p) -> tuple[str, float, bool]:  # noqa: ANN001
    return p.options["text_encoder"], round(p.options["text_host_bytes"] / GiB, 1), p.options["keep_text_encoder"]


@pytest.mark.parametrize(("vram_gb", "host_gb", "first", "then"), [
    (8, 44, ("group", 25.4, False), ("disk", 5.4, True)),     # too little RAM to keep a 25 GB encoder
    (8, 128, ("group", 25.4, True), ("disk", 5.4, True)),     # everything fits at once: keep it
    (48, 128, ("resident", 25.4, True), ("disk", 5.4, True)),  # the encoder fits the card
])
def test_the_text_encoder_steps_down_to_the_placement_needing_least_host_ram(
        vram_gb: int, host_gb: int, first: tuple, then: tuple) -> None:
    plans = ladder(vram_gb, host_gb)
    assert [_text(p) for p in plans[:2]] == [first, then]
    assert plans[0].name.split("/")[0] == plans[1].name.split("/")[0]  # same transformer plan, leaner text


@pytest.mark.parametrize(("vram_gb", "host_gb"), [(5, 44), (8, 32), (8, 44), (12, 64), (24, 64), (48, 128)])
def test_every_plan_keeps_the_fastest_text_placement_that_fits_the_host(vram_gb: int, host_gb: int) -> None:
    plans = ladder(vram_gb, host_gb)
    budget = plans[0].options.get("host_budget_bytes")
    by_base: dict[tuple[str, bool], list[str]] = {}
    for p in plans:
        by_base.setdefault((p.name.split("/")[0], bool(p.options["evict"])), []).append(p.options["text_encoder"])
        assert budget is None or p.host_bytes <= budget
    for modes in by_base.values():
        # in ladder order the placements only get leaner, and the CPU encoder (as much RAM as
        # the group placement, and slower) is never the step down from one that fits
        assert [RUNGS.index(m) for m in modes] == sorted(RUNGS.index(m) for m in modes)
        assert "cpu" not in modes[1:]
