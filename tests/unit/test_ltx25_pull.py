"""``sulphur models pull ltx25-distilled`` against the loopback Hub (tests/hubserver.py): the preset's own
repo ids and patterns, Lightricks/LTX-2.5-Diffusers served gated (as it is published) in small files."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.models import download
from tests.hubserver import HubServer
from tests.unit.test_models_pull import _blob, _cli, hub  # noqa: F401 - hub is the loopback Hub fixture

REPO = "Lightricks/LTX-2.5-Diffusers"

#: The Diffusers folder as the 2.5 pipeline lays it out, small (the real transformer/ is 4 shards of ~10 GB).
TREE = {
    "model_index.json": b'{"_class_name": "LTX2Pipeline"}', "README.md": b"# LTX-2.5",
    **{f"{part}/config.json": b'{"part": "%s"}' % part.encode()
       for part in ("vae", "audio_vae", "vocoder", "connectors", "text_encoder", "transformer", "latent_upsampler",
                    "duration_head", "diffusion_decoder")},
    **{f"{part}/diffusion_pytorch_model.safetensors": _blob(1_000 + i, 40 + i)
       for i, part in enumerate(("vae", "audio_vae", "vocoder", "connectors", "latent_upsampler", "duration_head",
                                 "diffusion_decoder"))},
    "text_encoder/model.safetensors": _blob(3_000, 50),
    "tokenizer/tokenizer.json": _blob(700, 51), "tokenizer/tokenizer_config.json": b"{}",
    "scheduler/scheduler_config.json": b'{"_class_name": "FlowMatchEulerDiscreteScheduler"}',
    **{f"transformer/diffusion_pytorch_model-0000{i}-of-00004.safetensors": _blob(20_000 + i, 52 + i)
       for i in range(1, 5)},
    "transformer_full/config.json": b"{}", "ltx-2.5-22b-distilled-lora-450-bf16.safetensors": _blob(9_000, 60),
}
#: What the render loads: the pipeline's folders, the upsampler, and of transformer/ only its config.
WANTED = sorted(k for k in TREE if k.split("/")[0] in {
    "model_index.json", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer", "scheduler",
    "latent_upsampler"}) + ["transformer/config.json"]


def test_pull_dry_run_json_and_the_gate(hub: HubServer, tmp_path: Path) -> None:  # noqa: F811
    hub.add(REPO, TREE, gated=True)
    hub.add("realrebelai/LTX-2.5_GGUFs", {"LTX-2.5-Distilled-Q3_K_M.gguf": _blob(50_000, 61),
                                          "LTX-2.5-Distilled-Q4_K_M.gguf": _blob(60_000, 62)})
    hub.add("unsloth/gemma-4-E2B-it-GGUF", {"gemma-4-E2B-it-Q4_K_M.gguf": _blob(7_000, 63),
                                            "mmproj-F16.gguf": _blob(900, 64)})
    esrgan = tmp_path / "x2plus.pth"  # a GitHub release asset: this machine reaches no GitHub
    esrgan.write_bytes(b"x2")
    env = {"SULPHUR_ESRGAN": str(esrgan)}

    dry = _cli("models", "pull", "ltx25-distilled", "--dry-run", HF_TOKEN=hub.token, **env)
    assert dry.returncode == 0, dry.stderr
    for name in WANTED:
        assert f"{REPO}/{name}  {download.human(len(TREE[name]))}  [to fetch]" in dry.stderr, (name, dry.stderr)
    assert "realrebelai/LTX-2.5_GGUFs/LTX-2.5-Distilled-Q3_K_M.gguf  50.0 KB  [to fetch]" in dry.stderr
    assert "unsloth/gemma-4-E2B-it-GGUF/gemma-4-E2B-it-Q4_K_M.gguf  7.0 KB  [to fetch]" in dry.stderr
    for never in ("diffusion_pytorch_model-0000", "transformer_full", "distilled-lora-450", "duration_head",
                  "diffusion_decoder", "Distilled-Q4_K_M", "mmproj"):
        assert never not in dry.stderr, never
    count = len(WANTED) + 2
    total = sum(len(TREE[n]) for n in WANTED) + 50_000 + 7_000
    assert f"ltx25-distilled: {count} file(s), {download.human(total)}; {count} to fetch" in dry.stderr
    assert not [r for r in hub.requests if "/resolve/" in r[1]], "a dry run touched a file"

    gated = _cli("models", "pull", "ltx25-distilled", **env)  # no HF_TOKEN: Lightricks' repo is gated
    assert gated.returncode == 1 and "Traceback" not in gated.stderr
    assert gated.stderr.strip().splitlines()[-1].startswith(f"error: {REPO} is gated (HTTP 401)")

    done = _cli("models", "pull", "ltx25-distilled", HF_TOKEN=hub.token, **env)
    assert done.returncode == 0, done.stderr
    assert not [r for r in hub.requests if "diffusion_pytorch_model-0000" in r[1]]

    listed = {p["name"]: p for p in json.loads(_cli("models", "--json", **env).stdout)}["ltx25-distilled"]
    rows = {f["role"]: f for f in listed["files"]}
    assert set(rows) == {"transformer_gguf", "transformer_config", "diffusers", "upsampler", "upscaler", "enhancer"}
    assert all(f["found"] != "missing" for f in listed["files"]), listed["files"]
    assert (rows["transformer_gguf"]["repo"], rows["transformer_gguf"]["filename"], rows["transformer_gguf"]["size"]) \
        == ("realrebelai/LTX-2.5_GGUFs", "LTX-2.5-Distilled-Q3_K_M.gguf", 50_000)
    snap = download.repo_cache_folder(REPO) / "snapshots" / hub.repos[REPO].commit
    assert rows["upsampler"]["path"] == str(snap / "latent_upsampler")
    assert rows["transformer_config"]["path"] == str(snap / "transformer")
    for name in WANTED:
        assert (snap / name).read_bytes() == TREE[name], name
