"""GPU memory high-water marks and times at the phase boundaries of a stage, as one log line.

The runner reports a stage's peak; the planner's estimate is a maximum over phases (text
encoder, denoise, upsample, VAE decode), so a bench needs to know which phase set the peak
to check the estimate against it (bench/chain.py collects these lines). The marks read the
allocator's running maximum and never reset it, so the stage's own peak is unchanged.
Each mark also says when the phase's GPU work was done (it waits for the device, once per
phase): where a stage's time goes before its first step, without a profiler.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.wire.protocol import Event, Log

GiB = 1024**3

# Deferred imports: torch — only a stage that runs on CUDA marks anything


class PhasePeaks:
    """``mark(phase)`` after each phase; ``emit()`` once at the end (nothing without CUDA)."""

    def __init__(self, stage: str, device: str) -> None:
        self.stage, self.marks = stage, []
        self.device = device
        self.cuda = device.startswith("cuda")
        self.t0 = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.cuda:
            import torch

            dev = torch.device(self.device)
            torch.cuda.synchronize(dev)
            self.marks.append((phase, torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_reserved(dev),
                               time.perf_counter() - self.t0))

    def line(self) -> str:
        """``"<stage> memory: peak after text 1.20/1.50 at 0.4 s, after denoise 3.10/3.40 at 2.9 s GiB
        allocated/reserved"`` (seconds since this was made, near the stage's start)."""
        parts = ", ".join(f"after {p} {a / GiB:.2f}/{r / GiB:.2f} at {t:.1f} s" for p, a, r, t in self.marks)
        return f"{self.stage} memory: peak {parts} GiB allocated/reserved"

    def emit(self, emit: Callable[[Event], None]) -> None:
        if self.marks:
            emit(Log(level="debug", message=self.line()))
