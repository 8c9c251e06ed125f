"""Real-ESRGAN x2plus through spandrel: the final ×2 upscale before the resize to output size.

``RealESRGAN_x2plus.pth`` is a ``{"params_ema": state_dict}`` of an RRDBNet in the new
key layout whose trunk runs after a 2× pixel-unshuffle (12 input channels, two ×2
up-convolutions, net ×2). spandrel recognises that layout from the state dict alone.
:func:`build_tiny_x2plus` writes a file of the same format and layout, so the tiny preset
loads through the same code and spandrel detection path as the real weights.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from spandrel import ImageModelDescriptor

# Deferred imports: torch, spandrel, safetensors — the upscaler's file checks run without them; they load with the
#   model

#: Bump when :func:`build_tiny_x2plus` writes a different file (part of the upscale cache key).
TINY_X2PLUS_VERSION = 1


class UpscalerError(ValueError):
    """The upscaler file is not a ×2 image super-resolution model."""


def build_tiny_x2plus(path: Path, *, nf: int = 16, nb: int = 1) -> Path:
    """Write tiny RRDBNet x2plus weights (``params_ema``, new key names) as a ``.pth``.

    spandrel fixes the dense blocks' growth channels at 32, so only ``nf``/``nb`` shrink.
    The weights are not pure noise: the first conv averages each colour's 2×2 unshuffled
    sub-pixels, the up-convs smooth after each nearest ×2, and the RRDB trunk adds a small
    random residual. The result is a soft ×2 of the input, so tests can check what a user
    would (orientation, colour order, value range) rather than only shapes.
    """
    import torch

    if nf < 3:
        raise ValueError("nf must hold at least the 3 colour channels")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261127)
    gc = 32

    def noise(*shape: int, std: float) -> torch.Tensor:
        return torch.from_numpy((rng.standard_normal(shape) * std).astype(np.float32))

    def passthrough(out_c: int, in_c: int, kernel: np.ndarray) -> torch.Tensor:
        # Channel c → c through ``kernel``; other channels start from faint noise.
        w = noise(out_c, in_c, 3, 3, std=1e-3)
        for c in range(min(3, out_c, in_c)):
            w[c, c] = torch.from_numpy(kernel)
        return w

    delta = np.zeros((3, 3), np.float32)
    delta[1, 1] = 1.0
    binomial = np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32) / 16.0

    sd: dict[str, torch.Tensor] = {}
    # pixel_unshuffle orders channels colour-major: c*4 + (dy*2 + dx).
    first = noise(nf, 12, 3, 3, std=1e-3)
    for c in range(3):
        first[c, c * 4:(c + 1) * 4] = 0.0
        first[c, c * 4:(c + 1) * 4, 1, 1] = 0.25
    sd["conv_first.weight"], sd["conv_first.bias"] = first, torch.zeros(nf)
    for b in range(nb):
        for r in (1, 2, 3):
            for k in range(1, 6):
                cin = nf + (k - 1) * gc
                cout = nf if k == 5 else gc
                sd[f"body.{b}.rdb{r}.conv{k}.weight"] = noise(cout, cin, 3, 3, std=(2.0 / (9 * cin)) ** 0.5)
                sd[f"body.{b}.rdb{r}.conv{k}.bias"] = torch.zeros(cout)
    # The trunk's output is scaled down so it perturbs, not replaces, the features.
    sd["conv_body.weight"], sd["conv_body.bias"] = noise(nf, nf, 3, 3, std=2e-3), torch.zeros(nf)
    for name, kernel in (("conv_up1", binomial), ("conv_up2", binomial), ("conv_hr", delta)):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = passthrough(nf, nf, kernel), torch.zeros(nf)
    sd["conv_last.weight"], sd["conv_last.bias"] = passthrough(3, nf, delta), torch.zeros(3)

    # Serialised in memory first: torch.save names the zip's folder after the file it
    # writes, so saving straight to a temp name would make every build differ.
    buf = io.BytesIO()
    torch.save({"params_ema": sd}, buf)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_upscaler(path: Path, *, device: str | torch.device, dtype: torch.dtype) -> ImageModelDescriptor:
    """Load an ×2 super-resolution model with spandrel, in eval mode on ``device``/``dtype``.

    The file is read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only, no code from the file runs), then spandrel detects the architecture from keys.
    """
    import torch
    from spandrel import ImageModelDescriptor, ModelLoader, canonicalize_state_dict

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = ModelLoader().load_from_state_dict(canonicalize_state_dict(state))
    if not isinstance(model, ImageModelDescriptor):
        raise UpscalerError(f"{path.name}: {model.architecture.name} is not an image-to-image model")
    if model.scale != 2:
        raise UpscalerError(f"{path.name}: {model.architecture.name} upscales ×{model.scale}; "
                            "the upscale stage needs a ×2 model (e.g. RealESRGAN_x2plus.pth)")
    if dtype == torch.float16 and not model.supports_half:
        dtype = torch.float32
    elif dtype == torch.bfloat16 and not model.supports_bfloat16:
        dtype = torch.float32
    model.to(device=torch.device(device), dtype=dtype)
    return model.eval()
