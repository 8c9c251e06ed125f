"""Upscale stage and the tiny Real-ESRGAN x2plus file, through real spandrel on CPU."""

from __future__ import annotations

import copy
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


def test_compiling_is_decided_by_device_and_tiles() -> None:
    from pipeline.memory.planner import ESRGAN_COMPILE_MIN_FRAMES, esrgan_compile_pays

    cuda = StagePlan(name="batch4", device="cuda", options={"esrgan_batch": 4})
    assert esrgan_compile_pays(2 * 121, cuda)  # two segments: a warm compile is paid back
    assert not esrgan_compile_pays(ESRGAN_COMPILE_MIN_FRAMES - 1, cuda)
    assert not esrgan_compile_pays(10 * ESRGAN_COMPILE_MIN_FRAMES, StagePlan(name="cpu", device="cpu"))
    tiled = StagePlan(name="tiles", device="cuda", options={"esrgan_tile": 256})
    assert not esrgan_compile_pays(10 * ESRGAN_COMPILE_MIN_FRAMES, tiled)  # tile shapes would recompile


def test_the_cpu_never_compiles_even_when_asked(tmp_path: Path, x2plus: Path) -> None:
    from pipeline.stages.upscale import COMPILED_KEY

    job = make_job(tmp_path, x2plus, (32, 24), 2)
    (tmp_path / "out").mkdir()
    ctx = StageContext(emit=[].append, cancel=threading.Event(), models=LoadedModels(),
                       plan=StagePlan(name="cpu", device="cpu", options={"esrgan_compile": True}))
    UpscaleStage().run(ctx, job, {"refine": refine_artifact(tmp_path, gradient_frames(2, 12, 16))}, tmp_path / "out")
    assert ctx.models.names() == ["upscaler"] and COMPILED_KEY not in ctx.models


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


