"""``sulphur models verify``: load every component of a preset from its files, render nothing.

Each file is reported as OK or with the one line that says what does not map (the strict
loaders of :mod:`pipeline.models.published`; llama.cpp for the enhancer GGUF, the GGUF reader for
its vision projector). Paths resolve as the render resolves them, ``SULPHUR_*`` overrides included
(``ModelFile.local_path``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.memory.planner import StagePlan
from pipeline.models import ltx2
from pipeline.models.registry import Preset
from pipeline.project.files import describe_os_error

# Deferred imports: pipeline.models, pipeline.models.esrgan, pipeline.models.enhancer, llama_cpp, gguf — each file kind loads its own
#   loader (and torch) only when a file of that kind is verified

#: Component → the file role it is loaded from (LTX-2 family).
_LTX_PARTS = (("transformer", "transformer_gguf"), ("lora", "lora"), ("vae", "diffusers"),
              ("audio_vae", "diffusers"), ("vocoder", "diffusers"), ("connectors", "diffusers"),
              ("text_encoder", "diffusers"), ("upsampler", "upsampler"), ("upscaler", "upscaler"),
              ("enhancer", "enhancer"), ("enhancer_mmproj", "enhancer_mmproj"))


@dataclass(frozen=True)
class Check:
    component: str
    where: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def line(self) -> str:
        if self.ok:
            return f"{self.component:<15} OK  {self.where}"
        named = self.error if not self.where or self.where in self.error else f"{self.where}: {self.error}"
        return f"{self.component:<15} FAIL  {named}"


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
        why = preset.file(role).unreadable(path)
        if why:  # a FIFO set through $SULPHUR_…: loading it waited forever
            out.append(Check(component, str(path), why))
            continue
        out.append(_try(component, str(path), lambda c=component, p=path: _load(preset, c, plan, p)))
    return out


def _try(component: str, where: str, fn: Callable[[], Any]) -> Check:
    try:
        fn()
    except OSError as exc:  # "[Errno 21] Is a directory: '/x'" → "/x: is a directory"
        return Check(component, where, " ".join(describe_os_error(exc.filename or where, exc).split()))
    except Exception as exc:  # noqa: BLE001 - every failure becomes the file's one-line report
        msg = " ".join(str(exc).split()) or type(exc).__name__
        return Check(component, where, msg)
    return Check(component, where)


def _load(preset: Preset, component: str, plan: Any, path: Path) -> None:
    if component == "enhancer":
        check_enhancer(path)
    elif component == "enhancer_mmproj":
        check_mmproj(path)
    elif component == "transformer":
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


def check_enhancer(path: Path) -> None:
    """The enhancer GGUF as llama.cpp loads it, vocabulary only: that reads the header, knows the
    architecture and checks every tensor's bytes lie inside the file, without reading gigabytes."""
    try:
        import llama_cpp

        from pipeline.models.enhancer import quiet_llama_logs
    except ImportError:
        raise ValueError("llama-cpp-python is not installed here: the enhancer cannot be loaded") from None
    quiet_llama_logs(llama_cpp)
    try:
        llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError) as exc:
        # llama.cpp says only "Failed to load model"; the GGUF reader says why when it can.
        raise ValueError(f"llama.cpp cannot load it: {_gguf_problem(path) or exc}") from None


def check_mmproj(path: Path) -> None:
    """A llama.cpp vision projector: a whole GGUF file of architecture ``clip``."""
    reader, problem = _gguf_read(path)
    if problem:
        raise ValueError(problem)
    field = reader.fields.get("general.architecture")
    arch = str(field.contents()) if field is not None else ""
    if arch != "clip":
        raise ValueError(f"not a vision projector: general.architecture is {arch!r}, not 'clip'")


def _gguf_problem(path: Path) -> str:
    """Why the GGUF reader rejects a file (truncated, not GGUF), or '' if it reads every tensor."""
    return _gguf_read(path)[1]


def _gguf_read(path: Path) -> tuple[Any, str]:
    """The file's GGUF reader (one parse), and why it is not a whole GGUF file ('' if it is)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader's errors are of many kinds; each is the file's fault
        return None, f"not a whole GGUF file ({' '.join(str(exc).split()) or type(exc).__name__})"
    return reader, "" if reader.tensors else "a GGUF file without tensors"
