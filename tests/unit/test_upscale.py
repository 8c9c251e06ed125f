"""Upscale stage and the tiny Real-ESRGAN x2plus file, through real spandrel on CPU."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import StagePlan
from pipeline.models.esrgan import UpscalerError, build_tiny_x2plus, load_upscaler
from pipeline.models.registry import ModelFile, Preset
from pipeline.project.storyboard import Project, Segment, Storyboard
from pipeline.render.cache import Artifact
from pipeline.stages.base import Cancelled, SegmentJob, StageContext
from pipeline.stages.upscale import UpscaleStage
from pipeline.wire.protocol import StepProgress


@pytest.fixture(scope="module")
def x2plus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_x2plus(tmp_path_factory.mktemp("models") / "RealESRGAN_x2plus.pth")


def make_job(tmp: Path, model: Path, output_size: tuple[int, int], frames: int) -> SegmentJob:
    preset = Preset(name="test", family="ltx2", description="",
                    files=(ModelFile(role="upscaler", description="x2", path=str(model)),))
    seg = Segment(id="s1", prompt="p")
    board = Storyboard(path=tmp / "board.toml", project=Project(output_size=output_size), segments=(seg,))
    return SegmentJob(storyboard=board, segment=seg, index=0, preset=preset, frames=frames, seed=0, fps=24,
                      draft_size=(32, 32), refine_size=(64, 64), output_size=output_size, steps=1,
                      refine_sigmas=(0.0,), lora_strength=0.0, audio=False)


def refine_artifact(tmp: Path, frames: np.ndarray) -> Artifact:
    folder = tmp / "refine"
    folder.mkdir()
    np.save(folder / "frames.npy", frames)
    return Artifact(stage="refine", key="k", path=folder, meta={})


def gradient_frames(t: int, h: int, w: int) -> np.ndarray:
    """Smooth colour ramps (R across, G down, B diagonal) that change slowly over time."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.float32)
    for i in range(t):
        out[i, ..., 0] = 30 + 190 * x / (w - 1)
        out[i, ..., 1] = 220 - 180 * y / (h - 1)
        out[i, ..., 2] = 60 + 100 * (x + y) / (w + h - 2) + 5 * i
    return out.round().astype(np.uint8)


def run_stage(tmp: Path, model: Path, frames: np.ndarray, output_size: tuple[int, int],
              options: dict | None = None, events: list | None = None,
              cancel: threading.Event | None = None, device: str = "cpu") -> np.ndarray:
    job = make_job(tmp, model, output_size, len(frames))
    out = tmp / "out"
    out.mkdir()
    ctx = StageContext(emit=(events if events is not None else []).append, cancel=cancel or threading.Event(),
                       models=LoadedModels(), plan=StagePlan(name=device, device=device, options=options or {}))
    meta = UpscaleStage().run(ctx, job, {"refine": refine_artifact(tmp, frames)}, out)
    assert meta == {"frames": len(frames), "size": list(output_size)}
    assert "upscaler" in ctx.models.names()  # kept for the next segment
    return np.load(out / "frames.npy")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def test_tiny_x2plus_is_detected_as_realesrgan_x2plus(x2plus: Path) -> None:
    raw = torch.load(x2plus, map_location="cpu", weights_only=True)
    assert set(raw) == {"params_ema"}  # the real file's container
    assert raw["params_ema"]["conv_first.weight"].shape[1] == 12  # pixel-unshuffle layout

    desc = load_upscaler(x2plus, device="cpu", dtype=torch.float32)
    assert desc.architecture.id == "ESRGAN"
    assert desc.scale == 2
    assert desc.model.shuffle_factor == 2
    assert desc.model.model[0].weight.shape[1] == 12
    assert desc.input_channels == 3 and desc.output_channels == 3
    out = desc(torch.rand(2, 3, 12, 20))
    assert out.shape == (2, 3, 24, 40)


def test_tiny_x2plus_build_is_deterministic(tmp_path: Path, x2plus: Path) -> None:
    again = build_tiny_x2plus(tmp_path / "again.pth")
    assert again.read_bytes() == x2plus.read_bytes()
    assert not list(tmp_path.glob(".*partial"))


def test_a_x4_model_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from spandrel.architectures.ESRGAN import ESRGAN

    path = tmp_path / "x4.pth"
    torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4).state_dict(), path)
    with pytest.raises(UpscalerError, match="×4"):
        load_upscaler(path, device="cpu", dtype=torch.float32)


