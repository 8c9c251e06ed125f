"""A picture of the latent while it is denoised, for the editor's Preview panel.

No decoder runs: the latent's channels at each position of one latent frame are mapped
linearly to RGB, which costs a small matrix product per step (ComfyUI previews LTX latents
the same way, with a fixed fitted matrix). We have no fitted matrix for every model this
project loads (random-weight twins included), so the map is the latent's own first three
principal components at each step, each sign aligned with the step before: the colours
are false but do not flip, and the composition shows as it forms. Failures never reach
the render: a preview is optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Deferred imports: torch — the projection runs inside a sampling callback, where torch is already loaded

MAX_SIDE = 64  # pixels: a terminal preview shows at most a few dozen cells across


def latent_grid(pipe: Any, frames: int, width: int, height: int) -> tuple[int, int, int]:
    """(frames, rows, columns) of the packed latent tokens of an LTX-2 diffusers pipeline
    for a video of ``frames`` × ``width`` × ``height`` pixels."""
    t = int(getattr(pipe, "vae_temporal_compression_ratio", 8))
    s = int(getattr(pipe, "vae_spatial_compression_ratio", 32))
    pt = int(getattr(pipe, "transformer_temporal_patch_size", 1) or 1)
    ps = int(getattr(pipe, "transformer_spatial_patch_size", 1) or 1)
    return ((frames - 1) // t + 1) // pt, height // s // ps, width // s // ps


@dataclass
class LatentPreviewer:
    """Turns the packed latents of a diffusers LTX-2 pipeline (``[B, F·H·W, C]``, patch size 1,
    as ``callback_on_step_end`` hands them) into small RGB pictures of the middle frame.

    Latents on a GPU are drawn one step late: :meth:`submit` queues a copy of the middle frame
    behind the step's kernels and draws the previous step's, which finished a step ago (or is
    about to), so the drawing overlaps this step. Waiting for each step's latents held every
    launch until the GPU was idle, and the drawing (an SVD, quantiles) took ~0.1 s a step while
    the encode behind it held the CPUs (bench/results/README.md, run 17). :meth:`flush` draws
    the last."""

    frames: int   # latent frames
    height: int   # latent rows
    width: int    # latent columns
    basis: Any = None  # [C, 3] principal directions of the last picture
    broken: bool = field(default=False)
    pending: Any = None  # (step, host copy, CUDA event) of a GPU step not drawn yet

    def submit(self, step: int, latents: Any) -> list[tuple[int, tuple[int, int, bytes]]]:
        """``(step, (width, height, rgb))`` of the pictures ready after ``step``: this step's for
        latents on the CPU, the previous step's on a GPU. Empty when the shape is not the expected
        one (a pipeline packing patches, say) or anything fails: a preview must never fail a stage."""
        if self.broken:
            return []
        try:
            ready = self._finish()
            middle = self._middle(latents)
            if middle is None:
                return ready
            if middle.is_cuda:
                self.pending = (step, *self._copy(middle))
            else:
                ready.append((step, self._picture(middle)))
            return ready
        except Exception:  # noqa: BLE001 - a preview must never fail a stage
            self.broken, self.pending = True, None
            return []

    def flush(self) -> list[tuple[int, tuple[int, int, bytes]]]:
        """The picture still on its way (the last GPU step's), if any."""
        try:
            return self._finish()
        except Exception:  # noqa: BLE001 - a preview must never fail a stage
            self.broken, self.pending = True, None
            return []

    def _middle(self, latents: Any) -> Any:
        per_frame = self.height * self.width
        if latents.ndim != 3 or latents.shape[1] != self.frames * per_frame:
            self.broken = True
            return None
        middle = self.frames // 2
        return latents[0, middle * per_frame:(middle + 1) * per_frame].detach()

    @staticmethod
    def _copy(middle: Any) -> tuple[Any, Any]:
        import torch

        host = torch.empty(middle.shape, dtype=middle.dtype, pin_memory=True)
        host.copy_(middle, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(middle.device))  # the stream the copy was queued on
        return host, done

    def _finish(self) -> list[tuple[int, tuple[int, int, bytes]]]:
        if self.pending is None:
            return []
        step, host, done = self.pending
        self.pending = None
        done.synchronize()  # queued a step ago: finished, or about to be
        return [(step, self._picture(host))]

    def _picture(self, middle: Any) -> tuple[int, int, bytes]:
        import torch  # the stage has it loaded already

        with torch.no_grad():
            # One small copy to the host, then host maths: on a GPU the SVD and quantiles of a
            # few hundred rows were a dozen tiny kernels and several synchronisations per step.
            x = middle.float().cpu().reshape(self.height, self.width, -1)
            x = _shrink(x.permute(2, 0, 1), MAX_SIDE).permute(1, 2, 0)
            h, w, c = x.shape
            flat = x.reshape(-1, c)
            flat = flat - flat.mean(0, keepdim=True)
            self.basis = _principal(flat, self.basis)
            rgb = flat @ self.basis
            lo = torch.quantile(rgb, 0.02, dim=0, keepdim=True)
            hi = torch.quantile(rgb, 0.98, dim=0, keepdim=True)
            rgb = ((rgb - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
            data = (rgb * 255).round().to(torch.uint8).reshape(h, w, 3).cpu().numpy().tobytes()
        return w, h, data


def _principal(flat: Any, previous: Any) -> Any:
    """The first three principal directions of ``flat`` (rows are samples) as ``[C, 3]``,
    each sign chosen to agree with ``previous`` so colours do not flip between steps."""
    import torch

    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    basis = vh[:3].T.contiguous()
    if basis.shape[1] < 3:  # fewer than three channels: repeat the last
        basis = torch.cat([basis] + [basis[:, -1:]] * (3 - basis.shape[1]), dim=1)
    if previous is not None and previous.shape == basis.shape:
        signs = torch.sign((basis * previous).sum(0))
        basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    return basis


def _shrink(chw: Any, side: int) -> Any:
    """Average-pool ``[C, H, W]`` so neither side exceeds ``side``."""
    import torch.nn.functional as F

    _, h, w = chw.shape
    k = max(1, -(-max(h, w) // side))
    if k == 1:
        return chw
    return F.avg_pool2d(chw[None], kernel_size=k, ceil_mode=True)[0]
