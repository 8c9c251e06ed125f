"""Host telemetry: RAM and CPU, the other budget.

Offloaded weights live in host RAM (diffusers' streamed group offload wants about twice a
model's size there), so an 8 GiB card is also a plan for a 32 GiB machine; the editor shows
both beside VRAM. psutil is a dependency of the project; ``SULPHUR_NO_HOST=1`` switches the
readings off (tests, so the screen does not depend on the machine). Import-light: the TUI
imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class HostSample:
    """One reading: bytes of RAM in use and in all, CPU use over the last interval."""

    ram_used: int
    ram_total: int
    cpu_percent: float
    cores: int


def sample_host() -> HostSample | None:
    """A reading now, or None when switched off or unavailable. The first CPU figure of a
    process is 0.0 (psutil measures between calls): sample once a second and it settles."""
    if os.environ.get("SULPHUR_NO_HOST"):
        return None
    try:
        import psutil  # light, but only the editor and the worker need it
    except ImportError:
        return None
    mem = psutil.virtual_memory()
    return HostSample(ram_used=int(mem.total - mem.available), ram_total=int(mem.total),
                      cpu_percent=float(psutil.cpu_percent(interval=None)), cores=psutil.cpu_count() or 1)


__all__ = ["HostSample", "sample_host"]
