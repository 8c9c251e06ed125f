"""The memory plan types: how one stage runs (:class:`StagePlan`), the budgets it must fit
(:class:`Budgets`) and the refusal when nothing fits (:class:`PlanError`).

Kept apart from the planner so the family recipes (:mod:`pipeline.memory.recipes`) and
the offload code can build and read plans without importing the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3
MiB = 1024**2

CUDA_CONTEXT = int(0.5 * GiB)
VRAM_MARGIN = 0.10
HOST_RESERVE = int(2.5 * GiB)
#: The context cost measured in this process (set_context_cost), replacing CUDA_CONTEXT.
_measured_context: list[int] = []


def set_context_cost(nbytes: int | None) -> None:
    """Record the CUDA context + workspace cost measured at start-up (None: keep the estimate)."""
    _measured_context[:] = [] if nbytes is None else [int(nbytes)]


def context_cost() -> int:
    """GPU bytes a process holds outside its allocator: measured if known, else the estimate."""
    return _measured_context[0] if _measured_context else CUDA_CONTEXT


#: GPU memory the libraries take after the start-up measurement (kernels loaded on first use:
#: Triton's GGUF dequant, cuDNN's algorithms for the VAE's 3D convolutions). NVML peaked at
#: 8.13 GiB with the allocator reserving 7.23 of a 7.2 GiB cap and 0.8 GiB measured at start-up
#: (bench/results/chain_h200_2026-12-04.json): 0.1 GiB came later; this allows 2.5×.
LIBRARY_GROWTH = int(0.25 * GiB)


def allocator_cap(budget_gb: float | None) -> int | None:
    """Bytes the CUDA allocator may reserve so that NVML's figure for the whole process (context,
    library workspaces, the allocator's reserve) stays within ``budget_gb``: the budget less the
    measured context and :data:`LIBRARY_GROWTH`. None: no budget, no cap."""
    if budget_gb is None:
        return None
    return max(0, int(budget_gb * GiB) - context_cost() - LIBRARY_GROWTH)


class PlanError(RuntimeError):
    """No plan fits the budgets; the message names the component, the amount and a setting that fits."""

    def __init__(self, stage: str, component: str, resource: str, need: int, have: int, hint: str) -> None:
        self.stage, self.component, self.resource = stage, component, resource
        self.need, self.have, self.hint = need, have, hint
        super().__init__(
            f"{stage}: {component} needs {need / GiB:.1f} GiB of {resource} in its leanest plan, "
            f"but only {have / GiB:.1f} GiB is usable; {hint}")


@dataclass(frozen=True)
class StagePlan:
    """How one stage runs. ``offload`` is one of: resident, model, group_block, group_leaf, sequential.

    ``options`` carries the details the stage applies (see pipeline/memory/offload.py) and the
    estimates the worker reports: ``vram_bytes``/``host_bytes`` (peaks), ``weights``
    (stored format or "fp8" for layerwise upcast), ``weights_source`` (where the stored format
    was learnt: the GGUF's header, or the preset's entry while the file is absent), ``use_stream``, ``low_cpu_mem_usage``,
    ``text_encoder`` (resident / group / disk / cpu), ``evict`` (held
    components to drop before the stage), ``esrgan_batch``, ``esrgan_tile``, ``n_gpu_layers``,
    ``cuda_graph`` (a resident transformer's steps replayed as a CUDA graph).
    """

    name: str
    device: str = "cpu"
    offload: str = "resident"
    vae_tiling: bool = False
    dtype: str = "float32"
    notes: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def vram_bytes(self) -> int:
        return int(self.options.get("vram_bytes", 0))

    @property
    def host_bytes(self) -> int:
        return int(self.options.get("host_bytes", 0))

    def describe(self) -> str:
        parts = [self.name, f"on {self.device}"]
        o = self.options
        if self.offload != "resident":
            parts.append(self.offload + ("+stream" if o.get("use_stream") else ""))
        if o.get("weights"):  # and where the format was learnt: the file's header, or the preset
            parts.append(f"weights {o['weights']}" + (f" ({o['weights_source']})" if o.get("weights_source") else ""))
        if o.get("text_encoder"):
            parts.append(f"text encoder {o['text_encoder']}" + (" (transformer evicted)" if o.get("evict") else ""))
        if o.get("cuda_graph"):
            parts.append("CUDA graph steps")
        if self.vae_tiling:
            parts.append("VAE tiling")
        if o.get("esrgan_batch"):
            parts.append(f"batch {o['esrgan_batch']}" + (f", tiles {o['esrgan_tile']}px" if o.get("esrgan_tile") else ""))
        if "n_gpu_layers" in o:
            parts.append("all layers on GPU" if o["n_gpu_layers"] < 0 else f"{o['n_gpu_layers']} layers on GPU")
        if "vram_bytes" in o:
            parts.append(f"est. {self.vram_bytes / GiB:.1f} GiB VRAM, {self.host_bytes / GiB:.1f} GiB host")
        return ", ".join(parts)


@dataclass(frozen=True)
class Budgets:
    """Usable bytes on each side, after reserves, and where the figures came from."""

    vram: int
    host: int
    vram_setting: float | None = None   # GB as written in the storyboard, or None (detected)
    host_setting: float | None = None

    @classmethod
    def from_gb(cls, vram_gb: float, host_gb: float, *, detected: bool = False,
                context: int | None = None) -> Budgets:
        """Budgets as a user states them: a card of ``vram_gb`` and a machine of ``host_gb``.
        A stated card includes the process's context (``context``, default :func:`context_cost`)."""
        vram = int(vram_gb * GiB) - (0 if detected else context_cost() if context is None else context)
        # plans stay under the allocator's cap (allocator_cap) on small cards too
        usable = int(vram * (1 - VRAM_MARGIN)) if detected else min(int(vram * (1 - VRAM_MARGIN)), vram - LIBRARY_GROWTH)
        return cls(vram=max(0, usable), host=max(0, int(host_gb * GiB) - HOST_RESERVE),
                   vram_setting=None if detected else vram_gb, host_setting=None if detected else host_gb)
