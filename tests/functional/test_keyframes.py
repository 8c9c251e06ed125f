"""Keyframes through the real LTX-2 condition pipeline on the tiny twin (CPU).

Random weights cannot paint a picture: the tiny VAE decodes the still's own encoding to
texture as far from the still (mean abs diff ~42-66 of 255, measured) as any other frame,
so "closer to the still" is measured where the twin can show it: in the draft's latents
(the latent frame a keyframe lands on is the VAE's encoding of the still), and in the
decoded draft against what the VAE makes of the still (a one-frame shot, see below).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import StagePlan
from pipeline.project.keyframes import Keyframe
from pipeline.stages.base import SegmentJob
from pipeline.stages.draft import DraftStage
from tests.functional.test_draft_refine import Runner, frames_of, latents_of, make_job


@pytest.fixture(scope="module")
def models() -> LoadedModels:
    return LoadedModels()


@pytest.fixture
def run(tmp_path: Path, models: LoadedModels) -> Runner:
    return Runner(tmp_path, models)


def _still(tmp: Path, name: str, size: tuple[int, int], seed: int) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    still = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 40)], -1).astype(np.uint8)
    still[rng.integers(0, h // 2):, rng.integers(0, w // 2):] = rng.integers(0, 255, 3, dtype=np.uint8)
    Image.fromarray(still).save(tmp / name)
    return still


def _with(job: SegmentJob, *keyframes: Keyframe) -> SegmentJob:
    return replace(job, segment=replace(job.segment, keyframes=keyframes))


def _still_latent(models: LoadedModels, job: SegmentJob, still: np.ndarray) -> np.ndarray:
    """The still's latent as the condition pipeline makes it: H.264 re-compressed at LTX-2.3's
    CRF 33, encoded by the tiny VAE (the mode; the draft stores latents denormalized)."""
    import torch
    from diffusers.pipelines.ltx2.utils import DEFAULT_IMAGE_CRF, apply_image_conditioning_crf

    from pipeline.models import ltx2

    vae = ltx2.component(models, job.preset, "vae", StagePlan(name="cpu"))
    pixels = torch.from_numpy(apply_image_conditioning_crf(still, DEFAULT_IMAGE_CRF)).float()
    pixels = (pixels / 127.5 - 1.0).permute(2, 0, 1)[None, :, None]
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.mode().float().numpy()


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_a_first_frame_keyframe_lands_on_the_still(run: Runner, models: LoadedModels, tmp_path: Path) -> None:
    job = make_job(tmp_path, frames=17, seed=1)
    target = _still_latent(models, job, _still(tmp_path, "still.png", job.draft_size, 0))[:, :, 0]
    without = latents_of(run(DraftStage(), job))["video"][:, :, 0]
    keyed = run(DraftStage(), _with(job, Keyframe(0, "still.png")))
    with_kf = latents_of(keyed)["video"][:, :, 0]
    near, far = _mad(with_kf, target), _mad(without, target)
    print(f"latent frame 0 to the still's encoding: {near:.5f} with the keyframe, {far:.3f} without")
    assert near < 1e-3 < far
    assert keyed.meta["image_to_video"] is True  # refine keeps that first latent clean


def test_a_keyframe_shows_in_the_decoded_draft(run: Runner, models: LoadedModels, tmp_path: Path) -> None:
    """The draft's decoded frame (frames.npy, what the user sees) on a frame-0 keyframe is the
    VAE's round trip of the still, decode(encode(still)) through the draft's own decode path;
    without the keyframe it is not.

    Why the round trip is the yardstick: a random-weight VAE's round trip is itself ~66 of 255
    from the still, about as far as any decoded frame, so "closer to the still" cannot show in
    pixels; what the keyframe can and must deliver is the VAE's picture of the still. Why one
    frame: the tiny VAE's decoder is non-causal and, untrained, mixes every latent frame into
    every pixel frame (measured on 17 frames: swapping latent 0 moves pixel frame 16 by 25/255,
    latent 2 moves pixel frame 0 by 31/255), so in a longer shot the model's other latents blur
    frame 0 (42.1 with the keyframe vs 42.3 without, to the round trip). A one-frame shot is
    latent 0 alone, the latent a keyframe replaces. An end keyframe cannot be measured so: past
    frame 0 it is guide tokens only a trained model follows (frame -1 of 17: 42.8 vs 41.6 to the
    round trip, no closer); in a one-frame shot it is frame 0, this same path.
    """
    import torch

    from pipeline.models import ltx2

    job = make_job(tmp_path, frames=1, seed=1)
    still = _still(tmp_path, "still.png", job.draft_size, 0)
    keyed = frames_of(run(DraftStage(), _with(job, Keyframe(0, "still.png"))))[0]
    without = frames_of(run(DraftStage(), job))[0]
    pipe = ltx2.assemble(models, job.preset, StagePlan(name="cpu"), image_to_video=True, conditions=True)
    round_trip = ltx2.decode_video(pipe, torch.from_numpy(_still_latent(models, job, still)),
                                   torch.Generator(device="cpu").manual_seed(job.seed))[0]  # the draft's timestep 0
    near, far = _mad(keyed, round_trip), _mad(without, round_trip)
    to_still = f"to the still itself: {_mad(keyed, still):.2f} with, {_mad(without, still):.2f} without"
    print(f"decoded frame 0 to the round trip: {near:.3f} with the keyframe, {far:.2f} without; {to_still}")
    assert near < 0.5 and far > 20.0, f"round trip {near:.3f} with vs {far:.2f} without; {to_still}"

def test_an_end_keyframe_reaches_the_model_and_the_key(run: Runner, tmp_path: Path) -> None:
    # Past frame 0 the library appends the still as guide tokens (keyframe interpolation): a
    # trained model steers toward it; random weights only show that it was seen. So: another
    # still gives another shot, the same still the same shot, and the draft key names the still.
    job = make_job(tmp_path, frames=17, seed=1)
    _still(tmp_path, "end.png", job.draft_size, 1)
    _still(tmp_path, "other.png", job.draft_size, 2)
    a = latents_of(run(DraftStage(), _with(job, Keyframe(-1, "end.png"))))["video"]
    again = latents_of(run(DraftStage(), _with(job, Keyframe(-1, "end.png"))))["video"]
    other = latents_of(run(DraftStage(), _with(job, Keyframe(-1, "other.png"))))["video"]
    assert np.array_equal(a, again)
    assert np.abs(a - other).mean() > 1e-4
    params = DraftStage().params(_with(job, Keyframe(-1, "end.png")))
    assert params["keyframes"][0]["frame"] == 16
    assert DraftStage().params(_with(job, Keyframe(-1, "other.png"))) != params
    assert "keyframes" not in DraftStage().params(job)  # shots without keyframes keep their keys


def test_an_end_keyframe_guides_the_last_frame_not_its_latents_first(run: Runner, models: LoadedModels,
                                                                     tmp_path: Path) -> None:
    # diffusers would place a guide at its latent's first frame (9 of 0..16); Lightricks' reference,
    # and Sulphur, at the keyframe's own frame: the guide tokens' time coordinates start at 16 / fps.
    from pipeline.models import ltx2

    job = make_job(tmp_path, frames=17, seed=1)
    _still(tmp_path, "end.png", job.draft_size, 1)
    transformer = ltx2.component(models, job.preset, "transformer", StagePlan(name="cpu"))
    guide_tokens = (job.draft_size[0] // 32) * (job.draft_size[1] // 32)
    starts: list[float] = []

    def look(_module: object, _args: object, kwargs: dict) -> None:
        starts.append(float(kwargs["video_coords"][0, 0, -guide_tokens:, 0].min()))

    handle = transformer.register_forward_pre_hook(look, with_kwargs=True)
    try:
        run(DraftStage(), _with(job, Keyframe(-1, "end.png")))
    finally:
        handle.remove()
    assert starts and all(abs(s - 16 / job.fps) < 1e-6 for s in starts), starts


def test_the_anchor_and_keyframes_combine(run: Runner, models: LoadedModels, tmp_path: Path) -> None:
    # A chained shot with an end keyframe: the anchor still owns frame 0, the keyframe is seen.
    anchor = _still(tmp_path, "anchor.png", (224, 128), 3)
    job = make_job(tmp_path, frames=17, seed=2, anchor=anchor)
    _still(tmp_path, "end.png", job.draft_size, 4)
    both = run(DraftStage(), _with(job, Keyframe(-1, "end.png")))
    lat = latents_of(both)["video"]
    assert _mad(lat[:, :, 0], _still_latent(models, job, anchor)[:, :, 0]) < 1e-3
    alone = latents_of(run(DraftStage(), _with(make_job(tmp_path, frames=17, seed=2), Keyframe(-1, "end.png"))))
    assert _mad(alone["video"][:, :, 0], lat[:, :, 0]) > 1e-2  # without the anchor frame 0 is free
    assert both.meta["image_to_video"] is True
