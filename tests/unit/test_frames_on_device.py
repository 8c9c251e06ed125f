"""Frames made uint8 on the decoding device, and written beside the stage's other work (issue 20).

The draft and refine decode their frames with :func:`pipeline.models.ltx2.video_to_uint8`
instead of diffusers' ``output_type="np"`` + :func:`np_uint8` (float32 math on the CPU, what
the stages did before): the bytes must be the same, values out of range and halfway cases included.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.video_processor import VideoProcessor

from pipeline.models import ltx2
from pipeline.stages.frame_files import SaveInBackground


def np_uint8(frames: np.ndarray) -> np.ndarray:
    """The reference: diffusers' float32 frames [1,F,H,W,C] in [0, 1] → uint8 (F,H,W,C)."""
    return np.clip(np.round(np.asarray(frames, dtype=np.float32)[0] * 255.0), 0, 255).astype(np.uint8)


def _video(dtype: torch.dtype, frames: int = 11) -> torch.Tensor:
    """A VAE-output-like clip [1, 3, F, H, W] in about [-1.2, 1.2], with exact halfway values."""
    g = torch.Generator().manual_seed(0)
    v = torch.rand((1, 3, frames, 6, 10), generator=g) * 2.4 - 1.2
    # x / 2 + 0.5 = k / 255 + 1 / 510 lands on .5 after ×255: where round-half-even matters
    k = torch.arange(180, dtype=torch.float32).reshape(1, 3, 1, 6, 10)
    v[:, :, :1] = ((k + 0.5) / 255 - 0.5) * 2
    return v.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_uint8_on_the_device_is_diffusers_np_postprocess_bit_for_bit(dtype: torch.dtype) -> None:
    pipe = SimpleNamespace(video_processor=VideoProcessor(vae_scale_factor=32))
    video = _video(dtype)
    old = np_uint8(pipe.video_processor.postprocess_video(video, output_type="np"))
    new = ltx2.video_to_uint8(pipe, video)
    assert new.dtype == np.uint8 and new.shape == (11, 6, 10, 3) and new.flags.c_contiguous
    np.testing.assert_array_equal(new, old)
    assert {0, 255} <= set(np.unique(new).tolist())  # the clip reaches both ends: clipping was exercised


def test_uint8_frames_land_in_a_given_buffer_across_chunks() -> None:
    pipe = SimpleNamespace(video_processor=VideoProcessor(vae_scale_factor=32))
    video = _video(torch.float32, frames=ltx2.UINT8_CHUNK * 2 + 3)  # two full chunks and a short one
    buf = np.zeros((video.shape[2], 6, 10, 3), np.uint8)
    assert ltx2.video_to_uint8(pipe, video, buf) is buf
    np.testing.assert_array_equal(buf, np_uint8(pipe.video_processor.postprocess_video(video, "np")))


def test_background_save_is_whole_when_the_block_ends(tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (9, 16, 24, 3), dtype=np.uint8)
    with SaveInBackground(tmp_path / "frames.npy", frames):
        pass
    np.testing.assert_array_equal(np.load(tmp_path / "frames.npy"), frames)


def test_background_save_failure_fails_the_stage(tmp_path: Path) -> None:
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(FileNotFoundError), SaveInBackground(tmp_path / "missing" / "frames.npy", frames):
        pass


def test_the_stages_own_error_wins_over_the_writers(tmp_path: Path) -> None:
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(KeyError), SaveInBackground(tmp_path / "missing" / "frames.npy", frames):
        raise KeyError("the stage failed first")
