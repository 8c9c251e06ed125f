"""The user's LoRAs of a shot (``loras = [...]``): found, identified, checked, applied and removed.

A shot's LoRAs go into the held transformer (and the text connectors, for a file with a
``text_embedding_projection`` part) as PEFT adapters next to the preset's distilled LoRA,
are weighted with it through ``set_adapters``, and are deleted when the stage ends, so
the next shot sees the model as loaded. Their identity in cache keys is a content digest
(a renamed or touched file is the same LoRA; an edited one is not).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models import ltx2
from pipeline.models.published import WeightsMismatch
from pipeline.models.registry import ModelFile
from pipeline.project.files import file_digest

if TYPE_CHECKING:
    from pipeline.models.registry import Preset
    from pipeline.project.loras import LoraRef
    from pipeline.project.storyboard import Segment, Storyboard

# Deferred imports: safetensors, accelerate, diffusers, pipeline.memory.offload (torch) — cache keys
#   and the CLI read LoRA digests without them; they load when a LoRA is checked or applied


@dataclass(frozen=True)
class UserLora:
    """A shot's LoRA as this machine has it."""

    label: str               # as the storyboard names it
    path: Path | None        # None: not on this machine (a Hub file not pulled yet, or a missing file)
    digest: str              # sha256 of the file's bytes, "missing:<label>" without one
    strength: float
    hub: bool = False


def hub_file(ref: LoraRef) -> ModelFile:
    """A Hub LoRA as the downloader knows files (``sulphur models pull <storyboard>`` fetches it)."""
    return ModelFile(role=f"lora:{ref.label}", description=f"LoRA {ref.label}", repo=ref.repo, filename=ref.path)


def resolve(sb: Storyboard, seg: Segment) -> tuple[UserLora, ...]:
    """The segment's LoRAs: local ones relative to the storyboard's folder, Hub ones where pull put them."""
    out = []
    for ref in seg.loras:
        path = hub_file(ref).local_path() if ref.repo else sb.resolve(ref.path)
        if path is not None and not path.is_file():
            path = None
        out.append(UserLora(label=ref.label, path=path,
                            digest=file_digest(path) if path is not None else f"missing:{ref.label}",
                            strength=ref.strength, hub=bool(ref.repo)))
    return tuple(out)


def key_params(sb: Storyboard, seg: Segment) -> list[list[Any]]:
    """What a stage key holds of the shot's LoRAs: each file's content digest and strength, in order."""
    return [[u.digest, u.strength] for u in resolve(sb, seg)]




# --------------------------------------------------------------------------- checking


def check(preset: Preset, path: Path) -> None:
    """Raise :class:`~pipeline.models.published.WeightsMismatch` (one line naming ``path``) unless
    every tensor of the LoRA adapts a module of this preset's model with matching shapes.

    Runs before any stage: the model is built on the meta device from its config, so nothing loads."""

    shapes = _module_shapes(preset)
    if shapes is None:
        return  # built in memory (random weights): checked when loaded
    parts = read_parts(path)
    if not any(parts.values()):
        raise WeightsMismatch(path, ["lora_A/lora_B tensors"], [])
    wrong = []
    for part, sd in parts.items():
        for key, tensor in sd.items():
            module, _, kind = key.removeprefix(f"{part}.").partition(".lora_")
            shape = shapes[part].get(module)
            if shape is None or not _fits(kind, tuple(tensor.shape), shape):
                wrong.append(key)
    if wrong:
        raise WeightsMismatch(path, [], wrong)


class LoraUnreadable(ValueError):
    """A file named as a LoRA that safetensors cannot read; ``str()`` is one line naming it."""


