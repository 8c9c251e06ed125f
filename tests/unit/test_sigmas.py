"""The sigma arrays that reach the scheduler equal the published recipes, computed here independently.

References: ComfyUI ``comfy_extras/nodes_lt.py`` ``LTXVScheduler.get_sigmas`` (the seed's Pass 1, with
max_shift 4.0, base_shift 1.5, stretch, terminal 0.1 per the seed's write-up) and Lightricks'
``ltx-pipelines`` distilled constants, as shipped by ``diffusers.pipelines.ltx2.utils``.
"""

from __future__ import annotations

import math

import pytest

from pipeline.models.registry import get_preset
from pipeline.models.sigmas import draft_sigmas


def reference_ltxv(steps: int, tokens: int, max_shift: float, base_shift: float, terminal: float) -> list[float]:
    # LTXVScheduler: mm over 1024..4096 tokens, sigmoid-style shift, then stretch to the terminal.
    mm = (max_shift - base_shift) / 3072.0
    b = base_shift - mm * 1024.0
    s = tokens * mm + b
    raw = [1.0 - k / steps for k in range(steps + 1)]
    shifted = [math.exp(s) / (math.exp(s) + (1.0 / t - 1.0)) if t > 0 else 0.0 for t in raw]
    last = shifted[-2]
    factor = (1.0 - last) / (1.0 - terminal)
    return [1.0 - (1.0 - x) / factor if x > 0 else 0.0 for x in shifted]


@pytest.mark.parametrize("tokens", [1024, 2 * 9 * 16, 7 * 9 * 16, 4096, 8000])
@pytest.mark.parametrize("steps", [4, 8])
def test_seed_pass1_schedule_matches_ltxv_scheduler(tokens: int, steps: int) -> None:
    got = draft_sigmas(get_preset("sulphur2-ltx23").extra["draft_schedule"], steps, tokens)
    want = reference_ltxv(steps, tokens, 4.0, 1.5, 0.1)[:-1]  # the scheduler appends the 0
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] == pytest.approx(1.0) and got[-1] == pytest.approx(0.1)


#: Lightricks' ltx-pipelines ``utils/constants.py`` (DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES),
#: written out here so a change in diffusers or in the preset both show: LTX-2.5's distilled recipe uses the
#: same arrays as 2.3's (diffusers' LTX-2.5 docs; ``pipelines/ltx2/utils.py`` has one constant for both).
DISTILLED_REFERENCE = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875]
STAGE_2_REFERENCE = [0.909375, 0.725, 0.421875]


@pytest.mark.parametrize("name", ["ltx23-distilled", "ltx25-distilled"])
def test_distilled_presets_use_the_published_reference_values(name: str) -> None:
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES

    assert list(DISTILLED_SIGMA_VALUES) == DISTILLED_REFERENCE
    assert list(STAGE_2_DISTILLED_SIGMA_VALUES) == STAGE_2_REFERENCE
    p = get_preset(name)
    for tokens in (1, 360, 12345):  # a fixed array does not depend on the token count
        assert draft_sigmas(p.extra["draft_schedule"], p.steps, tokens) == DISTILLED_REFERENCE
    assert list(p.refine_sigmas) == [*STAGE_2_REFERENCE, 0.0]
    assert p.steps == 8 and p.guidance_scale == 1.0


def test_distilled_preset_uses_lightricks_arrays() -> None:
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES

    p = get_preset("ltx23-distilled")
    assert draft_sigmas(p.extra["draft_schedule"], p.steps, 12345) == list(DISTILLED_SIGMA_VALUES)
    assert list(p.refine_sigmas[:-1]) == list(STAGE_2_DISTILLED_SIGMA_VALUES)
    assert p.refine_sigmas[0] == 0.909375 and p.steps == 8 and p.guidance_scale == 1.0


def test_seed_pass2_sigmas_are_the_manual_ones() -> None:
    assert get_preset("sulphur2-ltx23").refine_sigmas == (0.85, 0.7250, 0.4219, 0.0)
