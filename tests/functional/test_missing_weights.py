"""A preset whose weights are not on disk is refused up front, naming every missing file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.functional.conftest import checkout_env

ROOT = Path(__file__).resolve().parents[2]


def test_render_with_missing_weights_names_each_file_and_runs_nothing(tmp_path: Path) -> None:
    story = tmp_path / "real.toml"
    story.write_text((ROOT / "storyboards" / "example.toml").read_text()
                     .replace('preset = "tiny"', 'preset = "sulphur2-ltx23"'))
    before = story.read_bytes()
    env = checkout_env({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SULPHUR_HOME": str(tmp_path / "home")})
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "render", str(story), "--json"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: preset sulphur2-ltx23 is missing 8 file(s)")
    for role in ("transformer_gguf", "lora", "upsampler", "upscaler", "enhancer", "enhancer_mmproj"):
        assert f"{role}:" in error
    # Where each comes from: all eight, the LTX-2.3 diffusers folder included, are fetched by a pull.
    assert error.count("(`sulphur models pull` fetches it)") == 8, error
    assert "diffusers: LTX-2.3 diffusers folder" in error and "diffusers/LTX-2.3-Diffusers/{model_index.json," in error
    events = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(events) == 1 and '"kind":"missing_models"' in events[0]
    assert story.read_bytes() == before and not (tmp_path / "renders").exists()
    assert not (tmp_path / ".sulphur" / "cache").exists()


def test_models_into_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    """`sulphur models | head -1`: no traceback when the pipe closes under the listing."""
    env = checkout_env({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SULPHUR_HOME": str(tmp_path / "home")})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "models"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the listing is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "Exception ignored" not in err, err