def read_parts(path: Path) -> dict[str, dict[str, Any]]:
    """:func:`pipeline.models.ltx2.lora_parts`, with a file that is no safetensors at all refused in one line."""
    from safetensors import SafetensorError

    try:
        return ltx2.lora_parts(path)
    except (SafetensorError, OSError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise LoraUnreadable(f"{path}: not a safetensors LoRA ({first})") from None


def _fits(kind: str, tensor: tuple[int, ...], weight: tuple[int, ...]) -> bool:
    """lora_A is (rank, in), lora_B (out, rank), against the adapted Linear's (out, in)."""
    if len(tensor) != 2 or len(weight) != 2:
        return False
    if kind.startswith("A"):
        return tensor[1] == weight[1]
    return tensor[0] == weight[0]


def _module_shapes(preset: Preset) -> dict[str, dict[str, tuple[int, ...]]] | None:
    """Linear modules of the transformer and the connectors, name → weight shape, built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    if preset.extra.get("random_weights"):
        return None
    folder = ltx2.require(preset, "diffusers")
    config_dir = ltx2.file_path(preset, "transformer_config") or folder / "transformer"
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for part, cls, cfg in (("transformer", LTX2VideoTransformer3DModel, config_dir / "config.json"),
                           ("connectors", LTX2TextConnectors, folder / "connectors" / "config.json")):
        with init_empty_weights():
            model = cls.from_config(json.loads(cfg.read_text()))
        out[part] = {name: tuple(m.weight.shape) for name, m in model.named_modules()
                     if hasattr(m, "weight") and getattr(m.weight, "ndim", 0) == 2}
    return out


# --------------------------------------------------------------------------- applying


def adapter_name(n: int, lora: UserLora) -> str:
    return f"user{n}_{lora.digest[:12]}"


@contextmanager
def applied(pipe: Any, loras: tuple[UserLora, ...], base_strength: float, base_adapter: str = "distilled",
            device: str = "cpu") -> Iterator[None]:
    """The shot's LoRAs loaded next to the distilled one and weighted, for the ``with`` body only.

    The held model was placed (offload hooks, streamer) before these adapters existed: under the
    streamer no hook moves them, so their small A/B matrices go to ``device`` once and stay there
    while in use; a group-offloaded module (the connectors under a capped plan) takes them into its
    groups when the offloading is re-applied, and they move with their layers. On the way out
    (finished, cancelled or failed) they are deleted and the distilled LoRA is weighted alone
    again, so nothing of this shot stays in the held model."""

    modules = {"transformer": pipe.transformer, "connectors": pipe.connectors}
    loaded: list[tuple[str, float]] = []
    try:
        for n, lora in enumerate(loras):
            if lora.path is None:
                raise FileNotFoundError(f"{lora.label}: LoRA file not found")
            name, parts = adapter_name(n, lora), read_parts(lora.path)
            loaded.append((name, lora.strength))  # before loading: a part that fails leaves none behind
            for part, module in modules.items():
                with warnings.catch_warnings():
                    # PEFT warns when a model already has adapters: stacking them is the point here.
                    warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                    ltx2.load_lora(module, lora.path, name, part=part, parts=parts)
                _adapter_to(module, name, device)
        for module in modules.values():
            _regroup(module)
            _weigh(module, [(base_adapter, base_strength), *loaded])
        yield
    finally:
        for module in modules.values():
            mine = [n for n, _ in loaded if n in (getattr(module, "peft_config", None) or {})]
            if mine:
                module.delete_adapters(mine)  # re-applies group offloading: keep the host copies again
                _keep_host_copies(module)
        ltx2.set_lora_strength(pipe.transformer, base_strength, base_adapter, connectors=pipe.connectors)


def _regroup(module: Any) -> None:
    """Re-apply diffusers' group offloading over the new adapter layers, as diffusers does itself
    after a pipeline-level LoRA load (``delete_adapters`` does it on the way out): a group that
    streams from pinned memory knows only the parameters it was built with, and its next onload
    fails with a KeyError on the adapter's. Groups that kept one host copy keep it (without that,
    the rest of the render would copy the connectors back to the host after every use). No-op
    for a model without group offloading."""
    from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading

    _maybe_remove_and_reapply_group_offloading(module)
    _keep_host_copies(module)


def _keep_host_copies(module: Any) -> None:
    from pipeline.memory.offload import keep_host_copies_again

    keep_host_copies_again(module)


def _adapter_to(module: Any, name: str, device: str) -> None:
    """Move one adapter's lora_A / lora_B layers (rank × features: megabytes) to ``device``."""
    if device == "cpu":
        return
    for sub in module.modules():
        for attr in ("lora_A", "lora_B"):
            layers = getattr(sub, attr, None)
            if layers is not None and hasattr(layers, "keys") and name in layers:
                layers[name].to(device)


def _weigh(module: Any, adapters: list[tuple[str, float]]) -> None:
    """Activate the adapters this module has, at their strengths (a LoRA may adapt only one part)."""
    have = getattr(module, "peft_config", None) or {}
    names = [(n, w) for n, w in adapters if n in have]
    if names:
        module.set_adapters([n for n, _ in names], weights=[float(w) for _, w in names])
