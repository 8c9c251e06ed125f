"""The real presets name the files their publishers publish, and use them as the publishers say.

The names and hashes below are restated from the sources written beside the presets in
pipeline/models/ltx2.py (the Sulphur 2 model card, the Real-ESRGAN release), not read from
the code under test, so a preset pointed at other files fails here.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.models import download
from pipeline.models.download import PullError
from pipeline.models.registry import get_preset

SULPHUR = "SulphurAI/Sulphur-2-base"


def test_sulphur2_preset_renders_the_sulphur_finetune_not_the_stock_dev() -> None:
    preset = get_preset("sulphur2-ltx23")
    gguf = preset.file("transformer_gguf")
    # A community GGUF of Sulphur 2's dev build (SulphurAI publishes no GGUF of the DiT).
    assert (gguf.repo, gguf.filename) == ("aman5g/Sulphur-2-base-GGUF", "sulphur_dev-Q3_K_M.gguf")
    assert "ltx-2.3-22b-dev" not in gguf.path


def test_sulphur2_preset_uses_the_seeds_lora_from_sulphurs_repo_at_0_7() -> None:
    preset = get_preset("sulphur2-ltx23")
    lora = preset.file("lora")
    assert lora.repo == SULPHUR
    assert lora.filename == "distill_loras/ltx-2.3-22b-distilled-lora-1.1_fro90_ceil72_condsafe.safetensors"
    # Unverified against the Hub, so not pinned: a wrong pin would refuse the real file.
    assert not lora.size and not lora.sha256
    assert preset.lora_strength == 0.7


def test_sulphur2_preset_uses_its_own_enhancer_without_a_system_prompt() -> None:
    from pipeline.models.enhancer import _messages

    preset = get_preset("sulphur2-ltx23")
    enhancer, mmproj = preset.file("enhancer"), preset.file("enhancer_mmproj")
    assert (enhancer.repo, enhancer.filename) == (SULPHUR, "prompt_enhancer/sulphur_prompt_enhancer_model-q8_0.gguf")
    assert (mmproj.repo, mmproj.filename) == (SULPHUR, "prompt_enhancer/mmproj-BF16.gguf")
    # "There is no system prompt for it, just send the text": one user turn, the prompt as written.
    mode = preset.extra["enhance_system_prompt"]
    assert _messages("a fox in the snow", mode, False, None) == [{"role": "user", "content": "a fox in the snow"}]


def test_ltx23_distilled_keeps_the_stock_weights_and_lightricks_prompts() -> None:
    from pipeline.models.enhancer import LTX_PROMPTS

    preset = get_preset("ltx23-distilled")
    assert (preset.file("transformer_gguf").repo, preset.file("transformer_gguf").filename) == (
        "unsloth/LTX-2.3-GGUF", "ltx-2.3-22b-dev-Q3_K_M.gguf")
    assert (preset.file("lora").repo, preset.file("lora").filename) == (
        "Lightricks/LTX-2.3", "ltx-2.3-22b-distilled-lora-384-1.1.safetensors")
    assert preset.file("enhancer").repo == "unsloth/gemma-3-12b-it-GGUF"
    assert not any(f.role == "enhancer_mmproj" for f in preset.files)
    assert preset.extra.get("enhance_system_prompt", LTX_PROMPTS) == LTX_PROMPTS
    assert preset.lora_strength == 1.0


@pytest.mark.parametrize("name", ["sulphur2-ltx23", "ltx23-distilled"])
def test_the_diffusers_folder_is_pulled_without_the_transformer_weights(name: str) -> None:
    """diffusers/LTX-2.3-Diffusers (diffusers 0.42.1's LTX2InContextPipeline docstring): the
    components the render loads, and of transformer/ only its config (the GGUF is the weights)."""
    import fnmatch

    preset = get_preset(name)
    folder, config = preset.file("diffusers"), preset.file("transformer_config")
    assert folder.repo == config.repo == "diffusers/LTX-2.3-Diffusers"
    assert set(folder.patterns) == {"model_index.json", "vae/*", "audio_vae/*", "vocoder/*", "connectors/*",
                                    "text_encoder/*", "tokenizer/*", "scheduler/*"}
    assert config.patterns == ("transformer/config.json",)
    shard = "transformer/diffusion_pytorch_model-00001-of-00002.safetensors"
    assert not any(fnmatch.fnmatchcase(shard, p) for p in (*folder.patterns, *config.patterns))
    assert (download.folder_root(folder), download.folder_root(config)) == ("", "transformer")


@pytest.mark.parametrize("name", ["sulphur2-ltx23", "ltx23-distilled"])
def test_x2plus_is_the_release_asset_with_its_hash(name: str) -> None:
    up = get_preset(name).file("upscaler")
    assert up.url == "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"
    assert (up.size, up.sha256) == (67_061_725, "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb")


def test_a_pull_refuses_an_x2plus_that_is_not_the_published_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The preset's own spec, served from 127.0.0.1 with the right length but other bytes."""
    import http.server
    import threading

    monkeypatch.setenv("SULPHUR_HOME", str(tmp_path / "home"))
    spec = get_preset("sulphur2-ltx23").file("upscaler")
    body = b"\0" * spec.size  # type: ignore[operator]
    assert hashlib.sha256(body).hexdigest() != spec.sha256

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = replace(spec, url=f"http://127.0.0.1:{server.server_address[1]}/RealESRGAN_x2plus.pth", env="")
        dest = download.url_download_path(local)
        with pytest.raises(PullError, match="sha256"):
            download.resumable_get(local.url, dest, size=local.size, sha256=local.sha256, headers={},
                                   label=dest.name)
        assert not dest.exists()
    finally:
        server.shutdown()