def test_output_has_output_size_and_resembles_input(tmp_path: Path, x2plus: Path) -> None:
    frames = gradient_frames(3, 36, 64)
    events: list = []
    out = run_stage(tmp_path, x2plus, frames, (96, 54), events=events)
    assert out.dtype == np.uint8 and out.shape == (3, 54, 96, 3)

    # Downscaled back to the input size, the upscale is the same picture: same ramps,
    # same orientation and colour order (a flipped or channel-swapped result would fail).
    back = torch.nn.functional.interpolate(torch.from_numpy(out).permute(0, 3, 1, 2).float(),
                                           size=frames.shape[1:3], mode="bicubic", antialias=True)
    back = back.round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    inner = (slice(None), slice(2, -2), slice(2, -2))  # zero-padded convs darken the rim
    assert psnr(back[inner], frames[inner]) > 30
    assert psnr(back[inner], frames[inner]) > psnr(back[inner], frames[:, ::-1, ::-1][inner]) + 10
    assert psnr(back[inner], frames[inner]) > psnr(back[inner], frames[..., ::-1][inner]) + 10

    steps = [e for e in events if isinstance(e, StepProgress)]
    assert steps[-1].step == steps[-1].total == 3


def test_batch_size_does_not_change_the_result(tmp_path: Path, x2plus: Path) -> None:
    frames = gradient_frames(5, 20, 28)
    rng = np.random.default_rng(0)
    frames = np.clip(frames + rng.integers(-20, 20, frames.shape), 0, 255).astype(np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = run_stage(tmp_path / "a", x2plus, frames, (64, 40), {"esrgan_batch": 1})
    three = run_stage(tmp_path / "b", x2plus, frames, (64, 40), {"esrgan_batch": 3})
    assert np.abs(one.astype(int) - three.astype(int)).max() <= 1  # fp reassociation may flip a rounding


def test_tiles_match_the_untiled_result(tmp_path: Path, x2plus: Path) -> None:
    frames = gradient_frames(2, 72, 100)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = run_stage(tmp_path / "a", x2plus, frames, (200, 144))
    tiled = run_stage(tmp_path / "b", x2plus, frames, (200, 144), {"esrgan_tile": 48})
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) > 40  # seams would show as stripes far below this


def test_cancel_stops_the_stage(tmp_path: Path, x2plus: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_stage(tmp_path, x2plus, gradient_frames(2, 8, 8), (16, 16), cancel=cancel)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_channels_last_matches_cpu(tmp_path: Path, x2plus: Path) -> None:
    frames = gradient_frames(5, 72, 128)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cpu = run_stage(tmp_path / "a", x2plus, frames, (240, 136))
    gpu = run_stage(tmp_path / "b", x2plus, frames, (240, 136), {"esrgan_batch": 2}, device="cuda")
    assert gpu.shape == cpu.shape and gpu.dtype == np.uint8
    assert psnr(gpu, cpu) > 40  # fp16 on the GPU, fp32 on the CPU: the same picture


def test_compiling_pays_only_for_long_untiled_cuda_jobs() -> None:
    from pipeline.memory.planner import ESRGAN_COMPILE_MIN_FRAMES, esrgan_compile_pays

    cuda = StagePlan(name="batch4", device="cuda", options={"esrgan_batch": 4})
    assert not esrgan_compile_pays(4 * 121, cuda)  # a 4-shot storyboard: the compile would cost more
    assert esrgan_compile_pays(ESRGAN_COMPILE_MIN_FRAMES, cuda)
    assert not esrgan_compile_pays(10 * ESRGAN_COMPILE_MIN_FRAMES, StagePlan(name="cpu", device="cpu"))
    tiled = StagePlan(name="tiles", device="cuda", options={"esrgan_tile": 256})
    assert not esrgan_compile_pays(10 * ESRGAN_COMPILE_MIN_FRAMES, tiled)  # tile shapes would recompile


def test_a_compiled_forward_keeps_its_batch_shape_and_falls_back_when_it_fails(x2plus: Path) -> None:
    """The short last batch is padded (a new shape would recompile for a minute); a forward
    that fails to build is replaced by the eager model for the rest of the stage, with a log."""
    from pipeline.stages.upscale import _run
    from pipeline.wire.protocol import Log

    model = load_upscaler(x2plus, device="cpu", dtype=torch.float32)
    x = torch.rand(1, 3, 16, 24)
    shapes: list[tuple[int, ...]] = []

    def fixed_shape(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return model.model(t)

    events: list = []
    ctx = StageContext(emit=events.append, cancel=threading.Event(), models=LoadedModels(),
                       plan=StagePlan(name="cpu", device="cpu"))
    with torch.inference_mode():
        y, nxt = _run(ctx, fixed_shape, model, x, batch=4)
        assert shapes == [(4, 3, 16, 24)] and nxt is fixed_shape
        assert y.shape[0] == 1 and torch.allclose(y, model(x), atol=1e-5)  # batch size moves the last bits

        def broken(t: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("inductor: no C++ compiler")

        y, nxt = _run(ctx, broken, model, x, batch=4)
    assert nxt is model and torch.allclose(y, model(x), atol=1e-5) and y.shape[0] == 1
    assert any(isinstance(e, Log) and "torch.compile failed" in e.message for e in events)
