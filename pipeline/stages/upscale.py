"""Upscale: Real-ESRGAN ×2 on the refined frames, then an antialiased resize to output size.

Host memory stays bounded by one batch: frames are read from the refine ``.npy`` and
appended to the output ``.npy`` one batch at a time, never held whole (ESRGAN ×4 buffers
for a full clip once OOM-killed a 32 GB host). Frames go through in batches of
``plan.options["esrgan_batch"]`` (default 4); ``plan.options["esrgan_tile"]`` (input
pixels) tiles each frame for small cards.

On CUDA (untiled) the network runs under ``torch.compile`` (``esrgan_compile``, default by
device), held in :class:`LoadedModels` for the worker's life, with inductor's caches in
Sulphur's own cache folder so a new process reuses the kernels. By default only the RRDB
block is compiled (one graph the 23 blocks share) rather than the whole network: the
same fused kernels for a fraction of the compile. Frames cross to and from the GPU as
uint8 through pinned buffers on copy streams, and a thread writes the output file, so the
GPU never waits on the disk (``esrgan_overlap``, default on CUDA). The other knobs, for the
bench to compare (bench/esrgan.py): ``esrgan_compile_scope``, ``esrgan_compile_mode``,
``esrgan_dense``, ``esrgan_cudnn_benchmark``.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pipeline.memory.cudnn import cudnn_setting
from pipeline.models.esrgan import TINY_X2PLUS_VERSION, load_upscaler
from pipeline.models.home import sulphur_home
from pipeline.models.module_tree import replace_modules
from pipeline.stages.base import SegmentJob, Stage, StageContext
from pipeline.stages.enhance import model_identity, resolve_model_file
from pipeline.stages.frame_files import FrameFile, write_frames_header

if TYPE_CHECKING:
    import torch
    from spandrel import ImageModelDescriptor

    from pipeline.stages.base import Artifact

# Deferred imports: torch, pipeline.memory, pipeline.wire — the runner reads the stage's cache key without them;
#   they load when it runs

#: Key under which ``(path, device, dtype, descriptor)`` lives in ``ctx.models``.
MODEL_KEY = "upscaler"
#: Key under which ``((scope, mode, dense), forward)`` lives: the compiled network, kept with the upscaler.
COMPILED_KEY = "upscaler-compiled"
DEFAULT_BATCH = 4
TILE_OVERLAP = 16  # input pixels of context on each side of a tile
#: ``esrgan_compile_scope``: "blocks" compiles each RRDB block (one shared graph), "whole" the network.
COMPILE_SCOPES = ("blocks", "whole")
#: ``esrgan_compile_mode``: torch.compile modes; "reduce-overhead" adds CUDA graphs (fixed batch: padded).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
#: ``esrgan_dense``: "concat" runs the dense blocks as published; "wide" regroups their convolutions
#: by input (pipeline/models/esrgan_dense.py: the same sums, wider GEMMs, no concatenations).
DENSE_FORMS = ("concat", "wide")
#: (scope, mode, dense) when the plan names none: the fastest in bench/results/esrgan_vs_compiled_h200_2026-12-04.json
#: (43.5 frames/s against 34.2 with the published dense blocks; 60.4 dB from the eager fp16 frames).
DEFAULT_COMPILE = ("blocks", "default", "wide")
INDUCTOR_CACHE = "inductor"  # under sulphur_home(): compiled kernels, FX graphs, autotune results


class UpscaleStage(Stage):
    name = "upscale"
    version = 1
    inputs = ("refine",)

    def params(self, job: SegmentJob) -> dict[str, Any]:
        return {
            "model": model_identity(job.preset, "upscaler", TINY_X2PLUS_VERSION),
            "output_size": list(job.output_size),
            "resize": "bicubic-antialias",
        }

    def total_steps(self, job: SegmentJob) -> int:
        return job.frames

    def run(self, ctx: StageContext, job: SegmentJob, inputs: dict[str, Artifact], out: Path) -> dict[str, Any]:
        import torch

        plan = ctx.plan
        device = torch.device(plan.device)
        cuda = device.type == "cuda"
        # fp16 + channels_last is the fastest measured setting on CUDA; CPU kernels want fp32.
        dtype = torch.float16 if cuda else torch.float32
        # The VRAM planner names these esrgan_batch / esrgan_tile; lean CPU rungs say batch.
        o = plan.options
        batch = max(1, int(o.get("esrgan_batch") or o.get("batch") or DEFAULT_BATCH))
        tile = int(o.get("esrgan_tile") or o.get("tile") or 0)
        width, height = job.output_size

        # 1. Input frames (T, H, W, 3) uint8, read one batch at a time.
        source = FrameFile(inputs["refine"].file("frames.npy"))
        total = source.count
        model = _upscaler(ctx, job, device, dtype)
        # Compiling is decided by device: never on the CPU (CI), nor for tiles (every edge tile
        # is another shape to compile).
        compiled = cuda and not tile and o.get("esrgan_compile", True) is not False
        up = _Upscale(ctx, model, dtype, batch, tile, (height, width),
                      _compiled(ctx, model, o) if compiled else model)

        # 2. Output written batch by batch with plain file writes: a memmap would count
        #    every written page in the process's RSS (and the reported host peak).
        ctx.progress(self.name, 0, total)
        # cuDNN's benchmark mode for this stage only, when the plan asks: other stages keep theirs
        benchmark = cudnn_setting(benchmark=True) if cuda and o.get("esrgan_cudnn_benchmark") else nullcontext()
        with open(out / "frames.npy", "wb") as sink, torch.inference_mode(), benchmark:
            write_frames_header(sink, (total, height, width, 3))
            if cuda and o.get("esrgan_overlap", True) is not False:
                _overlapped(ctx, self.name, source, sink, up, device)
            else:
                for start in range(0, total, batch):
                    stop = min(total, start + batch)
                    y = up(torch.from_numpy(source.read(start, stop)).to(device))
                    sink.write(y.cpu().numpy().data)
                    ctx.progress(self.name, stop, total)
        return {"frames": total, "size": [width, height]}


class _Upscale:
    """One batch of (N, H, W, 3) uint8 frames on the device → (N, h, w, 3) uint8 at output size:
    ESRGAN ×2 (compiled, tiled or plain), then the resize in fp32 for accuracy. ``dtype`` is
    the one ``model`` was loaded in (the frames are cast to it)."""

    def __init__(self, ctx: StageContext, model: ImageModelDescriptor, dtype: torch.dtype, batch: int, tile: int,
                 size: tuple[int, int], forward: Any) -> None:
        self.ctx, self.model, self.dtype, self.batch, self.tile = ctx, model, dtype, batch, tile
        self.size, self.forward = size, forward

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        import torch

        # NHWC uint8 permuted to NCHW is already channels_last in memory; the cast keeps it.
        x = frames.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.tile:
            y = _tiled(self.model, x, self.tile)
        else:
            y, self.forward = _run(self.ctx, self.forward, self.model, x, self.batch)
        y = y.float()
        if tuple(y.shape[-2:]) != self.size:
            y = torch.nn.functional.interpolate(y, size=self.size, mode="bicubic", antialias=True,
                                                align_corners=False)
        y = y.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
        return y.permute(0, 2, 3, 1).contiguous()


def _upscaler(ctx: StageContext, job: SegmentJob, device: torch.device, dtype: torch.dtype) -> ImageModelDescriptor:
    """The held upscaler, reloaded only when the preset's file changed; moved if the plan did."""
    import torch

    path = resolve_model_file(job.preset, "upscaler")
    if MODEL_KEY in ctx.models:
        held_path, held_device, held_dtype, model = ctx.models.get(MODEL_KEY, lambda: None)
        if held_path == path:
            if (held_device, held_dtype) != (device, dtype):
                model.to(device=device, dtype=dtype)
                if device.type == "cuda":
                    model.model.to(memory_format=torch.channels_last)
                _drop(ctx)
                ctx.models.get(MODEL_KEY, lambda: (path, device, dtype, model))
            return model
        _drop(ctx)

    def load() -> tuple[Path, torch.device, torch.dtype, ImageModelDescriptor]:
        model = load_upscaler(path, device=device, dtype=dtype)
        if device.type == "cuda":
            model.model.to(memory_format=torch.channels_last)
        return path, device, dtype, model

    return ctx.models.get(MODEL_KEY, load)[3]


