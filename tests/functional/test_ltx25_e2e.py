"""``ltx25-distilled`` end to end on the tiny 2.5 twin: the real preset, pointed at the twin's files by its
``SULPHUR_LTX25_*`` paths, renders one segment (draft + refine, CPU) through the same loaders and stages
real files go through; ``sulphur models verify ltx25-distilled`` reports every file OK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.models import tiny_ltx25
from pipeline.models.registry import get_preset
from pipeline.project.storyboard import Project, Segment, Storyboard
from pipeline.stages.base import SegmentJob
from pipeline.stages.draft import DraftStage
from pipeline.stages.refine import RefineStage
from tests.functional.conftest import checkout_env
from tests.functional.test_draft_refine import Runner

#: Lightricks' distilled arrays (ltx-pipelines constants), restated: the code under test must hand them over.
DISTILLED = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875]
STAGE_2 = [0.909375, 0.725, 0.421875]


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ltx25.write_twin(tmp_path_factory.mktemp("ltx25"))



def _job(tmp: Path, anchor: np.ndarray | None = None) -> SegmentJob:
    preset = get_preset("ltx25-distilled")
    seg = Segment(id="s1", prompt="a dog running on the beach at sunset")
    board = Storyboard(path=tmp / "board.toml", project=Project(), segments=(seg,))
    # The preset's sizes are 576x320 / 1152x640; the twin renders the smallest /64 ones in seconds.
    return SegmentJob(storyboard=board, segment=seg, index=0, preset=preset, frames=9, seed=0, fps=24,
                      draft_size=(128, 64), refine_size=(256, 128), output_size=(256, 128), steps=preset.steps,
                      refine_sigmas=preset.refine_sigmas, lora_strength=preset.lora_strength, audio=True,
                      prompt=seg.prompt, anchor=anchor, anchor_digest="a" if anchor is not None else "")


def test_one_segment_renders_with_the_published_sigmas_and_audio(twin: Path, tmp_path: Path, seen: list[Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in tiny_ltx25.overrides(twin).items():
        monkeypatch.setenv(key, value)
    models = LoadedModels()
    run = Runner(tmp_path, models)
    job = _job(tmp_path)
    draft = run(DraftStage(), job)
    _assert_ran(seen, DISTILLED)
    frames = np.load(draft.file("frames.npy"))
    assert frames.shape == (9, 64, 128, 3) and frames.std() > 1.0
    audio = np.load(draft.file("audio.npy"))
    assert draft.meta["sample_rate"] == 48000  # LTX2VocoderWithBWE
    assert np.isfinite(audio).all() and float(np.sqrt(np.mean(audio ** 2))) > 1e-3
    transformer = models.get("ltx25-distilled:transformer", lambda: None)
    assert transformer is not None and not getattr(transformer, "peft_config", None)  # no LoRA on the distilled DiT
    assert transformer.config.ff_bias is False and transformer.keyframes_abs_pos_embedding.shape == (1, 32)

    seen.clear()
    refined = run(RefineStage(), job, {"draft": draft})
    _assert_ran(seen, STAGE_2)
    assert np.load(refined.file("frames.npy")).shape == (9, 128, 256, 3)


def _assert_ran(seen: list[tuple[list[float], list[float]]], want: list[float]) -> None:
    """Video and audio schedulers both got exactly ``want`` and stepped through it, then 0 (in float32)."""
    assert len(seen) == 2
    for passed, used in seen:
        assert passed == want
        assert used == pytest.approx([*want, 0.0], abs=1e-6)


def test_image_to_video_recompresses_the_anchor_at_crf_18(twin: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers picks CRF 18 for LTX-2.5 from the text encoder's model_type; Sulphur's pipelines hold none,
    so the preset says it, and the anchor reaches the pipeline re-compressed at 18, not 2.3's 33."""
    from diffusers.pipelines.ltx2 import pipeline_ltx2_image2video as i2v

    for key, value in tiny_ltx25.overrides(twin, gguf=False).items():  # the safetensors transformer this time
        monkeypatch.setenv(key, value)
    crfs: list[int] = []
    real = i2v.apply_image_conditioning_crf
    monkeypatch.setattr(i2v, "apply_image_conditioning_crf", lambda image, crf: crfs.append(crf) or real(image, crf))
    anchor = (np.random.default_rng(0).random((64, 128, 3)) * 255).astype(np.uint8)
    art = Runner(tmp_path, LoadedModels())(DraftStage(), _job(tmp_path, anchor))
    assert crfs == [18] and art.meta["image_to_video"] is True


def test_models_verify_reports_every_file_ok(twin: Path, tmp_path: Path) -> None:
    env = checkout_env(SULPHUR_HOME=str(tmp_path / "home"), **tiny_ltx25.overrides(twin))
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "verify", "ltx25-distilled"], env=env,
                            capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for comp in ("transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "upsampler",
                 "upscaler", "enhancer"):
        row = [line for line in lines if line.split()[:2] == [comp, "OK"]]
        assert row and str(twin) in row[0], (comp, result.stdout)
    assert not any(line.startswith("lora") for line in lines)  # the preset has none
