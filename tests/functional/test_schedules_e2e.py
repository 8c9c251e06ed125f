"""The draft and refine stages hand the preset's published sigma arrays to the real scheduler.

A spy wraps ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (the real method still runs) and
records what the stage passed and what the scheduler ended up stepping through; the expected
arrays are computed here from the published formula (ComfyUI LTXVScheduler), not by the code
under test.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.stages.draft import DraftStage
from pipeline.stages.refine import RefineStage
from tests.functional.test_draft_refine import Runner, make_job


def ltxv_reference(steps: int, tokens: int) -> list[float]:
    # Seed Pass 1: LTXVScheduler(max_shift=4.0, base_shift=1.5, stretch=True, terminal=0.1).
    mm = (4.0 - 1.5) / (4096 - 1024)
    s = tokens * mm + 1.5 - mm * 1024
    shifted = [math.exp(s) / (math.exp(s) + (1 / t - 1)) for t in (1 - k / steps for k in range(steps))]
    factor = (1 - shifted[-1]) / (1 - 0.1)
    return [1 - (1 - x) / factor for x in shifted]



def test_draft_and_refine_receive_the_seed_schedules(tmp_path: Path, seen: list[Any]) -> None:
    run = Runner(tmp_path, LoadedModels())
    job = make_job(tmp_path, frames=17)
    draft = run(DraftStage(), job)
    w, h = job.draft_size
    tokens = ((17 - 1) // 8 + 1) * (h // 32) * (w // 32)
    want = ltxv_reference(job.steps, tokens)
    # video and audio schedulers both get it; the scheduler runs exactly it, then 0
    draft_calls = list(seen)
    assert len(draft_calls) == 2
    for passed, used in draft_calls:
        assert passed == pytest.approx(want, abs=1e-9)
        assert used == pytest.approx([*want, 0.0], abs=1e-6)
    # the BWE vocoder's waveform (48 kHz) is not silence
    import numpy as np

    audio = np.load(draft.file("audio.npy"))
    assert draft.meta["sample_rate"] == 48000 and float(np.sqrt(np.mean(audio ** 2))) > 1e-3
    seen.clear()
    run(RefineStage(), job, {"draft": draft})
    for passed, used in seen:
        assert passed == pytest.approx([0.85, 0.7250, 0.4219])
        assert used == pytest.approx([0.85, 0.7250, 0.4219, 0.0], abs=1e-6)
    assert len(seen) == 2


def test_distilled_schedule_reaches_the_scheduler(tmp_path: Path, seen: list[Any]) -> None:
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

    from pipeline.models.ltx2 import DISTILLED_SCHEDULE

    run = Runner(tmp_path, LoadedModels())
    job = make_job(tmp_path)
    preset = replace(job.preset, extra={**job.preset.extra, "draft_schedule": DISTILLED_SCHEDULE})
    run(DraftStage(), replace(job, preset=preset, steps=3))  # a fixed array sets its own step count
    assert [p for p, _ in seen] == [list(DISTILLED_SIGMA_VALUES)] * 2
    assert seen[0][1] == pytest.approx([*DISTILLED_SIGMA_VALUES, 0.0], abs=1e-6)
