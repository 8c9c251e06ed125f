"""``sulphur models verify`` checks the enhancer GGUF (and its vision projector) the way llama.cpp
reads them: a whole file of an architecture llama.cpp knows, reported per file as OK or one line."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from pipeline.models.enhancer import build_tiny_llm
from pipeline.models.registry import ModelFile, get_preset
from pipeline.models.verify import verify


def _preset(enhancer: Path, mmproj: Path | None = None) -> object:
    files = [ModelFile("enhancer", "enhancer", path=str(enhancer))]
    if mmproj is not None:
        files.append(ModelFile("enhancer_mmproj", "projector", path=str(mmproj)))
    return replace(get_preset("tiny"), name="real-enhancer", builder=None, files=tuple(files))


def _gguf(path: Path, arch: str, tensor: str) -> Path:
    """A one-tensor GGUF of architecture ``arch``."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_tensor(tensor, np.ones((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_verify_loads_the_enhancer_and_its_projector_and_names_a_bad_file(tmp_path: Path) -> None:
    llm = build_tiny_llm(tmp_path / "llm.gguf")
    proj = _gguf(tmp_path / "mmproj.gguf", "clip", "mm.0.weight")
    checks = {c.component: c for c in verify(_preset(llm, proj))}
    assert set(checks) == {"enhancer", "enhancer_mmproj"}
    assert checks["enhancer"].ok and checks["enhancer_mmproj"].ok, [c.line() for c in checks.values()]

    cut = tmp_path / "cut.gguf"  # an interrupted download: the tensors run past the end of the file
    shutil.copy(llm, cut)
    os.truncate(cut, cut.stat().st_size - 1000)
    swapped = verify(_preset(cut, llm))  # and the LLM given as the projector
    enh, mm = (next(c for c in swapped if c.component == n) for n in ("enhancer", "enhancer_mmproj"))
    assert not enh.ok and str(cut) in enh.line() and "not a whole GGUF file" in enh.error, enh.line()
    assert not mm.ok and "'gemma3'" in mm.error and str(llm) in mm.line(), mm.line()


def test_a_gguf_llama_cpp_has_no_architecture_for_fails_the_enhancer_check(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "transformer.gguf", "ltxv", "proj_in.weight")  # a video transformer where the LLM should be
    (check,) = verify(_preset(path))
    assert not check.ok and check.error.startswith("llama.cpp cannot load it"), check.line()
