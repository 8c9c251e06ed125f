"""Shot LoRAs and given sound through the real tiny LTX-2 stack (diffusers, PEFT, PyAV), on a CPU.

Draft-stage tests hold the models between runs as the worker does, so a LoRA left behind by
one shot would show in the next. The render tests go through ``render()`` / the CLI, the
cache and the film, and check what a user would: a LoRA's strength changes the frames,
removing it brings back the cached original, a LoRA that does not fit is one line naming
the file, and an audio-driven shot's film carries the given sound from the shot's first frame.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import StagePlan
from pipeline.models.registry import get_preset
from pipeline.project.audio_track import AudioTrack
from pipeline.project.loras import LoraRef
from pipeline.project.storyboard import Project, Segment, Storyboard
from pipeline.stages.base import SegmentJob, StageContext
from pipeline.stages.draft import DraftStage
from pipeline.stages.refine import RefineStage
from pipeline.wire import protocol
from tests.functional.conftest import cache_keys, checkout_env, decode_frames, tiny_storyboard
from tests.shot_twins import write_lora, write_track

FPS = 8


@pytest.fixture(scope="module")
def models() -> LoadedModels:
    return LoadedModels()  # one holder for the module, as a worker keeps one between shots


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shots")
    write_lora(root / "style.safetensors")
    return root


def _job(folder: Path, seg: Segment, *, index: int = 0, anchor: np.ndarray | None = None) -> SegmentJob:
    preset = get_preset("tiny")
    board = Storyboard(path=folder / "board.toml", project=Project(fps=FPS), segments=(seg,) * (index + 1))
    return SegmentJob(storyboard=board, segment=seg, index=index, preset=preset, frames=9, seed=0, fps=FPS,
                      draft_size=preset.draft_size, refine_size=preset.refine_size, output_size=(448, 256),
                      steps=preset.steps, refine_sigmas=preset.refine_sigmas, lora_strength=0.7, audio=True,
                      prompt="a dog running on the beach", anchor=anchor, anchor_digest="a" if anchor is not None else "")


def _run(stage: Any, job: SegmentJob, models: LoadedModels, out: Path, inputs: dict | None = None) -> Any:
    from pipeline.render.cache import Artifact

    out.mkdir(parents=True)
    ctx = StageContext(emit=lambda e: None, cancel=threading.Event(), models=models, plan=StagePlan(name="cpu"))
    meta = stage.run(ctx, job, inputs or {}, out)
    return Artifact(stage=stage.name, key=out.name, path=out, meta=meta)


def _frames(art: Any) -> np.ndarray:
    return np.load(art.file("frames.npy"))


def test_lora_strength_0_and_1_differ_and_the_held_model_is_left_as_it_was(
        folder: Path, models: LoadedModels, tmp_path: Path) -> None:
    plain = Segment(id="s", prompt="p")
    styled = [Segment(id="s", prompt="p", loras=(LoraRef("style.safetensors", s),)) for s in (1.0, 0.0)]
    before = _frames(_run(DraftStage(), _job(folder, plain), models, tmp_path / "before"))
    one = _frames(_run(DraftStage(), _job(folder, styled[0]), models, tmp_path / "one"))
    zero = _frames(_run(DraftStage(), _job(folder, styled[1]), models, tmp_path / "zero"))
    after = _frames(_run(DraftStage(), _job(folder, plain), models, tmp_path / "after"))
    assert np.abs(one.astype(int) - zero).mean() > 1.0       # strength 1 vs 0: other frames
    assert np.array_equal(zero, before)                      # strength 0 adds nothing
    assert np.array_equal(after, before)                     # and the shot after has no LoRA left in it
    transformer = models.get("tiny:transformer", lambda: None)
    assert set(transformer.peft_config) == {"distilled"}


def test_the_lora_applies_in_refine_too(folder: Path, models: LoadedModels, tmp_path: Path) -> None:
    plain = Segment(id="s", prompt="p")
    draft = _run(DraftStage(), _job(folder, plain), models, tmp_path / "draft")
    styled = Segment(id="s", prompt="p", loras=(LoraRef("style.safetensors", 1.0),))
    a = _frames(_run(RefineStage(), _job(folder, plain), models, tmp_path / "r0", {"draft": draft}))
    b = _frames(_run(RefineStage(), _job(folder, styled), models, tmp_path / "r1", {"draft": draft}))
    assert np.abs(a.astype(int) - b).mean() > 0.5


def test_an_audio_driven_draft_keeps_the_tracks_samples_and_its_video_follows_them(
        folder: Path, models: LoadedModels, tmp_path: Path) -> None:
    given = write_track(folder / "track.wav", 3.0)
    write_track(folder / "other.wav", 3.0, seed=8)
    own = _run(DraftStage(), _job(folder, Segment(id="s", prompt="p")), models, tmp_path / "own")
    driven = [_run(DraftStage(), _job(folder, Segment(id="s", prompt="p", audio=AudioTrack(name, start))),
                   models, tmp_path / f"{name}{start}")
              for name, start in (("track.wav", 0.0), ("track.wav", 0.5), ("other.wav", 0.0))]
    n = round(9 * 48_000 / FPS)
    assert driven[0].meta["audio_driven"] and driven[0].meta["sample_rate"] == 48_000
    np.testing.assert_array_equal(np.load(driven[0].file("audio.npy")), given[:, :n])  # sample-exact
    np.testing.assert_array_equal(np.load(driven[1].file("audio.npy")), given[:, 24_000:24_000 + n])
    frames = [_frames(a) for a in (own, *driven)]
    for i in range(len(frames)):  # the video follows the sound: each track (or span) its own frames
        for j in range(i + 1, len(frames)):
            # (random tiny weights: another span of the same noise moves the picture less than no track)
            assert np.abs(frames[i].astype(int) - frames[j]).mean() > (0.5 if i == 0 else 0.1), (i, j)
    chained = _run(DraftStage(), _job(folder, Segment(id="s", prompt="p", audio=AudioTrack("track.wav")),
                                      index=1, anchor=np.full((128, 224, 3), 90, np.uint8)),
                   models, tmp_path / "chained")
    wave = np.load(chained.file("audio.npy"))  # frame 0 repeats the previous shot: the track starts at frame 1
    lead = 48_000 // FPS
    assert not wave[:, :lead].any() and np.array_equal(wave[:, lead:], given[:, :n - lead])
    refined = _run(RefineStage(), _job(folder, Segment(id="s", prompt="p", audio=AudioTrack("track.wav"))),
                   models, tmp_path / "refined", {"draft": driven[0]})
    assert _frames(refined).shape[0] == 9


# ------------------------------------------------------------------ through render() and the CLI


def _render(board: Path, events: list | None = None) -> Path:
    from pipeline.render.runner import render

    return render(board, emit=(events.append if events is not None else lambda e: None))


def _board(folder: Path, segments: list[dict[str, Any]]) -> Path:
    path = folder / "board.toml"
    path.write_text(tiny_storyboard(segments, title="shots", fps=FPS, preset="tiny", enhance=False,
                                    output_size=[448, 256]))
    return path


@pytest.mark.slow
def test_removing_a_lora_brings_back_the_cached_original(tmp_path: Path) -> None:
    write_lora(tmp_path / "style.safetensors")
    shot = {"id": "a", "prompt": "a dog on the beach", "frames": 9}
    board = _board(tmp_path, [shot])
    original = decode_frames(_render(board))
    _board(tmp_path, [{**shot, "loras": [{"path": "style.safetensors", "strength": 1.0}]}])
    styled = decode_frames(_render(board))
    assert np.abs(original.astype(int) - styled).mean() > 1.0
    _board(tmp_path, [shot])
    events: list = []
    restored = decode_frames(_render(board, events))
    cached = {e.stage for e in events if isinstance(e, protocol.StageCached)}
    ran = {e.stage for e in events if isinstance(e, protocol.StageFinished) and e.segment}
    assert {"draft", "refine", "upscale", "encode"} <= cached and not ran
    assert np.array_equal(restored, original)


@pytest.mark.slow
def test_a_lora_that_does_not_fit_is_one_line_naming_the_file_before_any_stage(tmp_path: Path) -> None:
    bad = write_lora(tmp_path / "loras" / "other-model.safetensors", rename={"attn1.to_q": "attn_q"})
    board = _board(tmp_path, [{"id": "a", "prompt": "p", "frames": 9,
                               "loras": [{"path": "loras/other-model.safetensors", "strength": 0.8}]}])
    before = board.read_bytes()
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "render", str(board)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, check=False, env=checkout_env())
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert str(bad) in lines[0] and "segment a" in lines[0] and "Traceback" not in result.stderr
    assert board.read_bytes() == before
    assert not any(cache_keys(tmp_path).values())


def _film_audio(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    return np.concatenate(chunks, axis=1)


@pytest.mark.slow
def test_an_audio_driven_shots_film_carries_the_given_sound_from_its_first_frame(tmp_path: Path) -> None:
    given = write_track(tmp_path / "voice.wav", 4.0)
    board = _board(tmp_path, [{"id": "a", "prompt": "waves on a beach", "frames": 9},
                              {"id": "b", "prompt": "a man talking", "frames": 9, "audio": "voice.wav"}])
    final = _render(board)
    film = _film_audio(final)
    frames = len(decode_frames(final))
    assert frames == 9 + 8
    assert abs(film.shape[1] - frames * 48_000 / FPS) <= 48_000 / FPS  # length within one frame
    start, n = 9 * 48_000 // FPS, 8 * 48_000 // FPS  # shot b appears at film frame 9
    part = film[:, start:start + n]
    want = given[:, :n]
    lags = range(-256, 257)
    score = [float(np.dot(part[0, 1024 + lag:n - 1024 + lag], want[0, 1024:n - 1024])) for lag in lags]
    assert lags[int(np.argmax(score))] == 0  # the sound starts exactly where the shot does
    err = np.abs(part[:, 2048:-2048] - want[:, 2048:-2048]).mean() / np.abs(want).mean()
    assert err < 0.2  # the same sound, through AAC


def _draft_under(plan: StagePlan, seg: Segment, folder: Path, models: LoadedModels, out: Path) -> np.ndarray:
    out.mkdir(parents=True)
    ctx = StageContext(emit=lambda e: None, cancel=threading.Event(), models=models, plan=plan)
    DraftStage().run(ctx, _job(folder, seg), {}, out)
    return np.load(out / "frames.npy")


def test_a_lora_joins_a_transformer_already_under_the_block_streamer(folder: Path, tmp_path: Path) -> None:
    """The held transformer was placed (Sulphur's block streamer) before the shot's LoRA existed:
    the LoRA still applies, as on a resident model, and leaves with the shot."""
    styled = Segment(id="s", prompt="p", loras=(LoraRef("style.safetensors", 1.0),))
    plain = Segment(id="s", prompt="p")
    resident = _draft_under(StagePlan(name="cpu"), styled, folder, LoadedModels(), tmp_path / "resident")
    streamed_models = LoadedModels()
    plan = StagePlan(name="group_block", device="cpu", offload="group_block", dtype="float32",
                     options={"streamer": "sulphur"})
    before = _draft_under(plan, plain, folder, streamed_models, tmp_path / "before")
    streamed = _draft_under(plan, styled, folder, streamed_models, tmp_path / "streamed")
    after = _draft_under(plan, plain, folder, streamed_models, tmp_path / "after")
    assert np.abs(streamed.astype(int) - resident).mean() < 1.0
    assert np.abs(streamed.astype(int) - before).mean() > 1.0 and np.array_equal(after, before)


@pytest.mark.gpu
def test_a_lora_applies_under_every_offload_plan_on_cuda(folder: Path, tmp_path: Path) -> None:
    """Every rung of the memory ladder places the transformer before the shot's LoRA is loaded;
    the LoRA's layers must reach the GPU and give (nearly) the resident result, then leave."""
    import torch

    from tests.functional.test_draft_refine import GPU_PLANS

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    models = LoadedModels()
    styled = Segment(id="s", prompt="p", loras=(LoraRef("style.safetensors", 1.0),))
    plain = Segment(id="s", prompt="p")
    results = {}
    for i, (mode, options, tiling) in enumerate(GPU_PLANS):
        plan = StagePlan(name=mode, device="cuda", offload=mode, vae_tiling=tiling, dtype="bfloat16",
                         options=options)
        results[(mode, str(options))] = (_draft_under(plan, styled, folder, models, tmp_path / f"{i}-lora"),
                                         _draft_under(plan, plain, folder, models, tmp_path / f"{i}-plain"))
    base_lora, base_plain = next(iter(results.values()))
    assert np.abs(base_lora.astype(int) - base_plain).mean() > 1.0
    for key, (lora, plain_frames) in results.items():
        assert np.abs(lora.astype(int) - base_lora).mean() < 3.0, key
        assert np.abs(plain_frames.astype(int) - base_plain).mean() < 3.0, key


@pytest.mark.gpu
def test_an_audio_driven_draft_renders_under_every_offload_plan_on_cuda(folder: Path, tmp_path: Path) -> None:
    """The track is encoded by an audio VAE wherever the plan put it, and held fixed on the GPU."""
    import torch

    from tests.functional.test_draft_refine import GPU_PLANS

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    given = write_track(folder / "gpu-track.wav", 2.0)
    models = LoadedModels()
    seg = Segment(id="s", prompt="p", audio=AudioTrack("gpu-track.wav"))
    results = {}
    for i, (mode, options, tiling) in enumerate(GPU_PLANS):
        plan = StagePlan(name=mode, device="cuda", offload=mode, vae_tiling=tiling, dtype="bfloat16",
                         options=options)
        results[(mode, str(options))] = _draft_under(plan, seg, folder, models, tmp_path / str(i))
        wave = np.load(tmp_path / str(i) / "audio.npy")
        np.testing.assert_array_equal(wave, given[:, :wave.shape[1]])
    base = next(iter(results.values()))
    for key, frames in results.items():
        assert np.abs(frames.astype(int) - base).mean() < 3.0, key


def test_the_ray_engine_refuses_a_lora_that_does_not_fit_before_ray_starts(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")  # the GPU machine's bundle has no Ray; CI installs it

    from pipeline.render.engines.ray_engine import render_ray
    from pipeline.render.errors import RenderError

    write_lora(tmp_path / "bad.safetensors", rename={"ff.net.0.proj": "ff.proj"})
    board = _board(tmp_path, [{"id": "a", "prompt": "p", "frames": 9,
                               "loras": [{"path": "bad.safetensors"}]}])
    with pytest.raises(RenderError, match=r"^segment a: LoRA does not fit tiny: .*bad.safetensors: weights do not map"):
        render_ray(board)
    assert not ray.is_initialized()


def _audio_decoder(device: str) -> tuple[Any, Any]:
    """A pipe holding the tiny stack's audio VAE and vocoder (diffusers folders), and 2 s of latents."""
    import torch
    from diffusers import AutoencoderKLLTX2Audio

    from pipeline.models import published, tiny_ltx2

    root = tiny_ltx2.build_tiny() / tiny_ltx2.DIFFUSERS_DIR
    vae = AutoencoderKLLTX2Audio.from_pretrained(root / "audio_vae").to(device).eval()
    vocoder = published.vocoder_class(root / "vocoder").from_pretrained(root / "vocoder").to(device).eval()
    per_second = vae.config.sample_rate / vae.config.mel_hop_length / vae.temporal_compression_ratio
    shape = (1, vae.config.latent_channels, round(2 * per_second), vae.config.mel_bins // vae.mel_compression_ratio)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    pipe = type("Pipe", (), {"_execution_device": torch.device(device), "audio_vae": vae, "vocoder": vocoder})()
    return pipe, latents


def test_the_sound_is_decoded_with_deterministic_kernels_and_the_setting_restored() -> None:
    """The vocoder's transposed convolutions take cuDNN's deterministic algorithms (its atomics-based
    ones gave two waveforms for one mel on an H100), and the rest of the render keeps its setting."""
    import torch

    from pipeline.models.ltx2 import decode_audio

    pipe, latents = _audio_decoder("cpu")
    seen = []
    pipe.vocoder.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cudnn.deterministic))
    before = torch.backends.cudnn.deterministic
    wave = decode_audio(pipe, latents)
    assert seen == [True] and torch.backends.cudnn.deterministic == before
    assert wave.ndim == 2 and np.isfinite(wave).all() and np.abs(wave).max() > 0


@pytest.mark.gpu
def test_the_same_latents_give_the_same_sound_on_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from pipeline.models.ltx2 import decode_audio

    pipe, latents = _audio_decoder("cuda")
    first = decode_audio(pipe, latents)
    for _ in range(4):
        np.testing.assert_array_equal(decode_audio(pipe, latents), first)
