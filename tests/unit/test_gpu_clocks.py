"""bench/gpu_clocks.py: a stage's GPU clocks, power, busy share and clock-event reasons."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gpu_clocks import GpuClockSampler, clock_window, reason_names  # noqa: E402


def _s(mhz: float, reasons: int = 0, busy: float = 100) -> dict[str, float]:
    return {"sm_mhz": mhz, "power_w": mhz / 3, "temp_c": mhz / 40, "busy_pct": busy, "reasons": reasons}


def test_a_window_sums_up_only_its_own_samples() -> None:
    samples = [(0.0, _s(1980)), (1.0, _s(1980)), (2.0, _s(1500, 0x4, busy=80)), (3.0, _s(1200, 0x4 | 0x20, 60)),
               (4.0, _s(1980))]
    w = clock_window(samples, 1.5, 3.0)
    assert w == {"samples": 2, "sm_mhz_mean": 1350, "sm_mhz_min": 1200, "power_w_mean": 450, "temp_c_max": 38,
                 "busy_pct_mean": 70, "reasons": {"sw_power_cap": 1.0, "sw_thermal": 0.5}}
    assert clock_window(samples, 0.0, 1.0)["reasons"] == {}
    assert clock_window(samples, 5.0, 6.0) == {}


def test_reason_bits_have_nvml_names() -> None:
    assert reason_names(0x1 | 0x8 | 0x40) == ["gpu_idle", "hw_slowdown", "hw_thermal"]
    assert reason_names(0) == []


def test_the_sampler_samples_the_gpu() -> None:
    sampler = GpuClockSampler(interval=0.05)
    time.sleep(0.2)
    sampler.stop()
    if not sampler.samples:
        pytest.skip("no NVIDIA driver: nothing to sample")
    w = sampler.window(0, time.time())
    assert w["samples"] == len(sampler.samples) and w["sm_mhz_min"] > 0
