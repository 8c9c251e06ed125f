"""The full-size LTX-2.3 stack in the published formats (bench/published_stack.py), one layer deep:
every component of ``ltx23-distilled`` loads from it through the strict loaders, pointed at it by
the ``SULPHUR_*`` overrides (any missing, unexpected or never-materialised tensor fails the load)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models import published_stack as stack
from pipeline.models.registry import get_preset
from pipeline.models.verify import verify

#: One block, one text layer and a small vocabulary; every width as published.
SMOKE = stack.Caps(layers=1, text_layers=1, vision_layers=1, vocab=2048)


@pytest.mark.slow
def test_the_smoke_stack_loads_every_component_with_zero_missing_keys(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    written = stack.write_stack(tmp_path / "stack", SMOKE)
    assert written["parts"]["transformer_gguf"]["bytes"] > 500e6  # full-width blocks, not a tiny twin
    for key, value in stack.overrides(tmp_path / "stack", SMOKE).items():
        monkeypatch.setenv(key, value)
    checks = {c.component: c for c in verify(get_preset("ltx23-distilled"))}
    for comp in ("transformer", "lora", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "upsampler",
                 "upscaler", "enhancer"):
        assert checks[comp].ok, checks[comp].line()
        assert str(tmp_path / "stack") in checks[comp].where  # the written file, not one found elsewhere
