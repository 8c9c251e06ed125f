"""Draft and refine stages end to end through the tiny LTX-2 stack (real diffusers pipelines, CPU)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import StagePlan
from pipeline.models.registry import get_preset
from pipeline.project.storyboard import Project, Segment, Storyboard
from pipeline.render.cache import Artifact
from pipeline.stages.base import Cancelled, SegmentJob, StageContext
from pipeline.stages.draft import DraftStage
from pipeline.stages.refine import RefineStage
from pipeline.wire.protocol import StepProgress

PROMPT = "a dog running on the beach at sunset, slow tracking shot"


@pytest.fixture(scope="module")
def models() -> LoadedModels:
    # One holder for the module, as the runner keeps one between segments.
    return LoadedModels()


def make_job(tmp: Path, *, seed: int = 0, frames: int = 9, anchor: np.ndarray | None = None,
             lora: float = 0.7, prompt: str = PROMPT, audio: bool = True) -> SegmentJob:
    preset = get_preset("tiny")
    seg = Segment(id="s1", prompt=prompt)
    board = Storyboard(path=tmp / "board.toml", project=Project(), segments=(seg,))
    digest = hashlib.sha256(anchor.tobytes()).hexdigest() if anchor is not None else ""
    return SegmentJob(storyboard=board, segment=seg, index=0, preset=preset, frames=frames, seed=seed, fps=24,
                      draft_size=preset.draft_size, refine_size=preset.refine_size, output_size=(1920, 1080),
                      steps=preset.steps, refine_sigmas=preset.refine_sigmas, lora_strength=lora, audio=audio,
                      prompt=prompt, anchor=anchor, anchor_digest=digest)


class Runner:
    """Runs a stage into a fresh folder like the runner does, collecting progress events."""

    def __init__(self, tmp: Path, models: LoadedModels) -> None:
        self.tmp, self.models, self.n = tmp, models, 0
        self.events: list[Any] = []
        self.plan = StagePlan(name="cpu")

    def __call__(self, stage: Any, job: SegmentJob, inputs: dict[str, Artifact] | None = None,
                 on_event: Callable[[Any, threading.Event], None] | None = None) -> Artifact:
        self.n += 1
        out = self.tmp / f"{stage.name}{self.n}"
        out.mkdir()
        cancel = threading.Event()

        def emit(ev: Any) -> None:
            self.events.append(ev)
            if on_event:
                on_event(ev, cancel)

        ctx = StageContext(emit=emit, cancel=cancel, models=self.models, plan=self.plan)
        meta = stage.run(ctx, job, inputs or {}, out)
        return Artifact(stage=stage.name, key=str(self.n), path=out, meta=meta)


@pytest.fixture
def run(tmp_path: Path, models: LoadedModels) -> Runner:
    return Runner(tmp_path, models)


def frames_of(a: Artifact) -> np.ndarray:
    return np.load(a.file("frames.npy"))


def latents_of(a: Artifact) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(a.file("latents.safetensors")))


def test_t2v_draft_writes_frames_latents_and_audio(run: Runner, tmp_path: Path) -> None:
    job = make_job(tmp_path, frames=17)
    art = run(DraftStage(), job)
    w, h = job.draft_size
    frames = frames_of(art)
    assert frames.shape == (17, h, w, 3) and frames.dtype == np.uint8
    assert frames.std() > 1.0  # not a blank clip
    audio = np.load(art.file("audio.npy"))
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[0] == 2
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    # LTX-2.3's vocoder (LTX2VocoderWithBWE) extends 16 kHz to 48 kHz, as the tiny twin does.
    assert art.meta == {"sample_rate": 48000, "frames": 17, "size": [w, h], "image_to_video": False}
    # Duration of the waveform ≈ the clip's (LTX-2's causal audio latents lose < 2 latent steps = 80 ms).
    assert abs(audio.shape[1] / art.meta["sample_rate"] - 17 / 24) < 0.08
    lat = latents_of(art)
    assert lat["video"].shape[:3] == (1, 8, 3) and lat["video"].shape[3:] == (h // 32, w // 32)
    assert lat["audio"].ndim == 4
    steps = [e for e in run.events if isinstance(e, StepProgress) and e.stage == "draft"]
    assert steps[-1].step == steps[-1].total == job.steps


def test_audio_off_writes_no_waveform(run: Runner, tmp_path: Path) -> None:
    art = run(DraftStage(), make_job(tmp_path, audio=False))
    assert not art.file("audio.npy").exists()
    assert "audio" in latents_of(art)


def test_same_seed_same_frames_other_seed_other_frames(run: Runner, tmp_path: Path) -> None:
    a = frames_of(run(DraftStage(), make_job(tmp_path, seed=3)))
    b = frames_of(run(DraftStage(), make_job(tmp_path, seed=3)))
    c = frames_of(run(DraftStage(), make_job(tmp_path, seed=4)))
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1.0


def test_lora_strength_changes_the_draft(run: Runner, tmp_path: Path) -> None:
    on = frames_of(run(DraftStage(), make_job(tmp_path, lora=0.7)))
    off = frames_of(run(DraftStage(), make_job(tmp_path, lora=0.0)))
    again = frames_of(run(DraftStage(), make_job(tmp_path, lora=0.7)))
    assert np.abs(on.astype(int) - off).mean() > 0.5
    assert np.array_equal(on, again)  # strength is set per run, not accumulated


def test_i2v_keeps_the_anchor_as_clean_first_latent(run: Runner, tmp_path: Path) -> None:
    # Random weights cannot reproduce the picture, but the conditioning is checkable: the
    # anchor's encoding is the first latent frame, untouched by the seed's noise, and a
    # different anchor gives a different first latent.
    rng = np.random.default_rng(0)
    anchor = np.zeros((128, 224, 3), np.uint8)
    anchor[:, :112] = 230
    other = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)  # other size: cropped to fit
    a = run(DraftStage(), make_job(tmp_path, anchor=anchor, seed=1))
    b = run(DraftStage(), make_job(tmp_path, anchor=anchor, seed=2))
    c = run(DraftStage(), make_job(tmp_path, anchor=other, seed=1))
    t = run(DraftStage(), make_job(tmp_path, seed=1))
    la, lb, lc, lt = (latents_of(x)["video"] for x in (a, b, c, t))
    np.testing.assert_array_equal(la[:, :, 0], lb[:, :, 0])
    assert np.abs(la[:, :, 1:] - lb[:, :, 1:]).mean() > 0.01
    assert np.abs(la[:, :, 0] - lc[:, :, 0]).mean() > 0.01
    assert np.abs(la[:, :, 0] - lt[:, :, 0]).mean() > 0.01
    assert frames_of(c).shape == frames_of(a).shape == (9, 128, 224, 3)


def test_refine_doubles_the_draft(run: Runner, tmp_path: Path) -> None:
    job = make_job(tmp_path, seed=5)
    draft = run(DraftStage(), job)
    refined = run(RefineStage(), job, {"draft": draft})
    w, h = job.refine_size
    frames = frames_of(refined)
    assert frames.shape == (9, h, w, 3) and frames.dtype == np.uint8
    assert refined.meta == {"frames": 9, "size": [w, h]}
    assert (w, h) == (2 * job.draft_size[0], 2 * job.draft_size[1])
    steps = [e.step for e in run.events if isinstance(e, StepProgress) and e.stage == "refine"]
    assert steps == [0, 1, 2, 3]  # sigmas 0.85, 0.725, 0.4219 → 0: three steps
    again = frames_of(run(RefineStage(), job, {"draft": draft}))
    assert np.array_equal(frames, again)


def test_refine_of_an_i2v_draft(run: Runner, tmp_path: Path) -> None:
    anchor = np.full((128, 224, 3), 180, np.uint8)
    job = make_job(tmp_path, anchor=anchor)
    refined = run(RefineStage(), job, {"draft": run(DraftStage(), job)})
    assert frames_of(refined).shape == (9, 256, 448, 3)


def test_cancel_stops_the_draft_mid_denoise(run: Runner, tmp_path: Path) -> None:
    def cancel_at_3(ev: Any, cancel: threading.Event) -> None:
        if isinstance(ev, StepProgress) and ev.step == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        run(DraftStage(), make_job(tmp_path), on_event=cancel_at_3)
    steps = [e.step for e in run.events if isinstance(e, StepProgress)]
    assert max(steps) == 3


def test_params_name_everything_that_changes_the_output(tmp_path: Path) -> None:
    base = DraftStage().params(make_job(tmp_path))
    anchor = np.zeros((8, 8, 3), np.uint8)
    for changed in (make_job(tmp_path, seed=9), make_job(tmp_path, frames=17), make_job(tmp_path, lora=0.2),
                    make_job(tmp_path, prompt="a cat"), make_job(tmp_path, anchor=anchor),
                    make_job(tmp_path, audio=False)):
        assert DraftStage().params(changed) != base
    assert base["model"].startswith("tiny:")
    r = RefineStage().params(make_job(tmp_path))
    # The runner looks refine entries up with a job lacking prompt/anchor: they must not change the key.
    assert RefineStage().params(make_job(tmp_path, prompt="other", anchor=anchor)) == r
    assert r["sigmas"] == [0.85, 0.725, 0.4219, 0.0] and r["size"] == [448, 256]


GPU_PLANS = [
    ("resident", {}, False),
    ("resident", {"cuda_graph": True}, False),  # steps 3.. replayed from a CUDA graph
    ("model", {}, False),
    ("group_block", {"use_stream": True}, False),
    ("group_block", {"use_stream": True, "low_cpu_mem_usage": True}, False),
    ("group_leaf", {"use_stream": True, "low_cpu_mem_usage": True}, False),
    ("group_block", {"use_stream": False}, True),
    ("sequential", {}, True),
    ("resident", {"text_encoder": "cpu"}, False),
    ("group_block", {"use_stream": True, "text_encoder": "disk"}, False),
    ("group_block", {"streamer": "sulphur"}, False),
    ("group_block", {"streamer": "sulphur", "resident_blocks": 1}, True),
    # after a different tag, so the transformer is placed again (the tag does not name "dequant")
    ("group_block", {"streamer": "sulphur", "dequant": "block"}, False),
]


@pytest.mark.gpu
def test_every_offload_plan_renders_the_same_clip_on_cuda(tmp_path: Path) -> None:
    """Each rung of the memory ladder must give (nearly) the resident result, with one holder
    of models across plans, as the runner keeps it while it falls back."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    models = LoadedModels()
    job = make_job(tmp_path, seed=11)
    results = {}
    graph_lines: list[str] = []
    for i, (mode, options, tiling) in enumerate(GPU_PLANS):
        plan = StagePlan(name=mode, device="cuda", offload=mode, vae_tiling=tiling, dtype="bfloat16",
                         options=options)
        outs = []
        for stage, inputs in ((DraftStage(), {}), (RefineStage(), None)):
            out = tmp_path / f"{i}-{stage.name}"
            out.mkdir()

            def emit(e: object) -> None:
                if "CUDA graph" in str(getattr(e, "message", "")):
                    graph_lines.append(e.message)

            ctx = StageContext(emit=emit, cancel=threading.Event(), models=models, plan=plan)
            art_inputs = inputs if inputs is not None else {"draft": outs[0]}
            meta = stage.run(ctx, job, art_inputs, out)
            outs.append(Artifact(stage=stage.name, key=str(i), path=out, meta=meta))
        results[(mode, str(options), tiling)] = (frames_of(outs[0]), frames_of(outs[1]))
    base_draft, base_refine = next(iter(results.values()))
    assert base_draft.shape == (9, 128, 224, 3) and base_refine.shape == (9, 256, 448, 3)
    for key, (draft, refine) in results.items():
        assert np.abs(draft.astype(int) - base_draft).mean() < 3.0, key
        assert np.abs(refine.astype(int) - base_refine).mean() < 3.0, key
    # the graphed plan recorded its steps and gave the eager steps' clip
    steps = job.steps
    assert graph_lines == [f"draft: CUDA graph: 1 eager, 1 recorded, {steps - 2} replayed steps",
                           f"refine: CUDA graph: 1 eager, 1 recorded, {len(job.refine_sigmas) - 3} replayed steps"]
    draft, refine = results[GPU_PLANS[1][0], str(GPU_PLANS[1][1]), GPU_PLANS[1][2]]
    assert np.abs(draft.astype(int) - base_draft).mean() < 0.5 and np.abs(refine.astype(int) - base_refine).mean() < 0.5


@pytest.mark.parametrize("offload", ["resident", "group_leaf"])
def test_a_refine_keeps_its_upsampler_for_the_next_segment(run: Runner, tmp_path: Path, models: LoadedModels,
                                                           offload: str) -> None:
    # the planner counts the upsampler among what a refine and the next draft hold (held_*_bytes):
    # loading it again for every segment cost the uncapped refine ~0.6 s before its first step
    # and the capped one ~2 s (loaded, pinned, evicted: chain_h200_2026-12-04_run5.json)
    run.plan = StagePlan(name=offload, device="cpu", offload=offload)
    job = make_job(tmp_path, seed=6)
    draft = run(DraftStage(), job)
    run(RefineStage(), job, {"draft": draft})
    key = f"{job.preset.name}:upsampler"
    assert key in models
    held = models.get(key, lambda: pytest.fail("the upsampler was loaded again"))
    run(RefineStage(), job, {"draft": draft})
    assert models.get(key, lambda: None) is held, "the next refine used the same upsampler"
