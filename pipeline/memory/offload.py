"""Applying a :class:`~pipeline.memory.plan.StagePlan` to diffusers pipelines and modules.

Everything goes through ``diffusers.hooks``: group offloading (block or leaf level,
CUDA streams), model/sequential CPU offload, layerwise fp8 storage, VAE tiling, and
Sulphur's own :class:`BlockStreamer` (a ``ModelHook`` per transformer block), which
differs from diffusers' block-level group offload in three ways that matter on a
small card with a small host:

* each block's weights live in **one pinned host buffer** (pinned in place, so the
  host holds one copy of the model, not a pageable and a pinned one: 1× not 2×);
* a block crosses PCIe as **one copy** into one of two GPU slots on a side stream,
  issued as soon as the block that last used that slot has finished, so the copy of
  block i+1 overlaps the compute of block i;
* weights can be **stored in fp8** (half the bytes over PCIe) and upcast per block
  on the GPU, and the first ``resident_blocks`` blocks can stay on the GPU when the
  budget has room, so only the rest streams;
* GGUF weights cross as their quantized bytes. With ``options["dequant"] = "block"``
  the streamer dequantizes all of a block's GGUF linear weights at once when the block
  starts (one kernel launch per quant type, into one reused compute-dtype scratch
  buffer the size of one block), and those layers run as plain ``F.linear`` on views
  of it: no per-layer dequantization, no ``GGUFParameter`` dispatch in the forward.
  The default, ``"layer"``, leaves each GGUF layer to dequantize its own weight.
"""

from __future__ import annotations

import mmap
import os
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.group_offloading import ModuleGroup
from diffusers.quantizers.gguf.utils import GGML_QUANT_SIZES, dequantize_functions

from pipeline.memory.plan import StagePlan, allocator_cap

# Deferred imports: diffusers, accelerate, pipeline.memory.kernels.gguf_dequant — hooks and the Triton kernel load
#   only for the plans that use them

_TAG = "_sulphur_plan"
STREAMER_HOOK = "sulphur_block_streamer"
_ALIGN = 256


def enforce_vram_budget(budget_gb: float | None, device: int = 0) -> None:
    """Cap this process's CUDA allocator so NVML's figure for the whole process stays within
    ``budget_gb`` (the storyboard's vram_budget_gb): the budget less the context measured at
    start-up and the libraries' later growth (:func:`pipeline.memory.plan.allocator_cap`). A plan
    that underestimates then fails with an OOM (and falls back) instead of spilling. ``None``
    lifts the cap (a worker's next job may have no budget).

    Capping at budget - context was tried before the planner counted what a streamed refine
    holds beside its tiled decode (bench/results/chain_h200_2026-12-04.json: 2-3 fallbacks per
    shot); the estimates now count it (pipeline/memory/planner.py, "VAE decode")."""
    if not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(device).total_memory
    cap = allocator_cap(budget_gb)
    torch.cuda.set_per_process_memory_fraction(1.0 if cap is None else min(1.0, cap / total), device)


def warm_cuda_libraries(device: int = 0) -> int:
    """Create the CUDA context and the cuBLAS / cuDNN handles and workspaces a render will use
    (one bf16 matmul, one convolution), so their cost can be measured before planning.
    Returns the allocator's reserve afterwards (0 without CUDA)."""
    if not torch.cuda.is_available():
        return 0
    dev = torch.device("cuda", device)
    with torch.no_grad():
        a = torch.ones(64, 64, device=dev, dtype=torch.bfloat16)
        (a @ a).sum().item()
        x = torch.ones(1, 8, 16, 16, device=dev, dtype=torch.bfloat16)
        torch.nn.functional.conv2d(x, torch.ones(8, 8, 3, 3, device=dev, dtype=torch.bfloat16)).sum().item()
    del a, x
    torch.cuda.synchronize(dev)
    return int(torch.cuda.memory_reserved(dev))


def _offload_groups(module: torch.nn.Module) -> list[Any]:
    """The diffusers group-offload groups under ``module`` (each once)."""
    groups: dict[int, Any] = {}
    for m in module.modules():
        registry = getattr(m, "_diffusers_hook", None)
        hook = registry.get_hook("group_offloading") if registry is not None else None
        if hook is not None and hasattr(hook, "group"):
            groups.setdefault(id(hook.group), hook.group)
    return list(groups.values())


