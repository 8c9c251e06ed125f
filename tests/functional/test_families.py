"""Each I2V family's tiny twin renders a 2-segment storyboard through the real runner.

The twins are random-weight models built from configs and loaded back with
``from_pretrained`` / ``from_single_file`` (GGUF), so every family's real diffusers
pipeline, the CPU prompt encode + evict, the resize refine, ESRGAN and the encoder run.
Segment 2 always continues from segment 1's last draft frame (image-to-video).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipeline.wire import protocol
from tests.functional.conftest import checkout_env, tiny_storyboard

ROOT = Path(__file__).resolve().parents[2]

# preset → can it start from text alone (segment 1 without an anchor)?
TINY = {
    "tiny-wan-ti2v": True,
    "tiny-wan-i2v-a14b": False,
    "tiny-svd": False,
    "tiny-ltxv": True,
    "tiny-cogvideox": False,
}
REAL = ("wan22-ti2v-5b", "wan22-i2v-a14b-gguf", "svd-xt", "ltxv-0.9", "cogvideox-5b-i2v")
OUTPUT = (128, 64)


def _storyboard(folder: Path, preset: str, text_start: bool, enhance: bool) -> Path:
    first = dict(id="dig", prompt="an excavator digging dirt in the forest", frames=5)
    if not text_start:
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:32, 0:64]
        start = np.stack([x * 4, y * 8, 128 + rng.integers(0, 40, (32, 64))], -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(start).save(folder / "start.png")
        first["anchor"] = {"image": "start.png"}
    path = folder / "story.toml"
    path.write_text(tiny_storyboard([first, dict(id="more", prompt="the excavator keeps digging slowly", frames=5)],
                                    preset=preset, fps=8, output_size=list(OUTPUT), enhance=enhance))
    return path


@pytest.mark.parametrize("preset", list(TINY))
def test_tiny_twin_renders_a_chained_two_segment_film(preset: str, tmp_path: Path) -> None:
    from pipeline.memory.loaded import LoadedModels
    from pipeline.models.registry import get_preset
    from pipeline.project.storyboard import load
    from pipeline.render.runner import render

    text_start = TINY[preset]
    story = _storyboard(tmp_path, preset, text_start, enhance=preset == "tiny-wan-ti2v")
    events: list[protocol.Event] = []
    final = render(story, emit=events.append, models=LoadedModels())

    assert final == tmp_path / "renders" / "story" / "final.mp4" and final.is_file()
    errors = [e for e in events if isinstance(e, protocol.ErrorEvent)]
    assert not errors, errors
    p = get_preset(preset)
    seg_frames = [e.frames for e in events if isinstance(e, protocol.SegmentDone)]
    assert seg_frames == [p.round_frames(5)] * 2

    # The film: both segments, the chained seam frame shown once, at the storyboard's size and fps.
    with av.open(str(final)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == OUTPUT
        assert v.average_rate == 8
        audio = [s for s in c.streams.audio]
        n = sum(1 for _ in c.decode(video=0))
    assert n == sum(seg_frames) - 1
    if audio:  # these models make no sound: any audio track is silence
        with av.open(str(final)) as c:
            assert all(np.abs(f.to_ndarray()).max() < 1e-4 for f in c.decode(audio=0))

    # The drafts: video only at the draft size; segment 2 is image-to-video from segment 1's last frame.
    entries = sorted(m.parent for m in (tmp_path / ".sulphur" / "cache" / "draft").glob("*/*/meta.json"))
    assert len(entries) == 2
    for entry in entries:
        frames = np.load(entry / "frames.npy")
        assert frames.dtype == np.uint8 and frames.shape == (p.round_frames(5), p.draft_size[1], p.draft_size[0], 3)
        assert not (entry / "audio.npy").exists()
    anchored = [e for e in entries if (e / "anchor.npy").exists()]
    assert len(anchored) == (1 if text_start else 2)
    assert any(np.array_equal(np.load(a / "anchor.npy"), np.load(b / "frames.npy")[-1])
               for a in anchored for b in entries if a != b), "segment 2 is not anchored on segment 1's last frame"
    assert load(story).segments[1].anchor.kind == "previous"


def test_a14b_twin_loads_both_experts_from_gguf() -> None:
    import torch
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from pipeline.models import wan

    pipe = wan.FAMILY.load_pipeline(wan.TINY_A14B, "i2v", torch.float32)
    for expert in (pipe.transformer, pipe.transformer_2):
        assert isinstance(expert.blocks[0].attn1.to_q.weight, GGUFParameter)
    assert not torch.equal(pipe.transformer.proj_out.weight, pipe.transformer_2.proj_out.weight)
    # Two tiny steps put the first timestep above the expert boundary and the second below it.
    pipe.scheduler.set_timesteps(wan.TINY_A14B.steps)
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    assert pipe.scheduler.timesteps[0] >= boundary > pipe.scheduler.timesteps[-1]


def test_image_only_preset_without_an_anchor_fails_clearly(tmp_path: Path) -> None:
    from pipeline.render.runner import RenderError, render

    story = _storyboard(tmp_path, "tiny-svd", text_start=True, enhance=False)
    with pytest.raises(RenderError) as info:
        render(story)
    assert "anchor" in info.value.message and info.value.segment == "dig"


def test_models_lists_real_presets_with_missing_files(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SULPHUR_")}
    env["SULPHUR_HOME"] = str(tmp_path / "empty-home")
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "models"], cwd=ROOT, env=checkout_env(env),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    blocks = {b.split()[0]: b for b in result.stdout.split("\n\n") if b.strip()}
    for name in REAL:
        assert name in blocks, f"{name} not listed"
        assert "MISSING" in blocks[name]
        assert "put it at" in blocks[name] or f"sulphur models pull {name}" in blocks[name]
    assert "ignored" in blocks["svd-xt"]  # SVD says it takes no prompt
    for name in TINY:  # built on first use, so never a download the user has to make
        assert name in blocks and "built in" in blocks[name]