def _drop(ctx: StageContext) -> None:
    """Evict the held upscaler and any compiled form of it (which keeps its weights alive)."""
    ctx.models.make_room(drop=[MODEL_KEY, COMPILED_KEY], reason="upscaler")


def _compiled(ctx: StageContext, model: ImageModelDescriptor, options: dict[str, Any]) -> Any:
    """The held upscaler's network under ``torch.compile``, kept as long as the upscaler is (a
    worker compiles once; a new process finds the kernels in the persistent cache)."""
    config = (options.get("esrgan_compile_scope") or DEFAULT_COMPILE[0],
              options.get("esrgan_compile_mode") or DEFAULT_COMPILE[1], options.get("esrgan_dense") or DEFAULT_COMPILE[2])
    if config[0] not in COMPILE_SCOPES or config[1] not in COMPILE_MODES or config[2] not in DENSE_FORMS:
        raise ValueError(f"upscale: unknown compile scope/mode/dense form {config}")
    if COMPILED_KEY in ctx.models and ctx.models.get(COMPILED_KEY, lambda: None)[0] != config:
        ctx.models.make_room(drop=[COMPILED_KEY], reason="another compile mode")
    return ctx.models.get(COMPILED_KEY, lambda: (config, compile_network(model.model, *config)))[1]


