"""Test inputs for shot LoRAs and given sound, written as users get them.

A LoRA in the layout LTX-2 LoRAs are published in (safetensors, ``diffusion_model.<module>.lora_A/B.weight``,
Lightricks' module names), sized from the tiny transformer's own config; a sound track as a
16-bit PCM WAV written with the stdlib ``wave`` module.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

#: Modules of every block the test LoRA adapts (the distilled twin adapts attn1 only).
TARGETS = ("attn1.to_q", "attn1.to_v", "ff.net.0.proj")


def write_lora(path: Path, *, seed: int = 11, scale: float = 0.5, targets: tuple[str, ...] = TARGETS,
               rename: dict[str, str] | None = None) -> Path:
    """A rank-4 LoRA for the tiny LTX-2 transformer; ``rename`` maps module names to wrong ones."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel
    from safetensors.torch import save_file

    from pipeline.models import tiny_ltx2

    root = tiny_ltx2.build_tiny()
    config = json.loads((root / tiny_ltx2.GGUF_CONFIG_DIR / "config.json").read_text())
    with init_empty_weights():
        model = LTX2VideoTransformer3DModel.from_config(config)
    gen, tensors = torch.Generator().manual_seed(seed), {}
    for i in range(config["num_layers"]):
        for target in targets:
            out_f, in_f = model.get_submodule(f"transformer_blocks.{i}.{target}").weight.shape
            name = (rename or {}).get(target, target)
            key = f"diffusion_model.transformer_blocks.{i}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(4, in_f, generator=gen) * scale
            tensors[f"{key}.lora_B.weight"] = torch.randn(out_f, 4, generator=gen) * scale
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_track(path: Path, seconds: float, *, rate: int = 48_000, seed: int = 3, channels: int = 2) -> np.ndarray:
    """A 16-bit WAV (stereo, or mono) of band-limited noise bursts (a sharp correlation peak); returns
    the samples as float32 (channels, n), exactly as a decoder reads them (int16 / 32768)."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((2, n)).cumsum(axis=1)
    noise -= np.convolve(noise[0], np.ones(64) / 64, mode="same")[None, :]
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(n) / rate)
    signal = (noise / (np.abs(noise).max() + 1e-9) * 0.6 * envelope)[:channels]
    pcm = np.round(signal * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return pcm.astype(np.float32) / 32768.0
