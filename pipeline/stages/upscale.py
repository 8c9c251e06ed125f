"""Upscale: Real-ESRGAN ×2 on the refined frames, then an antialiased resize to output size.

Host memory stays bounded by one batch: frames are read from the refine ``.npy`` and
appended to the output ``.npy`` one batch at a time, never held whole (ESRGAN ×4 buffers
for a full clip once OOM-killed a 32 GB host). Frames go through in batches of
``plan.options["esrgan_batch"]`` (default 4); ``plan.options["esrgan_tile"]`` (input
pixels) tiles each frame for small cards.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models.esrgan import TINY_X2PLUS_VERSION, load_upscaler
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
DEFAULT_BATCH = 4
TILE_OVERLAP = 16  # input pixels of context on each side of a tile


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
        forward = _compiled(ctx, model) if cuda and not tile and o.get("esrgan_compile") else model

        # 2. Output written batch by batch with plain file writes: a memmap would count
        #    every written page in the process's RSS (and the reported host peak).
        ctx.progress(self.name, 0, total)
        with open(out / "frames.npy", "wb") as sink, torch.inference_mode():
            write_frames_header(sink, (total, height, width, 3))
            for start in range(0, total, batch):
                stop = min(total, start + batch)
                x = torch.from_numpy(source.read(start, stop)).to(device)
                x = x.permute(0, 3, 1, 2).to(dtype).div_(255.0)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                # 3. ESRGAN ×2 (tiled if the plan asks), then resize in fp32 for accuracy.
                if tile:
                    y = _tiled(model, x, tile)
                else:
                    y, forward = _run(ctx, forward, model, x, batch)
                y = y.float()
                if (y.shape[-1], y.shape[-2]) != (width, height):
                    y = torch.nn.functional.interpolate(y, size=(height, width), mode="bicubic",
                                                        antialias=True, align_corners=False)
                y = y.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
                sink.write(y.permute(0, 2, 3, 1).contiguous().cpu().numpy().data)
                ctx.progress(self.name, stop, total)
        return {"frames": total, "size": [width, height]}


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


COMPILED_KEY = "upscaler-compiled"


def _drop(ctx: StageContext) -> None:
    """Evict the held upscaler and any compiled form of it (which keeps its weights alive)."""
    ctx.models.make_room(drop=[MODEL_KEY, COMPILED_KEY], reason="upscaler")


def _compiled(ctx: StageContext, model: ImageModelDescriptor) -> Any:
    """The held upscaler's network under ``torch.compile`` (kept as long as the upscaler is):
    1.65× the eager frames/s once compiled, after about a minute of compiling (H200)."""
    import torch

    return ctx.models.get(COMPILED_KEY, lambda: torch.compile(model.model, dynamic=False))


def _run(ctx: StageContext, forward: Any, model: ImageModelDescriptor, x: torch.Tensor,
         batch: int) -> tuple[torch.Tensor, Any]:
    """``forward(x)`` and the forward to use next: a compiled forward that fails to build
    falls back to the eager model for the rest of the stage."""
    if forward is model:
        return model(x), model
    n = x.shape[0]
    if n < batch:  # the last, short batch: padded, so the compiled shape (and no recompile) holds
        import torch

        x = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
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
