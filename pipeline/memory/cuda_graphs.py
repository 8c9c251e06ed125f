"""A resident transformer's denoising steps replayed as a CUDA graph.

A resident LTX-2 draft step launches about 12,000 kernels, and on an H100 the GPU was busy for
29 % of it: the rest of the step was the host launching (``bench/step_launch.py``, run 15 in
bench/results/README.md). A CUDA graph records one step's launches and replays them all with one
call. A diffusers pipeline calls its transformer with the same shapes at every step of a stage,
so a stage runs its first step as usual, records the second and replays it for the rest.

Written here because nothing kept does this for a module called with keyword arguments in
inference: ``torch.cuda.make_graphed_callables`` takes positional tensors and records backward
graphs too, and ``torch.compile(mode="reduce-overhead")`` compiles every block first (minutes
at full size, again for each shape).

Only for a module whose weights stay on the GPU (a resident plan): offload hooks move weights on
the host between kernels, which a graph cannot record. A graph lives for one stage: its memory
pool is the step's activations, which an eager step holds while it runs too, and the next stage
may change LoRA strengths that a recording would have fixed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

#: Set to "0" to run every step eagerly (the benches' A/B, or a suspected graph bug).
ENV = "SULPHUR_CUDA_GRAPHS"
#: Arguments other than tensors a recording may depend on: compared by value, none can change inside.
PLAIN = (bool, int, float, str, bytes, torch.dtype, torch.device)
#: Call patterns recorded per stage (a step with guidance on calls the transformer in more than one
#: way); more run eagerly. They share one memory pool, so the stage holds one step's activations.
MAX_RECORDINGS = 2


def enabled_for(plan: Any) -> bool:
    """Whether a stage running under ``plan`` replays its transformer steps as a CUDA graph: the
    planner marks resident GPU plans (``options["cuda_graph"]``), and ``SULPHUR_CUDA_GRAPHS=0``
    turns it off."""
    return bool(plan.options.get("cuda_graph")) and os.environ.get(ENV, "1") != "0"


def signature(args: tuple[Any, ...], kwargs: dict[str, Any], device_type: str = "cuda") -> tuple[Any, ...] | None:
    """What a recorded call depends on besides tensor values: the arguments' structure, each
    tensor's shape, strides, dtype and device, and every other argument's value. None when a
    call cannot be replayed: a tensor off ``device_type`` (its copy would be a host step) or that
    needs a gradient, or an argument that is not a plain value (:data:`PLAIN`)."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    key: list[Any] = [spec]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            if leaf.device.type != device_type or leaf.requires_grad:
                return None
            key.append(("tensor", tuple(leaf.shape), leaf.stride(), leaf.dtype, leaf.device))
        elif leaf is None or isinstance(leaf, PLAIN):
            key.append(("value", type(leaf), leaf))
        else:  # an object compared by identity could change inside and replay stale
            return None
    try:
        out = tuple(key)
        hash(out)
    except TypeError:
        return None
    return out


@dataclass
class _Recording:
    graph: Any
    inputs: list[torch.Tensor | None]  # the static copy each tensor argument is read from (None: not a tensor)
    outputs: list[Any]
    spec: Any


@dataclass
class GraphReport:
    """What the graph did in one stage, for the stage's log line."""

    eager: int = 0
    recorded: int = 0
    replayed: int = 0
    failure: str = ""  # why a recording was refused (the steps of that pattern ran eagerly)
    declined: str = ""  # why the plan's graphs were not used at all

    def describe(self) -> str:
        if self.declined:
            return f"CUDA graph not used ({self.declined})"
        counts = f"{self.eager} eager, {self.recorded} recorded, {self.replayed} replayed steps"
        if self.failure:
            return f"CUDA graph: a recording refused ({self.failure}): {counts}"
        return f"CUDA graph: {counts}"


