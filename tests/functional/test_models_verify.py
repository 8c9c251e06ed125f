"""``sulphur models verify`` loads every component from its files: OK on the twin, one line on a bad key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.models import tiny_ltx2


def _verify(home: Path, preset: str = "tiny") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SULPHUR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "verify", preset], env=env,
                          capture_output=True, text=True, timeout=600)


def test_verify_twin_ok_then_renamed_key_fails_naming_file_and_key(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from pipeline.models.gguf_writer import write_state_dict_gguf

    home = tmp_path / "home"
    tiny_ltx2.build_tiny(home / tiny_ltx2.FOLDER_NAME)
    ok = _verify(home)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    for comp in ("transformer", "lora", "vae", "audio_vae", "vocoder", "connectors", "text_encoder",
                 "upsampler", "upscaler"):
        assert any(line.split()[:2] == [comp, "OK"] for line in lines), (comp, ok.stdout)

    root = home / tiny_ltx2.FOLDER_NAME
    sd = load_file(str(root / tiny_ltx2.SAFETENSORS_FILE))
    sd["model.diffusion_model.audio_prompt_adaln_single_old.linear.bias"] = sd.pop(
        "model.diffusion_model.audio_prompt_adaln_single.linear.bias")
    gguf = root / tiny_ltx2.GGUF_FILE
    gguf.unlink()
    write_state_dict_gguf(sd, gguf, "ltxv")
    bad = _verify(home)
    assert bad.returncode == 1
    fails = [line for line in bad.stderr.splitlines() if " FAIL " in line]
    transformer_fail = [line for line in fails if line.startswith("transformer")]
    assert len(transformer_fail) == 1, bad.stderr
    assert str(gguf) in transformer_fail[0] and "audio_prompt_adaln.linear.bias" in transformer_fail[0]
    assert "audio_prompt_adaln_single_old" in transformer_fail[0]
    assert "Traceback" not in bad.stderr
    shutil.rmtree(home, ignore_errors=True)


def test_a_folder_given_as_the_upscaler_file_reads_in_words(tmp_path: Path) -> None:
    """``SULPHUR_ESRGAN=<a folder>`` printed ``[Errno 21] Is a directory: '…'``."""
    folder = tmp_path / "esrgan"
    folder.mkdir()
    env = {**os.environ, "SULPHUR_HOME": str(tmp_path / "home"), "SULPHUR_ESRGAN": str(folder)}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "verify", "sulphur2-ltx23"], env=env,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr  # the report is on stderr, as every other command's
    line = next((x for x in out.splitlines() if x.startswith("upscaler ")), out)
    assert line.split()[1] == "FAIL" and line.endswith(f"{folder}: Is a directory"), line
    assert "Errno" not in out
