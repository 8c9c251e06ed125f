"""Random inputs for one LTX-2 transformer step at a given video shape (shared by benches and tests)."""

from __future__ import annotations

from typing import Any

import torch


def ltx2_step_inputs(config: Any, size: tuple[int, int], frames: int, *, audio_tokens: int = 126,
                     text_tokens: int = 128, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.bfloat16, seed: int = 0, as_rendered: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``LTX2VideoTransformer3DModel.forward`` (batch 1, CFG=1).

    ``as_rendered``: what diffusers' LTX-2 image-to-video pipeline passes on a chained shot,
    so a step costs what a render's step costs: the text attention masks (the attention then
    takes a bias) and a timestep per video token, the first latent frame's (the anchor) at 0."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    w, h = size
    lf, lh, lw = (frames - 1) // 8 + 1, h // 32, w // 32

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    return {
        "hidden_states": rnd(1, lf * lh * lw, config.in_channels),
        "audio_hidden_states": rnd(1, audio_tokens, config.audio_in_channels),
        "encoder_hidden_states": rnd(1, text_tokens, config.caption_channels),
        "audio_encoder_hidden_states": rnd(1, text_tokens, config.caption_channels),
        "timestep": torch.full((1,), 500.0, device=device),
        "sigma": torch.full((1,), 0.5, device=device), "audio_sigma": torch.full((1,), 0.5, device=device),
        "num_frames": lf, "height": lh, "width": lw, "fps": 24.0, "audio_num_frames": audio_tokens,
        "use_cross_timestep": True, "return_dict": False,
    } | (_as_rendered(lf * lh * lw, lh * lw, text_tokens, device) if as_rendered else {})


def _as_rendered(video_tokens: int, frame_tokens: int, text_tokens: int,
                 device: str | torch.device) -> dict[str, Any]:
    timestep = torch.full((1, video_tokens), 500.0, device=device)
    timestep[:, :frame_tokens] = 0.0  # the conditioned first latent frame
    mask = torch.ones(1, text_tokens, device=device)
    return {"timestep": timestep, "audio_timestep": torch.full((1,), 500.0, device=device),
            "encoder_attention_mask": mask, "audio_encoder_attention_mask": mask}


def pipeline_coords(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The rotary coordinates diffusers' LTX-2 pipelines compute once per stage and pass to every
    step (``video_coords``, ``audio_coords``), for ``inputs`` from :func:`ltx2_step_inputs`."""
    device = inputs["hidden_states"].device
    return {"video_coords": model.rope.prepare_video_coords(1, inputs["num_frames"], inputs["height"],
                                                            inputs["width"], device, fps=inputs["fps"]),
            "audio_coords": model.audio_rope.prepare_audio_coords(1, inputs["audio_num_frames"], device)}