def compile_network(net: torch.nn.Module, scope: str, mode: str, dense: str = "concat",
                    backend: str = "inductor") -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` under ``torch.compile`` (lazy: the compile happens at the first call of a shape).

    "blocks": each RRDB block compiled, the rest eager. Dynamo treats the blocks' weights as
    inputs, so the 23 blocks share one graph: a twentieth of the whole network's compile, and
    the same kernels, since the fusions (activations, dense concatenations, residual scaling)
    live inside a block and the convolutions are cuDNN's either way. "whole": the network.
    ``dense``: "wide" regroups the dense blocks first (new weights; ``net`` is left as it is).
    ``backend``: inductor; the bench's CPU smoke passes "eager" (tracing only, no compiler).
    """
    import torch

    use_persistent_cache()
    compile_in_process()
    if dense == "wide":
        from pipeline.models.esrgan_dense import widen_dense_blocks  # torch at its top

        net = widen_dense_blocks(net)
    kwargs: dict[str, Any] = {"dynamic": False, "backend": backend,
                              "mode": None if mode == "default" or backend != "inductor" else mode}
    if scope == "whole":
        fn: Any = torch.compile(net, **kwargs)
    else:
        fn = _with_blocks(net, lambda block: torch.compile(block, **kwargs))
        if fn is net:  # not an RRDB network (another ×2 architecture): compile it whole
            fn = torch.compile(net, **kwargs)
    return _CudaGraphSteps(fn) if mode == "reduce-overhead" and backend == "inductor" else fn


class _CudaGraphSteps:
    """Marks each call a new CUDA-graph step: the previous call's outputs (already consumed:
    the stage casts them at once) may be overwritten by the replay."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        torch.compiler.cudagraph_mark_step_begin()
        return self.fn(x)


def _with_blocks(module: torch.nn.Module, wrap: Callable[[torch.nn.Module], Any]) -> Any:
    """A copy of ``module`` whose RRDB blocks are ``wrap(block)``; the copy shares every
    parameter with ``module``, which stays as it was (the eager fallback)."""
    return replace_modules(module, lambda m: type(m).__name__ == "RRDB", wrap)


def compile_in_process() -> None:
    """Inductor compiles in this process, unless the user set ``TORCHINDUCTOR_COMPILE_THREADS``.

    Its default starts a pool of compile processes, one per CPU, at the first compile (the
    first upscale), for a network of a few dozen kernels; the pool then lives as long as the
    worker, beside the draft whose steps are sensitive to whatever else takes the CPUs
    (bench/results/README.md, runs 11-14)."""
    if "TORCHINDUCTOR_COMPILE_THREADS" in os.environ:
        return
    from torch._inductor import config  # deferred: torch's compiler loads only where it compiles

    config.compile_threads = 1


def use_persistent_cache() -> Path:
    """Point inductor's caches (FX graphs, Triton kernels, autotuning) at Sulphur's cache folder,
    unless the user chose one with ``TORCHINDUCTOR_CACHE_DIR``: /tmp does not survive reboots.

    Torch writes its default (``<tmp>/torchinductor_<user>``) into that variable the first time
    anything asks for the folder (loading the upscaler does), so its default counts as unset.
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    torch_default = Path(current).parent == Path(tempfile.gettempdir()) and \
        Path(current).name.startswith("torchinductor_")
    if not current or torch_default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(sulphur_home() / INDUCTOR_CACHE)
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def _run(ctx: StageContext, forward: Any, model: ImageModelDescriptor, x: torch.Tensor,
         batch: int) -> tuple[torch.Tensor, Any]:
    """``forward(x)`` and the forward to use next: a compiled forward that fails to build
    falls back to the eager model for the rest of the stage."""
    if forward is model:
        return model(x), model
    n = x.shape[0]
    if n < batch:  # the last, short batch: padded, so the compiled shape (and no recompile) holds
        import torch

        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        x = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])]).contiguous(memory_format=layout)
    try:
        return forward(x)[:n], forward
    except Exception as exc:  # noqa: BLE001 - a compiler failure must not fail the render
        from pipeline.memory import planner as memory
        from pipeline.wire import protocol

        if memory.is_oom(exc):
            raise
        ctx.emit(protocol.Log(message=f"upscale: torch.compile failed ({type(exc).__name__}: {exc}); "
                                      "running eagerly"))
        ctx.models.make_room(drop=[COMPILED_KEY], reason="torch.compile failed")
        return model(x)[:n], model


class _Slot:
    """One batch in flight: pinned host buffers, the device input buffer and the events that
    order the copy streams against the compute stream."""

    def __init__(self, batch: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 device: torch.device) -> None:
        import torch

        self.host_in = torch.empty((batch, *in_shape), dtype=torch.uint8, pin_memory=True)
        self.host_out = torch.empty((batch, *out_shape), dtype=torch.uint8, pin_memory=True)
        self.device_in = torch.empty((batch, *in_shape), dtype=torch.uint8, device=device)
        self.loaded, self.consumed, self.fetched = (torch.cuda.Event() for _ in range(3))
        self.written = threading.Event()
        self.written.set()


def _overlapped(ctx: StageContext, name: str, source: FrameFile, sink: BinaryIO, up: _Upscale,
                device: torch.device) -> None:
    """Upscale ``source`` into ``sink`` with the GPU kept busy: batch k+1 is read into pinned
    memory and copied up on one stream while batch k computes; batch k's uint8 result is
    copied down on another stream and written to the file by a thread. Two slots of buffers
    alternate; the events make each wait for exactly what it reuses."""
    import torch

    compute = torch.cuda.current_stream(device)
    up_stream, down_stream = torch.cuda.Stream(device), torch.cuda.Stream(device)
    h, w = up.size
    slots = [_Slot(up.batch, tuple(source.shape[1:]), (h, w, 3), device) for _ in range(2)]
    todo: queue.Queue[tuple[_Slot, int] | None] = queue.Queue()
    failed: list[BaseException] = []

    def writer() -> None:
        while (item := todo.get()) is not None:
            slot, n = item
            try:
                if not failed:
                    slot.fetched.synchronize()
                    sink.write(slot.host_out[:n].numpy().data)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the stage's thread
                failed.append(exc)
            slot.written.set()

    thread = threading.Thread(target=writer, name="upscale writer", daemon=True)
    thread.start()
    total = source.count
    try:
        with open(source.path, "rb") as f:
            for i, start in enumerate(range(0, total, up.batch)):
                slot, stop = slots[i % 2], min(total, start + up.batch)
                n = stop - start
                slot.loaded.synchronize()  # the last upload from this pinned buffer is done
                _read_into(f, source, start, slot.host_in[:n])
                with torch.cuda.stream(up_stream):
                    up_stream.wait_event(slot.consumed)  # compute is done with this device buffer
                    slot.device_in[:n].copy_(slot.host_in[:n], non_blocking=True)
                    slot.loaded.record(up_stream)
                compute.wait_event(slot.loaded)
                y = up(slot.device_in[:n])
                slot.consumed.record(compute)
                slot.written.wait()  # the writer is done with this pinned output buffer
                if failed:
                    break
                slot.written.clear()
                with torch.cuda.stream(down_stream):
                    down_stream.wait_stream(compute)
                    slot.host_out[:n].copy_(y, non_blocking=True)
                    y.record_stream(down_stream)  # the allocator must not reuse y before the copy
                    slot.fetched.record(down_stream)
                todo.put((slot, n))
                ctx.progress(name, stop, total)
    finally:
        todo.put(None)
        thread.join()
        torch.cuda.synchronize(device)
    if failed:
        raise failed[0]


def _read_into(f: BinaryIO, source: FrameFile, start: int, out: torch.Tensor) -> None:
    """Frames ``start..start+len(out)`` of ``source`` straight into ``out`` (pinned host memory)."""
    view = memoryview(out.numpy()).cast("B")
    f.seek(source.offset + start * source.frame_bytes)
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise ValueError(f"{source.path}: ends before frame {start + len(out)}")
        done += got


def _tiled(model: ImageModelDescriptor, x: torch.Tensor, tile: int) -> torch.Tensor:
    """Run ``model`` on overlapping tiles of ``x`` (N, C, H, W); keep each tile's centre."""
    import torch

    n, c, h, w = x.shape
    s = model.scale
    tile = max(tile, 2 * TILE_OVERLAP + 8)
    step = tile - 2 * TILE_OVERLAP
    y = torch.empty((n, c, h * s, w * s), dtype=x.dtype, device=x.device)
    # A slice of a channels_last batch is strided; convolutions want it dense again.
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    for top in range(0, h, step):
        for left in range(0, w, step):
            bottom, right = min(h, top + step), min(w, left + step)
            # Input window = the kept region plus overlap context, clipped to the frame.
            t0, l0 = max(0, top - TILE_OVERLAP), max(0, left - TILE_OVERLAP)
            t1, l1 = min(h, bottom + TILE_OVERLAP), min(w, right + TILE_OVERLAP)
            out = model(x[:, :, t0:t1, l0:l1].contiguous(memory_format=layout))
            y[:, :, top * s:bottom * s, left * s:right * s] = \
                out[:, :, (top - t0) * s:(bottom - t0) * s, (left - l0) * s:(right - l0) * s]
    return y
