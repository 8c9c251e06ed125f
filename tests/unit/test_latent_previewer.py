"""The latent previewer (pipeline/stages/latent_preview.py): CPU latents are drawn at once, GPU
latents one step late so the host never waits for the GPU, and both give the same pictures."""

from __future__ import annotations

import pytest
import torch

from pipeline.stages.latent_preview import LatentPreviewer

GRID = (3, 9, 16)  # latent frames, rows, columns


def _latents(seed: int, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f, h, w = GRID
    return torch.randn(1, f * h * w, 128, generator=g).to(device)


def test_cpu_latents_are_drawn_at_their_own_step() -> None:
    p = LatentPreviewer(*GRID)
    for step in (1, 2, 3):
        ready = p.submit(step, _latents(step))
        assert [s for s, _ in ready] == [step]
        w, h, rgb = ready[0][1]
        assert (w, h) == (16, 9) and len(rgb) == 16 * 9 * 3 and len(set(rgb)) > 8
    assert p.flush() == []


def test_a_wrong_shape_gives_no_picture_and_never_raises() -> None:
    p = LatentPreviewer(*GRID)
    assert p.submit(1, torch.zeros(1, 7, 128)) == [] and p.broken
    assert p.submit(2, _latents(2)) == [] and p.flush() == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_latents_are_drawn_one_step_late_as_the_cpu_draws_them() -> None:
    gpu, cpu = LatentPreviewer(*GRID), LatentPreviewer(*GRID)
    got: list[tuple[int, tuple[int, int, bytes]]] = []
    for step in (1, 2, 3):
        ready = gpu.submit(step, _latents(step, "cuda"))
        assert [s for s, _ in ready] == ([] if step == 1 else [step - 1])
        got += ready
    got += gpu.flush()
    want = [r for step in (1, 2, 3) for r in cpu.submit(step, _latents(step))]
    assert got == want