class _KeptCopyGroup(ModuleGroup):
    """A stream-less diffusers group whose weights keep one host copy for the whole render.

    diffusers' stream-less ``_offload_to_memory`` runs ``module.to("cpu")`` after every use: a
    device-to-host copy of weights that did not change, into fresh pageable memory (9.3 s of a
    capped 121-frame LTX-2 segment on an H200, most of it the text connectors and the VAE).
    Here offloading points the tensors back at their host copy and onloading copies that copy
    to the device (asynchronously: it is page-locked when CUDA is there)."""

    _kept: dict[torch.Tensor, torch.Tensor]

    def _onload_from_memory(self) -> None:
        for tensor, host in self._kept.items():
            tensor.data = host.to(self.onload_device, non_blocking=True)

    def _offload_to_memory(self) -> None:
        for tensor, host in self._kept.items():
            tensor.data = host


def _group_tensors(group: ModuleGroup) -> list[torch.Tensor]:
    """Every parameter and buffer a group moves, as diffusers' ``_process_tensors_from_modules`` walks them."""
    seen: dict[int, torch.Tensor] = {}
    for m in group.modules:
        for t in (*m.parameters(), *m.buffers()):
            seen.setdefault(id(t), t)
    for t in (*group.parameters, *group.buffers):
        seen.setdefault(id(t), t)
    return list(seen.values())


_HOST_BUFFERS = "_sulphur_host_buffers"
#: Host copies are packed into page-locked buffers of about this size: while one is filled,
#: its weights are in host RAM twice, so a bigger buffer is a bigger unplanned peak (the
#: connectors are ~3 GB), and a smaller one more registrations.
PACK_BYTES = 256 << 20
_ALIGN_VIEW = 64  # keeps every view aligned for any dtype


