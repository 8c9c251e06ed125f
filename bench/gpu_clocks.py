"""What the GPU itself did while a stage's steps ran: its SM clock, power, temperature, how busy
NVML saw it, and why it held its clocks down (NVML's clock-event reasons), sampled every 0.1 s.

A graph-replayed step is the GPU's own time, so a later segment's slower replays mean either a
slower GPU (clocks lowered for power or heat after the upscale's load) or gaps between steps
(a busy share under 100 %): this tells the two apart.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

from pipeline.telemetry.gpu import nvml

#: NVML's clock-event reason bits (nvmlClocksEventReason*), by name
REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
           0x100: "display_clocks"}


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in REASONS.items() if mask & bit]


def clock_window(samples: list[tuple[float, dict[str, float]]], t0: float, t1: float) -> dict[str, Any]:
    """Samples taken from ``t0`` to ``t1`` (epoch seconds) summed up: mean and lowest SM clock,
    mean power and busy share, highest temperature, and each clock-event reason with the share of
    samples it was set in. Empty when no sample falls in the window."""
    inside = [s for t, s in samples if t0 <= t <= t1]
    if not inside:
        return {}
    out: dict[str, Any] = {"samples": len(inside),
                           "sm_mhz_mean": round(statistics.fmean(s["sm_mhz"] for s in inside)),
                           "sm_mhz_min": round(min(s["sm_mhz"] for s in inside)),
                           "power_w_mean": round(statistics.fmean(s["power_w"] for s in inside)),
                           "temp_c_max": round(max(s["temp_c"] for s in inside)),
                           "busy_pct_mean": round(statistics.fmean(s["busy_pct"] for s in inside))}
    counts: dict[str, int] = {}
    for s in inside:
        for name in reason_names(int(s["reasons"])):
            counts[name] = counts.get(name, 0) + 1
    out["reasons"] = {name: round(n / len(inside), 2) for name, n in sorted(counts.items())}
    return out


class GpuClockSampler:
    """Samples the render's GPU (``index``, else CUDA_VISIBLE_DEVICES' first, else 0) until
    :meth:`stop`; a machine without NVML gives no samples."""

    def __init__(self, interval: float = 0.1, index: int | None = None) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.interval = interval
        self._stop = threading.Event()
        self._nvml = nvml()
        if self._nvml is not None:
            first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
            if index is None:
                index = int(first) if first.isdigit() else 0
            self._h = self._nvml.nvmlDeviceGetHandleByIndex(index)
            self._reasons = getattr(self._nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                self._nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _sample(self) -> dict[str, float]:
        n, h = self._nvml, self._h
        return {"sm_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
                "power_w": n.nvmlDeviceGetPowerUsage(h) / 1000,
                "temp_c": n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
                "busy_pct": n.nvmlDeviceGetUtilizationRates(h).gpu,
                "reasons": self._reasons(h)}

    def _run(self) -> None:
        while self._nvml is not None and not self._stop.is_set():
            try:
                self.samples.append((time.time(), self._sample()))
            except Exception:  # noqa: BLE001 - NVML hiccups: skip the sample
                pass
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        return clock_window(self.samples, t0, t1)