def eager_reference(model_file: Path, frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the stage must produce: the eager fp32 model on every frame, bicubic-antialias
    resize to ``size`` (w, h), rounded to uint8, written independently of the stage's code."""
    desc = load_upscaler(model_file, device="cpu", dtype=torch.float32)
    with torch.inference_mode():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        y = torch.nn.functional.interpolate(desc(x), size=size[::-1], mode="bicubic", antialias=True)
        return (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def noisy_frames(t: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.clip(gradient_frames(t, h, w) + rng.integers(-25, 25, (t, h, w, 3)), 0, 255).astype(np.uint8)


def test_the_stage_gives_the_eager_models_frames(tmp_path: Path, x2plus: Path) -> None:
    frames = noisy_frames(7, 24, 40)
    out = run_stage(tmp_path, x2plus, frames, (72, 44), {"esrgan_batch": 3})  # 3 + 3 + a short 1
    ref = eager_reference(x2plus, frames, (72, 44))
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1  # batching may flip one rounding


class Counted(torch.nn.Module):
    """Stands in for torch.compile's wrapper (CI compiles nothing): runs the block, counts calls."""

    def __init__(self, block: torch.nn.Module, calls: list[int]) -> None:
        super().__init__()
        self.block, self.calls = block, calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.block(x)


def test_block_compile_wraps_every_rrdb_and_leaves_the_eager_model_alone(tmp_path: Path) -> None:
    from pipeline.stages.upscale import _with_blocks

    model_file = build_tiny_x2plus(tmp_path / "x2.pth", nb=3)
    desc = load_upscaler(model_file, device="cpu", dtype=torch.float32)
    calls: list[int] = []
    net = _with_blocks(desc.model, lambda block: Counted(block, calls))
    x = torch.rand(2, 3, 14, 18)
    with torch.inference_mode():
        eager, wrapped = desc.model(x), net(x)
    assert calls == [2, 2, 2]  # the three RRDB blocks, each once
    assert torch.equal(eager, wrapped)
    assert not any(isinstance(m, Counted) for m in desc.model.modules())  # the eager fallback is untouched
    assert {p.data_ptr() for p in net.parameters()} == {p.data_ptr() for p in desc.model.parameters()}


def test_a_compiled_fp16_forward_is_the_same_picture_and_a_broken_one_falls_back_once(
        tmp_path: Path, x2plus: Path) -> None:
    """The stage's per-batch path (pad the short batch, forward, crop, resize, round) in fp16,
    as on the GPU, against the fp32 eager frames. fp16 keeps 11 bits: a relative error of
    ~5e-4 per layer over the tiny net's ~20 layers stays under 1% of full scale, i.e. ≤ 2
    of 255 levels on a pixel and far less on average (PSNR > 45 dB)."""
    from pipeline.stages.upscale import COMPILED_KEY, DEFAULT_COMPILE, _Upscale, _with_blocks
    from pipeline.wire.protocol import Log

    frames = noisy_frames(5, 24, 40)
    ref = eager_reference(x2plus, frames, (72, 44))
    desc = load_upscaler(x2plus, device="cpu", dtype=torch.float16)
    calls: list[int] = []
    events: list = []
    ctx = StageContext(emit=events.append, cancel=threading.Event(), models=LoadedModels(),
                       plan=StagePlan(name="cpu", device="cpu"))
    up = _Upscale(ctx, desc, torch.float16, 2, 0, (44, 72), _with_blocks(desc.model, lambda b: Counted(b, calls)))
    with torch.inference_mode():
        out = np.concatenate([up(torch.from_numpy(frames[i:i + 2])).numpy() for i in range(0, 5, 2)])
    assert calls and set(calls) == {2}  # the short last batch was padded to the compiled shape
    assert out.shape == ref.shape and np.abs(out.astype(int) - ref.astype(int)).max() <= 2
    assert psnr(out, ref) > 45

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("InductorError: no working C++ compiler")

    ctx.models.get(COMPILED_KEY, lambda: (DEFAULT_COMPILE, broken))
    up = _Upscale(ctx, desc, torch.float16, 2, 0, (44, 72), broken)
    with torch.inference_mode():
        out = np.concatenate([up(torch.from_numpy(frames[i:i + 2])).numpy() for i in range(0, 5, 2)])
    assert psnr(out, ref) > 45 and up.forward is desc  # eager for the rest of the stage
    logs = [e.message for e in events if isinstance(e, Log)]
    assert len(logs) == 1 and "torch.compile failed" in logs[0] and "running eagerly" in logs[0]
    assert COMPILED_KEY not in ctx.models  # the broken forward is not kept for the next segment


def test_inductor_caches_persist_under_sulphur_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.stages.upscale import use_persistent_cache

    monkeypatch.setenv("SULPHUR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert use_persistent_cache() == tmp_path / "home" / "inductor"
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "home" / "inductor")
    import tempfile

    # torch sets its /tmp default the first time anything asks (loading the upscaler does)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "torchinductor_someone"))
    assert use_persistent_cache() == tmp_path / "home" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_persistent_cache() == tmp_path / "mine"  # the user's choice wins


def test_frames_are_read_straight_into_a_buffer_and_a_short_file_is_named(tmp_path: Path) -> None:
    from pipeline.stages.frame_files import FrameFile
    from pipeline.stages.upscale import _read_into

    frames = noisy_frames(5, 6, 10)
    np.save(tmp_path / "frames.npy", frames)
    source = FrameFile(tmp_path / "frames.npy")
    buf = torch.zeros((3, 6, 10, 3), dtype=torch.uint8)
    with open(source.path, "rb") as f:
        _read_into(f, source, 2, buf)
        assert np.array_equal(buf.numpy(), frames[2:5])
        with pytest.raises(ValueError, match="frames.npy: ends before frame 6"):
            _read_into(f, source, 3, buf)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_overlapped_and_compiled_match_the_plain_eager_stage(tmp_path: Path, x2plus: Path) -> None:
    frames = noisy_frames(7, 72, 128)
    outs = {}
    for name, options in {"plain": {"esrgan_compile": False, "esrgan_overlap": False},
                          "overlap": {"esrgan_compile": False},
                          "compiled": {"esrgan_compile": True}}.items():
        (tmp_path / name).mkdir()
        outs[name] = run_stage(tmp_path / name, x2plus, frames, (240, 136), {"esrgan_batch": 3, **options},
                               device="cuda")
    assert np.array_equal(outs["plain"], outs["overlap"])  # same kernels, only the copies moved
    assert psnr(outs["compiled"], outs["plain"]) > 45  # fused fp16 kernels: last-bit differences


def test_wide_dense_blocks_are_the_same_sums_regrouped(tmp_path: Path) -> None:
    """The regrouped block (convolutions by input piece, no concatenations) against the published
    one on random features: equal in fp32; in fp16 (the GPU's dtype) its few extra roundings of
    partial sums stay within a small multiple of the published block's own fp16 error."""
    from pipeline.models.esrgan_dense import WideDenseBlock, widen_dense_blocks

    desc = load_upscaler(build_tiny_x2plus(tmp_path / "x2.pth", nf=24, nb=2), device="cpu", dtype=torch.float32)
    net = widen_dense_blocks(desc.model)
    assert sum(isinstance(m, WideDenseBlock) for m in net.modules()) == 6  # 2 RRDB × 3 dense blocks
    assert not any(isinstance(m, WideDenseBlock) for m in desc.model.modules())  # the original is untouched
    image = torch.rand(1, 3, 20, 28)
    with torch.inference_mode():
        assert torch.allclose(net(image), desc.model(image), atol=1e-5)
    block = desc.model.model[1].sub[1].RDB2
    torch.manual_seed(0)
    for m in block.modules():  # full-scale random weights: every piece's share must land right
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=(2 / (9 * m.in_channels)) ** 0.5)
            torch.nn.init.normal_(m.bias, std=0.1)
    wide = WideDenseBlock(block)
    x = torch.randn(2, 24, 12, 16)
    with torch.inference_mode():
        ref = block(x)
        assert torch.allclose(wide(x), ref, atol=1e-5, rtol=1e-5)
        concat16 = (copy.deepcopy(block).half()(x.half()).float() - ref).abs().max()
        wide16 = (WideDenseBlock(block).half()(x.half()).float() - ref).abs().max()
    assert wide16 <= 4 * concat16 + 1e-3 and wide16 < 0.01 * ref.abs().max()


def test_dense_blocks_of_other_layouts_are_left_as_published() -> None:
    from spandrel.architectures.ESRGAN import ESRGAN

    from pipeline.models.esrgan_dense import widen_dense_blocks

    plus = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2, plus=True)  # ESRGAN+: 1×1 paths
    assert widen_dense_blocks(plus) is plus


def test_inductor_compiles_in_this_process_unless_the_user_chose(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool of compile processes, one per CPU, for a few dozen kernels would live beside the
    draft for the worker's life; a user's TORCHINDUCTOR_COMPILE_THREADS is theirs to keep."""
    import torch
    from torch._inductor import config

    from pipeline.stages.upscale import compile_network

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    monkeypatch.setattr(config, "compile_threads", 8)
    compile_network(torch.nn.Conv2d(3, 3, 3), "whole", "default", backend="eager")
    assert config.compile_threads == 1
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "4")
    monkeypatch.setattr(config, "compile_threads", 4)
    compile_network(torch.nn.Conv2d(3, 3, 3), "whole", "default", backend="eager")
    assert config.compile_threads == 4
