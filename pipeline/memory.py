"""Memory plans: how a stage places its weights so it fits the VRAM and host budgets.

The runner asks :func:`plan_ladder` for an ordered list of plans per stage, tries the
first, and on an out-of-memory error (CUDA or host) steps down to the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.models.registry import Preset
    from pipeline.storyboard import Project


@dataclass(frozen=True)
class StagePlan:
    """How one stage runs. ``offload`` is one of: resident, model, group_block, group_leaf, sequential."""

    name: str
    device: str = "cpu"
    offload: str = "resident"
    vae_tiling: bool = False
    dtype: str = "float32"
    notes: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [self.name, f"on {self.device}"]
        if self.vae_tiling:
            parts.append("VAE tiling")
        return ", ".join(parts)


def detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_CUDA_LADDER = ("resident", "model", "group_block", "group_leaf", "sequential")


def plan_ladder(stage: str, preset: Preset, project: Project, device: str | None = None) -> list[StagePlan]:
    """Plans for ``stage`` from fastest to leanest."""
    device = device or detect_device()
    if device == "cpu":
        # Host RAM can run out too: the lean rung tiles the VAE, upscales one frame at a
        # time and drops every held model between stages.
        return [StagePlan(name="cpu", device="cpu", offload="resident", dtype="float32"),
                StagePlan(name="cpu-lean", device="cpu", offload="resident", vae_tiling=True,
                          dtype="float32", options={"batch": 1, "evict_between_stages": True})]
    return [StagePlan(name=o, device=device, offload=o, vae_tiling=o != "resident", dtype="bfloat16")
            for o in _CUDA_LADDER]


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory and host allocation failures."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