def keep_host_copies(module: torch.nn.Module) -> int:
    """Give each stream-less, in-memory group-offload group under ``module`` one host copy
    of its weights, packed group after group into page-locked buffers of ~:data:`PACK_BYTES`
    (exact size, see :func:`_pinned`), and make offloading swap back to it instead of copying
    (see :class:`_KeptCopyGroup`). Host memory stays 1×: the pageable tensors are released.

    Calling it again after diffusers rebuilt the groups (a LoRA loaded or deleted re-applies
    group offloading) re-uses the copies already kept and packs only new tensors (the LoRA's).
    The module holds its buffers: they stay page-locked as long as a weight lives in them.
    Returns the number of groups changed (groups with a stream or a disk path, and groups
    holding tensor subclasses such as ``GGUFParameter``, keep diffusers' own path)."""
    groups = [g for g in _offload_groups(module)
              if g.stream is None and not g.offload_to_disk_path and not isinstance(g, _KeptCopyGroup)]
    chosen: list[tuple[ModuleGroup, list[torch.Tensor]]] = []
    for g in groups:
        tensors = _group_tensors(g)
        if tensors and all(type(t.data) is torch.Tensor and t.device.type == "cpu" for t in tensors):
            chosen.append((g, tensors))
    if not chosen:
        return 0
    held: list[torch.Tensor] = getattr(module, _HOST_BUFFERS, [])
    homes = {b.untyped_storage().data_ptr() for b in held}
    copied: dict[int, torch.Tensor] = {}  # a tensor two groups share (tied weights) is copied once
    batch: list[tuple[ModuleGroup, list[torch.Tensor]]] = []
    size, made, counted = 0, [], set()
    for g, tensors in chosen:
        batch.append((g, tensors))
        for t in tensors:
            if id(t) not in counted and not _stays(t, homes):
                counted.add(id(t))
                size += _span(t)
        if size >= PACK_BYTES:
            made.append(_pack(batch, size, homes, copied))
            batch, size = [], 0
    if batch:
        made.append(_pack(batch, size, homes, copied))
    # Drop the buffers nothing lives in any more (a deleted LoRA's): they would pin memory for
    # nothing. What kept groups point at counts, onloaded or not.
    used = {t.data.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
    for g in _offload_groups(module):
        if isinstance(g, _KeptCopyGroup):
            used.update(h.untyped_storage().data_ptr() for h in g._kept.values())
    setattr(module, _HOST_BUFFERS, [b for b in held if b.untyped_storage().data_ptr() in used]
            + [b for b in made if b is not None])
    return len(chosen)


def _stays(t: torch.Tensor, homes: set[int]) -> bool:
    """Already in a kept buffer, or empty (nothing to copy): kept where it is."""
    return t.numel() == 0 or t.data.untyped_storage().data_ptr() in homes


def _span(t: torch.Tensor) -> int:
    return -(-t.numel() * t.element_size() // _ALIGN_VIEW) * _ALIGN_VIEW


def _pack(batch: list[tuple[ModuleGroup, list[torch.Tensor]]], size: int, homes: set[int],
          copied: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """One buffer of ``size`` bytes for the tensors of ``batch`` that are not kept yet (see
    :func:`_stays`; ``copied``: those this call has packed already); the groups become
    :class:`_KeptCopyGroup`. Returns the buffer (None: nothing new)."""
    buf = None
    if size:
        buf = _pinned(size) if torch.cuda.is_available() else torch.empty(size, dtype=torch.uint8)
    off = 0
    for g, tensors in batch:
        kept: dict[torch.Tensor, torch.Tensor] = {}
        for t in tensors:
            if id(t) in copied:
                kept[t] = copied[id(t)]
            elif _stays(t, homes):
                kept[t] = t.data
            else:
                view = _view(buf, off, t.shape, t.dtype)
                view.copy_(t.data)
                t.data = view  # the pageable copy goes
                kept[t] = copied[id(t)] = view
                off += _span(t)
        g.__class__ = _KeptCopyGroup
        g._kept = kept
    return buf


def keep_host_copies_again(module: torch.nn.Module) -> int:
    """:func:`keep_host_copies` for a module that had them, after diffusers rebuilt its groups
    (a LoRA loaded or deleted); nothing for any other module."""
    return keep_host_copies(module) if getattr(module, _HOST_BUFFERS, None) else 0


@contextmanager
def onloaded(module: torch.nn.Module) -> Iterator[None]:
    """A group-offloaded module on its device for a whole piece of work: every group onloaded
    once on entry and offloaded once on exit, instead of per call of each leaf (a tiled VAE
    decode calls every leaf once per tile: ~14 s of copies in a 3-segment render on an H200)."""
    groups = _offload_groups(module)
    for g in groups:
        g.onload_()
        g.onload_ = g.offload_ = _no_op  # the per-call hooks leave it where it is
    try:
        yield
    finally:
        for g in groups:
            del g.onload_, g.offload_  # the class's methods again
            g.offload_()


def _no_op() -> None:
    return None


def resident_while_working(module: torch.nn.Module, methods: Iterable[str] = ("decode", "encode")) -> None:
    """Make each of ``methods`` (e.g. a VAE's ``decode``) run with the module :func:`onloaded`.
    The planner budgets the whole VAE on the device while it decodes, so this costs no VRAM
    beyond the plan."""
    for name in methods:
        method = getattr(module, name, None)
        if method is None or getattr(method, "_sulphur_onloaded", False):
            continue

        def wrapped(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            with onloaded(module):
                return _method(*args, **kwargs)

        wrapped._sulphur_onloaded = True  # type: ignore[attr-defined]
        setattr(module, name, wrapped)


def _is_pipeline(obj: Any) -> bool:
    return hasattr(obj, "components") and isinstance(getattr(obj, "components", None), dict)


def apply_plan(target: Any, plan: StagePlan, *, big: str = "transformer") -> Any:
    """Place a pipeline (every ``nn.Module`` component) or one module as ``plan`` says.

    The ``big`` component (the transformer) gets the plan's weights format and offload
    mode; the others ride along: resident with it, or offloaded per leaf when the big
    one is offloaded. ``text_encoder`` components are left to the stage, which runs
    and evicts them before the transformer is placed. Returns ``target``.
    """
    if not _is_pipeline(target):
        return _place(target, plan, big=True)
    device = torch.device(plan.device)
    if plan.device != "cpu" and plan.offload == "model":
        target.enable_model_cpu_offload(device=device)
    elif plan.device != "cpu" and plan.offload == "sequential":
        target.enable_sequential_cpu_offload(device=device)
    else:
        for name, comp in target.components.items():
            if isinstance(comp, torch.nn.Module) and name != "text_encoder":
                _place(comp, plan, big=name == big)
    vae = getattr(target, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        enable_vae_tiling(vae, plan) if plan.vae_tiling else vae.disable_tiling()
    return target


def streamer_of(module: Any) -> BlockStreamer | None:
    """The block streamer placed on ``module``, if any."""
    return getattr(module, "_sulphur_streamer", None)


#: The tile sizes ``enable_tiling`` sets; the VAE's own values are kept under ``_TILING_DEFAULTS``.
_TILING_ATTRS = ("tile_sample_min_height", "tile_sample_min_width", "tile_sample_stride_height",
                 "tile_sample_stride_width")
_TILING_DEFAULTS = "_sulphur_tiling_defaults"


def enable_vae_tiling(vae: Any, plan: StagePlan) -> None:
    """Tiled decode at the plan's tile edge (``options["vae_tile"]``, default diffusers' 512 px),
    tiles overlapping by an eighth as diffusers' defaults do.

    diffusers' ``enable_tiling()`` keeps any size set before (``size or self.size``), so a draft
    after a refine tiled at 256 px went on tiling at 256: a held VAE encoded the anchor and decoded
    the frames differently from a fresh one, and the cache entry depended on what the process had
    rendered before (an H100, run 21). The VAE's own sizes are restored first."""
    own = vae.__dict__.setdefault(_TILING_DEFAULTS, {a: getattr(vae, a) for a in _TILING_ATTRS if hasattr(vae, a)})
    for attr, value in own.items():
        setattr(vae, attr, value)
    tile = int(plan.options.get("vae_tile") or 0)
    if tile and tile != 512:
        stride = tile * 7 // 8
        try:
            vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                              tile_sample_stride_height=stride, tile_sample_stride_width=stride)
            return
        except TypeError:  # a VAE whose tiling takes no sizes: its own default
            pass
    vae.enable_tiling()


def _place(module: torch.nn.Module, plan: StagePlan, *, big: bool) -> torch.nn.Module:
    if getattr(module, _TAG, None) is not None:
        raise RuntimeError("module already placed under a plan; reload it before applying another "
                           "(hooks do not stack)")
    o = plan.options
    device = torch.device(plan.device)
    compute = getattr(torch, plan.dtype)
    fp8 = big and o.get("weights") == "fp8"
    if big and device.type == "cuda" and o.get("gguf_kernels", True):
        # GGUF layers dequantize in one Triton pass instead of diffusers' torch ops (7-18× faster)
        from pipeline.memory.kernels.gguf_dequant import patch_gguf_linears

        patch_gguf_linears(module)
    if big and o.get("streamer") == "sulphur" and plan.offload == "group_block":
        BlockStreamer.attach(module, device, resident_blocks=int(o.get("resident_blocks", 0)),
                             storage_dtype=torch.float8_e4m3fn if fp8 else None, compute_dtype=compute,
                             dequant=str(o.get("dequant", "layer")), gguf_kernels=bool(o.get("gguf_kernels", True)))
    else:
        if fp8:
            from diffusers.hooks import apply_layerwise_casting

            apply_layerwise_casting(module, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        if plan.offload == "resident" or (plan.device == "cpu" and plan.offload in ("model", "sequential")):
            module.to(device)
        elif plan.offload in ("group_block", "group_leaf"):
            from diffusers.hooks import apply_group_offloading

            kind = "block_level" if plan.offload == "group_block" and big else "leaf_level"
            stream = bool(o.get("use_stream")) and device.type == "cuda" and big
            kwargs: dict[str, Any] = {}
            if kind == "block_level":
                kwargs["num_blocks_per_group"] = int(o.get("num_blocks_per_group", 1))
            if o.get("offload_to_disk_path"):
                kwargs["offload_to_disk_path"] = str(o["offload_to_disk_path"])
            apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type=kind, use_stream=stream,
                                   low_cpu_mem_usage=bool(o.get("low_cpu_mem_usage")) and stream, **kwargs)
            if not stream and not big:  # the ride-along parts; a big one streams or keeps diffusers' path
                keep_host_copies(module)
        elif plan.offload == "sequential":
            from accelerate import cpu_offload

            cpu_offload(module, execution_device=device)
        elif plan.offload == "model":
            from accelerate import cpu_offload_with_hook

            cpu_offload_with_hook(module, execution_device=device)
    setattr(module, _TAG, plan.name)
    return module


# --------------------------------------------------------------------------- Sulphur's block streamer


@dataclass
class _Dequant:
    """One launch of the per-block dequantization: GGUF weights of one quant type, packed
    back to back in the block's buffer, written back to back into the scratch buffer."""
    qtype: int
    src: int                                           # byte offset in the block buffer
    nbytes: int                                        # quantized bytes
    dst: int                                           # byte offset in the scratch buffer
    numel: int                                         # weights
    dtype: torch.dtype                                 # the layers' compute dtype
    out: torch.Tensor | None = None                    # flat view of the scratch (set once it exists)
    kernel: bool = False                               # Triton single-pass kernel, else diffusers' torch ops


@dataclass
class _Block:
    module: torch.nn.Module
    tensors: list[tuple[torch.nn.Module, str, bool]]   # (owner, attribute, is_parameter)
    layout: list[tuple[int, torch.Size, torch.dtype]]  # byte offset, shape, stored dtype
    nbytes: int
    host: torch.Tensor | None = None                   # pinned uint8 buffer (streamed blocks)
    gpu: torch.Tensor | None = None                    # dedicated buffer (resident blocks)
    slot: int = -1
    ready: Any = None                                  # event: copy into its slot finished
    done: Any = None                                   # event: compute of this block finished
    upcast: list[bool] = field(default_factory=list)
    n_bind: int = 0                                    # tensors rebound per pass (the rest: dequantized per block)
    runs: list[_Dequant] = field(default_factory=list)
    linears: list[tuple[torch.nn.Module, int, torch.Size, torch.dtype]] = field(default_factory=list)
    weights: list[tuple[torch.nn.Module, torch.Tensor]] = field(default_factory=list)  # (layer, scratch view)
    scratch_bytes: int = 0
    views: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # buffer address -> views of its tensors


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class BlockStreamer:
    """Streams a transformer's repeated blocks through two GPU slots (see module doc)."""

    def __init__(self, model: torch.nn.Module, blocks: torch.nn.ModuleList, device: torch.device, *,
                 resident_blocks: int = 0, storage_dtype: torch.dtype | None = None,
                 compute_dtype: torch.dtype = torch.bfloat16, dequant: str = "layer",
                 gguf_kernels: bool = True) -> None:
        if dequant not in ("layer", "block"):
            raise ValueError(f"dequant must be 'layer' or 'block', not {dequant!r}")
        self.device = device
        self.compute_dtype = compute_dtype
        self.cuda = device.type == "cuda"
        self.block_dequant = dequant == "block"
        # Triton on CUDA (or under its CPU interpreter, for tests); diffusers' torch ops otherwise
        self.gguf_kernels = gguf_kernels and (self.cuda or _interpreting())
        block_ids = {id(m) for b in blocks for m in b.modules()}
        # 1. everything outside the blocks stays on the device
        for mod in model.modules():
            if id(mod) in block_ids:
                continue
            for _name, p in list(mod.named_parameters(recurse=False)):
                p.data = p.data.to(device)
            for name, buf in list(mod.named_buffers(recurse=False)):
                setattr(mod, name, buf.to(device))
        # 2. each block's tensors packed into one buffer (fp8 for 2-D weights if asked)
        self.blocks: list[_Block] = []
        for bmod in blocks:
            self.blocks.append(self._pack(bmod, storage_dtype))
        self.streamed = self.blocks[resident_blocks:]
        for b in self.blocks[:resident_blocks]:
            b.gpu = b.host.to(device) if b.host is not None else None
            b.host, b.views = None, {}  # the cached host views would keep the host copy alive
            self._bind(b, b.gpu, upcast=False, every=True)
        # 3. per-block dequantization: one compute-dtype scratch the size of the largest block's
        #    GGUF weights, shared by every block (written and read in compute-stream order)
        scratch_bytes = max((b.scratch_bytes for b in self.blocks), default=0)
        self.scratch = torch.empty(scratch_bytes, dtype=torch.uint8, device=device) if scratch_bytes else None
        for b in self.blocks:
            self._prepare_dequant(b)
        slot_bytes = max((b.nbytes for b in self.streamed), default=0)
        self.slots = [torch.empty(slot_bytes, dtype=torch.uint8, device=device) for _ in range(2 if self.streamed else 0)]
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        for b in self.streamed:
            if self.cuda:
                b.ready, b.done = torch.cuda.Event(), torch.cuda.Event()
        # slots alternate in prefetch order, so consecutive blocks never share one
        self._next_slot = 0
        self._slot_owner: list[_Block | None] = [None, None]
        self.bytes_streamed = 0
        if self.streamed:
            self._prefetch(0)

    @classmethod
    def attach(cls, model: torch.nn.Module, device: torch.device, *, resident_blocks: int = 0,
               storage_dtype: torch.dtype | None = None, compute_dtype: torch.dtype = torch.bfloat16,
               blocks_attr: str = "transformer_blocks", dequant: str = "layer",
               gguf_kernels: bool = True) -> BlockStreamer:
        streamer = cls(model, getattr(model, blocks_attr), device, resident_blocks=resident_blocks,
                       storage_dtype=storage_dtype, compute_dtype=compute_dtype, dequant=dequant,
                       gguf_kernels=gguf_kernels)
        for i, b in enumerate(streamer.blocks):
            registry = HookRegistry.check_if_exists_or_initialize(b.module)
            registry.register_hook(_BlockHook(streamer, i), STREAMER_HOOK)
        model._sulphur_streamer = streamer  # keeps it alive with the model; lets benches read counters
        streamer._model = weakref.ref(model)
        return streamer

    def detach(self) -> None:
        """Remove the block hooks and the per-block dequantization forwards. Each block's
        tensors stay bound to its buffer (host for streamed blocks, GPU for resident ones);
        the model may be placed again."""
        if self.cuda:
            self.copy_stream.synchronize()
        for b in self.blocks:
            registry = getattr(b.module, "_diffusers_hook", None)
            hook = registry.get_hook(STREAMER_HOOK) if registry is not None else None
            if hook is not None:
                registry.remove_hook(STREAMER_HOOK, recurse=False)
                # The hook and diffusers' function reference point at each other: left alone, that
                # cycle keeps this streamer, and every host buffer it packed, alive until the next
                # gc pass — through the whole re-pack of a re-streamed model, i.e. two host copies
                # of it (measured: +10 GiB of RSS at draft → refine on the 19B model).
                hook.streamer = None
            for mod, _ in b.weights:
                layer_forward = mod.__dict__.pop("_sulphur_layer_forward")
                mod.__dict__.pop("_sulphur_w", None)
                if getattr(layer_forward, "__func__", None) is type(mod).forward:
                    mod.__dict__.pop("forward", None)  # the class's own forward again
                else:
                    mod.forward = layer_forward  # e.g. the Triton forward of patch_gguf_linears
        # Drop every buffer reference (blocks, views, scratch, slots) now, not at gc time.
        self.scratch, self.slots = None, []
        self.blocks, self.streamed, self._slot_owner = [], [], [None, None]
        model = self._model() if getattr(self, "_model", None) is not None else None
        if model is not None:
            model.__dict__.pop("_sulphur_streamer", None)
            model.__dict__.pop(_TAG, None)

    def restream(self, resident_blocks: int, dequant: str = "layer") -> bool:
        """Keep a different number of blocks on the device without packing or pinning again
        (draft ↔ refine: pinning the 19B model took 19 s of a 3-segment render). Blocks leaving
        the device get a pinned host buffer of their own; blocks joining it give theirs up, so
        memory ends as a fresh attach would leave it. False (nothing changed) when the
        dequantization mode differs: that changes the packing, so detach and attach instead."""
        if (dequant == "block") != self.block_dequant:
            return False
        if self.cuda:
            torch.cuda.synchronize(self.device)  # no copy or compute still reads a slot or buffer
        resident_blocks = max(0, min(resident_blocks, len(self.blocks)))
        old = len(self.blocks) - len(self.streamed)
        for b in self.blocks[resident_blocks:old]:  # device → streamed: first, so the device frees up
            b.host = _pinned(b.nbytes) if self.cuda else torch.empty(b.nbytes, dtype=torch.uint8)
            b.host.copy_(b.gpu)
            b.gpu, b.views = None, {}
            self._bind(b, b.host, upcast=False, every=True)
            if self.cuda:
                b.ready, b.done = torch.cuda.Event(), torch.cuda.Event()
        for b in self.blocks[old:resident_blocks]:  # streamed → device
            b.gpu = b.host.to(self.device)
            b.host, b.views = None, {}
            self._bind(b, b.gpu, upcast=False, every=True)
        self.streamed = self.blocks[resident_blocks:]
        slot_bytes = max((b.nbytes for b in self.streamed), default=0)
        if not self.streamed:
            self.slots = []
        elif not self.slots or self.slots[0].numel() != slot_bytes:
            self.slots = []  # the old slots go before the new ones are allocated
            self.slots = [torch.empty(slot_bytes, dtype=torch.uint8, device=self.device) for _ in range(2)]
        self._next_slot, self._slot_owner = 0, [None, None]
        if self.streamed:
            self._prefetch(0)
        return True

    # packing -----------------------------------------------------------------
    def _pack(self, bmod: torch.nn.Module, storage_dtype: torch.dtype | None) -> _Block:
        """One buffer per block. With per-block dequantization, the tensors rebound every pass
        come first, then the GGUF linear weights grouped by (quant type, compute dtype), each
        group back to back so that one launch dequantizes it."""
        plain, groups = [], {}
        for mod in bmod.modules():
            quant = self.block_dequant and _dequantizable(mod)
            for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                is_param = name in mod._parameters
                src = t.data
                if quant and is_param and name == "weight":
                    key = (int(t.quant_type), mod.compute_dtype or self.compute_dtype)
                    groups.setdefault(key, []).append((mod, name, is_param, src))
                else:
                    plain.append((mod, name, is_param, src))
        tensors, layout, upcast, sources, off = [], [], [], [], 0
        for mod, name, is_param, src in plain:
            cast = storage_dtype is not None and is_param and src.dim() == 2 and src.is_floating_point()
            dtype = storage_dtype if cast else src.dtype
            tensors.append((mod, name, is_param))
            layout.append((off, src.shape, dtype))
            upcast.append(cast)
            sources.append(src)
            off = _align(off + src.numel() * _itemsize(dtype))
        n_bind = len(tensors)
        runs, linears, dst = [], [], 0
        for (qtype, dtype), members in groups.items():
            run = _Dequant(qtype, src=off, nbytes=0, dst=dst, numel=0, dtype=dtype)
            for mod, name, is_param, src in members:
                tensors.append((mod, name, is_param))
                layout.append((off, src.shape, src.dtype))
                upcast.append(False)
                sources.append(src)
                off += src.numel() * src.element_size()  # no padding: the launch reads one run of blocks
                shape = torch.Size((mod.out_features, mod.in_features))
                linears.append((mod, dst + run.numel * _itemsize(dtype), shape, dtype))
                run.numel += shape.numel()
            run.nbytes = off - run.src
            runs.append(run)
            off = _align(off)
            dst = _align(dst + run.numel * _itemsize(dtype))
        host = _pinned(off) if self.cuda else torch.empty(off, dtype=torch.uint8)
        block = _Block(bmod, tensors, layout, off, host=host, upcast=upcast, n_bind=n_bind, runs=runs,
                       linears=linears, scratch_bytes=dst)
        for (o, shape, dtype), src in zip(layout, sources, strict=True):
            _view(host, o, shape, dtype).copy_(src)
        self._bind(block, host, upcast=False, every=True)  # the originals are freed: this buffer is the only copy
        return block

    def _prepare_dequant(self, b: _Block) -> None:
        """Views of the shared scratch for each run and each layer; the GGUF layers' forward
        becomes a plain ``F.linear`` on their view while their block runs."""
        if not b.runs:
            return
        for r in b.runs:
            r.out = _view(self.scratch, r.dst, torch.Size((r.numel,)), r.dtype)
            r.kernel = self.gguf_kernels and _kernel_supports(r.qtype)
        for mod, off, shape, dtype in b.linears:
            b.weights.append((mod, _view(self.scratch, off, shape, dtype)))
            mod.__dict__["_sulphur_layer_forward"] = mod.forward  # the layer's own path, outside the streamer
            mod.__dict__["_sulphur_w"] = None
            mod.forward = _block_dequant_forward.__get__(mod)

    def _dequantize(self, b: _Block, buf: torch.Tensor) -> None:
        """All of the block's GGUF weights from ``buf`` (its slot or GPU buffer) into the scratch,
        on the current stream, then hand each layer its view."""
        for r in b.runs:
            src = buf[r.src: r.src + r.nbytes]
            if r.kernel:
                from pipeline.memory.kernels.gguf_dequant import dequantize_into

                dequantize_into(src, r.qtype, r.out)
            else:
                from diffusers.quantizers.gguf.utils import GGML_QUANT_SIZES, dequantize_functions

                block_size, type_size = GGML_QUANT_SIZES[r.qtype]
                w = dequantize_functions[r.qtype](src.view(-1, type_size), block_size, type_size)
                r.out.view(-1, block_size).copy_(w)
        for mod, w in b.weights:
            mod.__dict__["_sulphur_w"] = w

    def _bind(self, b: _Block, buf: torch.Tensor, *, upcast: bool, every: bool = False) -> None:
        """Point the block's tensors at views of ``buf``; ``upcast``: fp8-stored weights as compute-dtype
        copies. Per pass only the first ``n_bind`` move (``every``: all of them, when packing or
        pinning a resident block); per-block-dequantized GGUF weights stay where they are."""
        views = b.views.get(buf.data_ptr())
        if views is None:  # the views of a buffer are made once (a few µs each, ~100 per block)
            views = b.views[buf.data_ptr()] = [_view(buf, off, shape, dtype) for off, shape, dtype in b.layout]
        n = len(b.tensors) if every else b.n_bind
        for (mod, name, is_param), t, up in zip(b.tensors[:n], views[:n], b.upcast[:n], strict=True):
            if up and upcast:
                t = t.to(self.compute_dtype)
            if is_param:
                mod._parameters[name].data = t
            else:
                mod._buffers[name] = t

    # streaming ---------------------------------------------------------------
    def _prefetch(self, k: int) -> None:
        """Copy streamed block k into its slot once the block that last used the slot is done."""
        b = self.streamed[k]
        b.slot, self._next_slot = self._next_slot, 1 - self._next_slot
        prev, self._slot_owner[b.slot] = self._slot_owner[b.slot], b
        slot = self.slots[b.slot][: b.nbytes]
        if not self.cuda:
            slot.copy_(b.host)
            return
        with torch.cuda.stream(self.copy_stream):
            if prev is not None and prev is not b:
                self.copy_stream.wait_event(prev.done)
            slot.copy_(b.host, non_blocking=True)
            b.ready.record(self.copy_stream)
        self.bytes_streamed += b.nbytes

    def before(self, i: int) -> None:
        b = self.blocks[i]
        if b.gpu is not None:  # resident: only the per-pass upcast and dequantization
            if any(b.upcast):
                self._bind(b, b.gpu, upcast=True)
            if b.runs:
                self._dequantize(b, b.gpu)
            return
        k = i - (len(self.blocks) - len(self.streamed))
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(b.ready)
        slot = self.slots[b.slot]
        self._bind(b, slot, upcast=True)
        if b.runs:  # after the wait: reads the slot; the next copy into it waits for b.done (after())
            self._dequantize(b, slot)
        # the next streamed block (wrapping to the first for the next step) goes to the other slot
        self._prefetch((k + 1) % len(self.streamed))

    def after(self, i: int) -> None:
        b = self.blocks[i]
        for mod, _ in b.weights:
            mod.__dict__["_sulphur_w"] = None  # the scratch now belongs to the next block
        if b.gpu is not None:
            if any(b.upcast):
                self._bind(b, b.gpu, upcast=False)  # drop the upcast copies
            return
        if self.cuda:
            b.done.record(torch.cuda.current_stream(self.device))
        self._bind(b, b.host, upcast=False)  # drop the device views (and upcast copies) until the next pass


_PAGE = mmap.PAGESIZE


def _pinned(nbytes: int) -> torch.Tensor:
    """Page-locked host memory of exactly ``nbytes``: a plain allocation registered with
    CUDA (``cudaHostRegister``), because torch's pinned caching allocator rounds every
    request up to a power of two (a 772 MB block would pin 1 GiB).

    The allocation is an anonymous memory map, so it starts on a page and owns its pages: no
    other buffer's registration can overlap it (CUDA refuses that), and torch's storage starts
    where the registration does. torch asks about the storage's first byte, so a buffer carved
    out of a heap allocation read as unpinned (``is_pinned()`` False) even where CUDA copied it
    asynchronously. The caller must hold the returned tensor (views of it do not keep it alive):
    when it is collected, the registration is undone."""
    buf = _page_aligned(nbytes)
    cudart = torch.cuda.cudart()
    ptr = buf.data_ptr()
    if int(cudart.cudaHostRegister(ptr, buf.untyped_storage().nbytes(), 0)) != 0:
        _clear_cuda_error()
        return torch.empty(nbytes, dtype=torch.uint8).pin_memory()  # the caching allocator instead
    weakref.finalize(buf, cudart.cudaHostUnregister, ptr)
    return buf


def _page_aligned(nbytes: int) -> torch.Tensor:
    """``nbytes`` of host memory in whole pages of their own (an anonymous memory map, which the
    tensor keeps alive), the tensor starting where its storage does."""
    size = -(-max(nbytes, 1) // _PAGE) * _PAGE
    # private: a forked child gets copy-on-write pages, not the registered ones
    return torch.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE), dtype=torch.uint8)[:nbytes]


def _clear_cuda_error() -> None:
    """A refused ``cudaHostRegister`` stays CUDA's last error until something reads it, and the
    next kernel launch's check would raise it somewhere unrelated. torch exposes no
    ``cudaGetLastError``: a launch here reads (and so clears) it."""
    try:
        torch.zeros(1, device="cuda").add_(1)
    except RuntimeError:
        pass


def _view(buf: torch.Tensor, off: int, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    size = n * _itemsize(dtype)
    return buf[off: off + size].view(dtype).view(shape)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _kernel_supports(qtype: int) -> bool:
    try:
        from pipeline.memory.kernels.gguf_dequant import supports
    except ImportError:  # no Triton: diffusers' torch ops
        return False
    return supports(qtype)


def _dequantizable(mod: torch.nn.Module) -> bool:
    """A diffusers ``GGUFLinear`` whose weight the per-block dequantization can take: a GGUF
    type diffusers can dequantize (the Triton kernels cover a subset), whole rows of blocks."""
    if type(mod).__name__ != "GGUFLinear":
        return False

    w = mod._parameters.get("weight")
    qtype = getattr(w, "quant_type", None)
    if qtype is None or qtype not in dequantize_functions or w.dim() != 2:
        return False
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_bytes = w.numel() * w.element_size()
    return n_bytes % type_size == 0 and n_bytes // type_size * block_size == mod.out_features * mod.in_features


def _block_dequant_forward(self: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A streamed GGUF linear: plain ``F.linear`` on the weight its block dequantized."""
    w = self._sulphur_w
    if w is None:  # called outside its block's hooks
        return self._sulphur_layer_forward(inputs)
    bias = self.bias
    if bias is not None and bias.dtype != w.dtype:
        bias = bias.to(w.dtype)
    return F.linear(inputs if inputs.dtype == w.dtype else inputs.to(w.dtype), w, bias)


class _BlockHook(ModelHook):
    def __init__(self, streamer: BlockStreamer, index: int) -> None:
        super().__init__()
        self.streamer: BlockStreamer | None = streamer
        self.index = index

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any], dict[str, Any]]:
        self.streamer.before(self.index)
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.streamer.after(self.index)
        return output


def module_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of parameters and buffers (what a plan has to place)."""
    return sum(t.numel() * t.element_size() for m in modules for t in list(m.parameters()) + list(m.buffers()))
