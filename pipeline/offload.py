"""Applying a :class:`~pipeline.memory.StagePlan` to diffusers pipelines and modules.

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
  budget has room, so only the rest streams.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from pipeline.memory import StagePlan

_TAG = "_sulphur_plan"
STREAMER_HOOK = "sulphur_block_streamer"
_ALIGN = 256


def enforce_vram_budget(budget_gb: float | None, device: int = 0) -> None:
    """Cap this process's CUDA allocator at ``budget_gb`` (the storyboard's vram_budget_gb),
    so a plan that underestimates fails with an OOM (and falls back) instead of spilling."""
    if budget_gb is None or not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gb * 1024**3 / total), device)


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
        vae.enable_tiling() if plan.vae_tiling else vae.disable_tiling()
    return target


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
        from pipeline.kernels.gguf_dequant import patch_gguf_linears

        patch_gguf_linears(module)
    if big and o.get("streamer") == "sulphur" and plan.offload == "group_block":
        BlockStreamer.attach(module, device, resident_blocks=int(o.get("resident_blocks", 0)),
                             storage_dtype=torch.float8_e4m3fn if fp8 else None, compute_dtype=compute)
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


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class BlockStreamer:
    """Streams a transformer's repeated blocks through two GPU slots (see module doc)."""

    def __init__(self, model: torch.nn.Module, blocks: torch.nn.ModuleList, device: torch.device, *,
                 resident_blocks: int = 0, storage_dtype: torch.dtype | None = None,
                 compute_dtype: torch.dtype = torch.bfloat16) -> None:
        self.device = device
        self.compute_dtype = compute_dtype
        self.cuda = device.type == "cuda"
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
            b.host = None
            self._bind(b, b.gpu, upcast=False)
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
               blocks_attr: str = "transformer_blocks") -> BlockStreamer:
        streamer = cls(model, getattr(model, blocks_attr), device, resident_blocks=resident_blocks,
                       storage_dtype=storage_dtype, compute_dtype=compute_dtype)
        for i, b in enumerate(streamer.blocks):
            registry = HookRegistry.check_if_exists_or_initialize(b.module)
            registry.register_hook(_BlockHook(streamer, i), STREAMER_HOOK)
        model._sulphur_streamer = streamer  # keeps it alive with the model; lets benches read counters
        return streamer

    # packing -----------------------------------------------------------------
    def _pack(self, bmod: torch.nn.Module, storage_dtype: torch.dtype | None) -> _Block:
        tensors, layout, upcast, off = [], [], [], 0
        sources = []
        for mod in bmod.modules():
            for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                is_param = name in mod._parameters
                src = t.data
                cast = storage_dtype is not None and is_param and src.dim() == 2 and src.is_floating_point()
                dtype = storage_dtype if cast else src.dtype
                nbytes = src.numel() * torch.empty((), dtype=dtype).element_size()
                tensors.append((mod, name, is_param))
                layout.append((off, src.shape, dtype))
                upcast.append(cast)
                sources.append(src)
                off = _align(off + nbytes)
        host = _pinned(off) if self.cuda else torch.empty(off, dtype=torch.uint8)
        block = _Block(bmod, tensors, layout, off, host=host, upcast=upcast)
        for (o, shape, dtype), src in zip(layout, sources, strict=True):
            _view(host, o, shape, dtype).copy_(src)
        self._bind(block, host, upcast=False)  # the originals are freed: this buffer is the only copy
        return block

    def _bind(self, b: _Block, buf: torch.Tensor, *, upcast: bool) -> None:
        """Point the block's tensors at views of ``buf``; ``upcast``: fp8-stored weights as compute-dtype copies."""
        for (mod, name, is_param), (off, shape, dtype), up in zip(b.tensors, b.layout, b.upcast, strict=True):
            t = _view(buf, off, shape, dtype)
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
        if b.gpu is not None:  # resident: only the per-pass upcast
            if any(b.upcast):
                self._bind(b, b.gpu, upcast=True)
            return
        k = i - (len(self.blocks) - len(self.streamed))
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(b.ready)
        self._bind(b, self.slots[b.slot], upcast=True)
        # the next streamed block (wrapping to the first for the next step) goes to the other slot
        self._prefetch((k + 1) % len(self.streamed))

    def after(self, i: int) -> None:
        b = self.blocks[i]
        if b.gpu is not None:
            if any(b.upcast):
                self._bind(b, b.gpu, upcast=False)  # drop the upcast copies
            return
        if self.cuda:
            b.done.record(torch.cuda.current_stream(self.device))
        self._bind(b, b.host, upcast=False)  # drop the device views (and upcast copies) until the next pass


def _pinned(nbytes: int) -> torch.Tensor:
    """Page-locked host memory of exactly ``nbytes``: a plain allocation registered with
    CUDA (``cudaHostRegister``), because torch's pinned caching allocator rounds every
    request up to a power of two (a 772 MB block would pin 1 GiB)."""
    buf = torch.empty(nbytes, dtype=torch.uint8)
    cudart = torch.cuda.cudart()
    ptr = buf.data_ptr()
    if int(cudart.cudaHostRegister(ptr, nbytes, 0)) != 0:
        return buf.pin_memory()  # registration refused: fall back to the caching allocator
    weakref.finalize(buf, cudart.cudaHostUnregister, ptr)  # _Block.host keeps buf alive
    return buf


def _view(buf: torch.Tensor, off: int, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    size = n * torch.empty((), dtype=dtype).element_size()
    return buf[off: off + size].view(dtype).view(shape)


class _BlockHook(ModelHook):
    def __init__(self, streamer: BlockStreamer, index: int) -> None:
        super().__init__()
        self.streamer, self.index = streamer, index

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any], dict[str, Any]]:
        self.streamer.before(self.index)
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.streamer.after(self.index)
        return output


def module_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of parameters and buffers (what a plan has to place)."""
    return sum(t.numel() * t.element_size() for m in modules for t in list(m.parameters()) + list(m.buffers()))