class GraphedSteps:
    """``module.forward`` replaced by: the first call of each signature eager (lazy set-ups such as
    cuBLAS handles, Triton's compiles and the allocator's first blocks cannot happen while
    recording), the second recorded and replayed, later ones replayed. Each call's tensors are
    copied into the recording's inputs and its outputs returned as fresh tensors. Anything the
    recording refuses (a host step inside the forward, out of memory) sends that signature back
    to eager for the rest of the stage."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.eager = module.forward
        self.report = GraphReport()
        self._seen: set[Any] = set()
        self._recordings: dict[Any, _Recording] = {}
        self._refused: set[Any] = set()
        self._pool: Any = None  # one memory pool for the stage's recordings (replays never overlap)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rec = self._recording(args, kwargs)
        if rec is None:
            self.report.eager += 1
            return self.eager(*args, **kwargs)
        return self._replay(rec, args, kwargs)

    def _recording(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Recording | None:
        """The recording this call replays (made now if it is its signature's second call), or None
        for a call that runs eagerly."""
        sig = None if torch.is_grad_enabled() else signature(args, kwargs)
        if sig is None or sig in self._refused:
            return None
        if sig not in self._seen:
            self._seen.add(sig)
            return None
        rec = self._recordings.get(sig)
        if rec is not None:
            self.report.replayed += 1
            return rec
        if len(self._recordings) >= MAX_RECORDINGS:
            return None
        rec = self._record(sig, args, kwargs)
        if rec is not None:
            self.report.recorded += 1
        return rec

    def _record(self, sig: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Recording | None:
        leaves, in_spec = pytree.tree_flatten((args, kwargs))
        statics = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        s_args, s_kwargs = pytree.tree_unflatten(statics, in_spec)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        try:
            # The outer stream context puts this thread back on its stream whatever happens:
            # torch.cuda.graph leaves it on the recording stream when ending a refused recording raises.
            # thread_local: the render's other threads (the encode behind it) may call CUDA meanwhile.
            with torch.cuda.stream(torch.cuda.current_stream()), \
                    torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                out = self.eager(*s_args, **s_kwargs)
        except Exception as exc:  # noqa: BLE001 — any refusal: this signature runs eagerly
            cause = exc.__context__ or exc  # ending the recording raises again; the first error says why
            self._refused.add(sig)
            self.report.failure = f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0][:160]}"
            del graph
            torch.cuda.synchronize()
            return None
        outputs, out_spec = pytree.tree_flatten(out)
        rec = _Recording(graph=graph, inputs=[s if isinstance(s, torch.Tensor) else None for s in statics],
                         outputs=outputs, spec=out_spec)
        self._recordings[sig] = rec
        return rec

    @staticmethod
    def _replay(rec: _Recording, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        leaves = pytree.tree_leaves((args, kwargs))
        for static, leaf in zip(rec.inputs, leaves, strict=True):
            if static is not None:
                static.copy_(leaf)
        rec.graph.replay()
        # fresh tensors: the next replay overwrites the recording's outputs
        fresh = [o.clone() if isinstance(o, torch.Tensor) else o for o in rec.outputs]
        return pytree.tree_unflatten(fresh, rec.spec)

    def release(self) -> None:
        """Drop the recordings (their memory pools go back to the allocator)."""
        for rec in self._recordings.values():
            rec.graph.reset()
        self._recordings.clear()


def _hooked(module: torch.nn.Module) -> bool:
    """Whether hooks run host code between ``module``'s kernels (diffusers' group offload or
    layerwise casting, accelerate's offload, Sulphur's block streamer)."""
    if getattr(module, "_sulphur_streamer", None) is not None:
        return True
    for m in module.modules():
        registry = getattr(m, "_diffusers_hook", None)
        if (registry is not None and registry.hooks) or hasattr(m, "_hf_hook"):
            return True
    return False


@contextlib.contextmanager
def graphed_steps(module: torch.nn.Module, plan: Any) -> Iterator[GraphReport | None]:
    """Within the block, ``module``'s forward replays CUDA graphs when ``plan`` allows it (see
    :func:`enabled_for`) and the module carries no offload hooks; yields the stage's
    :class:`GraphReport` (``declined`` says why a plan's graphs were not used), or None when the
    plan runs its steps eagerly."""
    if not enabled_for(plan):
        yield None
        return
    declined = ("no CUDA device" if not torch.cuda.is_available() else
                "the module's forward is replaced" if "forward" in vars(module) else
                "offload hooks on the module" if _hooked(module) else "")
    if declined:
        yield GraphReport(declined=declined)
        return
    steps = GraphedSteps(module)
    module.forward = steps  # nn.Module.__call__ reads self.forward
    try:
        yield steps.report
    finally:
        del module.forward
        steps.release()
