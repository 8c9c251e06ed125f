"""``sulphur models verify``: load every component of a preset from its files, render nothing.

Each file is reported as OK or with the one line that says what does not map (the strict
loaders of :mod:`pipeline.models.published`). Paths resolve as the render resolves them,
``SULPHUR_*`` overrides included (``ModelFile.local_path``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.memory.planner import StagePlan
from pipeline.models import ltx2
from pipeline.models.registry import Preset

# Deferred imports: pipeline.models, pipeline.models.esrgan — each file kind loads its own loader (and torch) only
#   when a file of that kind is verified

#: Component → the file role it is loaded from (LTX-2 family).
_LTX_PARTS = (("transformer", "transformer_gguf"), ("lora", "lora"), ("vae", "diffusers"),
              ("audio_vae", "diffusers"), ("vocoder", "diffusers"), ("connectors", "diffusers"),
              ("text_encoder", "diffusers"), ("upsampler", "upsampler"), ("upscaler", "upscaler"))


@dataclass(frozen=True)
class Check:
    component: str
    where: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def line(self) -> str:
        return f"{self.component:<13} {'OK' if self.ok else 'FAIL'}  {self.where if self.ok else self.error}"


def verify(preset: Preset) -> list[Check]:
    """Load each component once (on the CPU, float32) and report per file."""
    if preset.family != ltx2.FAMILY or preset.extra.get("random_weights"):
        raise ValueError(f"{preset.name}: verify covers LTX-2 presets with files")
    plan = StagePlan(name="cpu")
    out: list[Check] = []
    for component, role in _LTX_PARTS:
        try:
            path = ltx2.file_path(preset, role)
        except KeyError:
            continue
        if path is None:
            out.append(Check(component, "", f"missing: {preset.file(role).where()}"))
            continue
        out.append(_try(component, str(path), lambda c=component: _load(preset, c, plan)))
    return out


def _try(component: str, where: str, fn: Callable[[], Any]) -> Check:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - every failure becomes the file's one-line report
        msg = " ".join(str(exc).split()) or type(exc).__name__
        return Check(component, where, msg)
    return Check(component, where)


def _load(preset: Preset, component: str, plan: Any) -> None:
    if component == "transformer":
        from pipeline.models import published

        published.load_transformer(ltx2.require(preset, "transformer_gguf"),
                                   ltx2.require(preset, "transformer_config"), ltx2.torch_dtype(plan))
    elif component == "lora":
        ltx2.load_transformer(preset, plan)  # the transformer, then its LoRA, strictly
    elif component == "upscaler":
        from pipeline.models.esrgan import load_upscaler

        load_upscaler(ltx2.require(preset, "upscaler"), device="cpu", dtype=ltx2.torch_dtype(plan))
    else:
        ltx2._load_diffusers_component(preset, component, plan)
