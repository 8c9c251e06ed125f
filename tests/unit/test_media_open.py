"""PyAV 19 (what Python 3.12 installs) dropped ``av.open``'s ``metadata_errors``: a call that
passed it crashed every render at its flicker check on the GPU machine, while CI's Python 3.11
gets PyAV 18 and passed. Only :func:`pipeline.project.media.open_media` may pass it, and only
to a PyAV that still takes it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_only_open_media_passes_metadata_errors() -> None:
    offenders = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")) + sorted((ROOT / "sulphur_tui").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and any(k.arg == "metadata_errors" for k in node.keywords):
                offenders.append(str(path.relative_to(ROOT)))
    assert set(offenders) == {"pipeline/project/media.py"}, offenders
