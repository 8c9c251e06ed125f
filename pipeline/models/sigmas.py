"""Sampling schedules as the published recipes define them (pure Python, no torch).

Two kinds of draft schedule exist in the presets:

* ``("ltxv", max_shift, base_shift, stretch, terminal)`` — the schedule ComfyUI's
  ``LTXVScheduler`` node computes (the seed pipeline's Pass 1): a shift that grows
  linearly with the latent token count between 1024 and 4096 tokens, applied as
  ``e^s / (e^s + (1/t - 1))`` to ``t = linspace(1, 0, steps + 1)``, then stretched so the
  last non-zero sigma lands on ``terminal``.
* ``("fixed", s0, s1, …)`` — a published array used as given (Lightricks' distilled
  recipe: ``DISTILLED_SIGMA_VALUES``).

The scheduler receives them with dynamic shifting off, so the values are what runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Lightricks' distilled two-stage recipe (ltx-pipelines ``utils/constants.py``; diffusers ships the
#: same numbers as ``diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES`` / ``STAGE_2_…``).
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
STAGE_2_DISTILLED_SIGMAS = (0.909375, 0.725, 0.421875)


def ltxv_sigmas(steps: int, tokens: int, *, max_shift: float, base_shift: float, stretch: bool,
                terminal: float) -> list[float]:
    """``steps + 1`` sigmas ending in 0, as ComfyUI's LTXVScheduler computes them for ``tokens`` latent tokens."""
    slope = (max_shift - base_shift) / (4096 - 1024)
    shift = tokens * slope + (base_shift - slope * 1024)
    out: list[float] = []
    for i in range(steps + 1):
        t = 1.0 - i / steps
        out.append(math.exp(shift) / (math.exp(shift) + (1.0 / t - 1.0)) if t != 0 else 0.0)
    if stretch:
        nonzero = [s for s in out if s != 0]
        scale = (1.0 - nonzero[-1]) / (1.0 - terminal)
        out = [1.0 - (1.0 - s) / scale if s != 0 else 0.0 for s in out]
    return out


def draft_sigmas(schedule: Sequence[object] | None, steps: int, tokens: int) -> list[float] | None:
    """The draft's sigmas for the scheduler (terminal 0 dropped: the scheduler appends it); None = scheduler default."""
    if not schedule:
        return None
    kind, *args = schedule
    if kind == "fixed":
        values = [float(s) for s in args]  # type: ignore[arg-type]
    elif kind == "ltxv":
        max_shift, base_shift, stretch, terminal = args
        values = ltxv_sigmas(steps, tokens, max_shift=float(max_shift), base_shift=float(base_shift),  # type: ignore[arg-type]
                             stretch=bool(stretch), terminal=float(terminal))  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown sigma schedule {kind!r}")
    return values[:-1] if len(values) > 1 and values[-1] == 0.0 else values
