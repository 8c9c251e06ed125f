"""``sulphur models pull`` against a Hub on 127.0.0.1 (tests/hubserver.py), with the real
huggingface_hub client: what lands in the Hugging Face cache, resumes, refusals, and the
one-line errors a user sees."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.models import download
from pipeline.models.download import PullError, pull
from pipeline.models.registry import ModelFile, Preset, sulphur_home
from tests.hubserver import HubServer
from tests.opens import Opens

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes what it streams in chunks of this size


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SULPHUR_HOME", str(tmp_path / "sulphur"))
    for var in ("HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def _blob(n: int, seed: int) -> bytes:
    # Pseudo-random bytes from a seed (os.urandom would make failures irreproducible).
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def _preset(*files: ModelFile, name: str = "hubtest") -> Preset:
    return Preset(name, "ltx2", "loopback test preset", files=files)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fresh_pull_fills_the_hf_cache(hub: HubServer, tmp_path: Path) -> None:
    gguf, cfg, weights, other = _blob(300_000, 1), b'{"in_channels": 4}', _blob(5_000, 2), _blob(9_000, 3)
    repo = hub.add("org/model", {"model-Q4.gguf": gguf, "latent_upsampler/config.json": cfg,
                                 "latent_upsampler/diffusion_pytorch_model.safetensors": weights,
                                 "other/unused.safetensors": other})
    esrgan = _blob(4_000, 4)
    hub.files["RealESRGAN_x2plus.pth"] = esrgan
    preset = _preset(ModelFile("transformer_gguf", "gguf", repo="org/model", filename="model-Q4.gguf"),
                     ModelFile("upsampler", "folder", repo="org/model", filename="latent_upsampler/*"),
                     ModelFile("upscaler", "x2plus", url=f"{hub.url}/files/RealESRGAN_x2plus.pth",
                               sha256=_sha(esrgan)))
    assert [f.local_path() for f in preset.files] == [None, None, None]

    pull(preset)

    snap = tmp_path / "hf" / "hub" / "models--org--model" / "snapshots" / repo.commit
    assert preset.files[0].local_path() == snap / "model-Q4.gguf"
    assert (snap / "model-Q4.gguf").read_bytes() == gguf
    assert preset.files[1].local_path() == snap / "latent_upsampler"
    assert (snap / "latent_upsampler" / "config.json").read_bytes() == cfg
    assert (snap / "latent_upsampler" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    assert not hub.gets("other/unused.safetensors"), "a file outside the pattern was fetched"
    assert preset.files[2].local_path() == sulphur_home() / "downloads" / "RealESRGAN_x2plus.pth"
    assert preset.files[2].local_path().read_bytes() == esrgan
    assert [download.where_found(f) for f in preset.files] == ["HF cache", "HF cache", "downloaded"]
    # The cache is huggingface_hub's own layout: its offline lookup (what diffusers uses) finds the file.
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache("org/model", "model-Q4.gguf", cache_dir=str(tmp_path / "hf" / "hub"))
    assert found is not None and Path(found).read_bytes() == gguf

    hub.requests.clear()
    pull(preset)
    assert not [r for r in hub.requests if r[0] == "GET" and "/api/" not in r[1]], "a second pull downloaded again"


def test_cut_connection_resumes_with_a_range_request(hub: HubServer) -> None:
    data = _blob(2 * CHUNK + 12345, 5)
    hub.add("org/big", {"big.gguf": data})
    hub.drop_once.add("org/big/big.gguf")
    preset = _preset(ModelFile("transformer_gguf", "gguf", repo="org/big", filename="big.gguf"))

    pull(preset)

    assert preset.files[0].local_path().read_bytes() == data
    ranges = hub.gets("/big.gguf")
    assert ranges[0] == "" and len(ranges) == 2, ranges
    assert ranges[1] == f"bytes={CHUNK}-", "the retry did not continue from the bytes already on disk"


def test_interrupted_pull_resumes_on_the_next_run(hub: HubServer) -> None:
    data = _blob(2 * CHUNK + 777, 6)
    hub.add("org/big", {"big.gguf": data})
    hub.drop_always.add("org/big/big.gguf")
    preset = _preset(ModelFile("transformer_gguf", "gguf", repo="org/big", filename="big.gguf"))

    with pytest.raises(PullError, match="run the pull again to resume"):
        pull(preset)
    part = download.repo_cache_folder("org/big") / "blobs" / f"{_sha(data)}{download.PART_SUFFIX}"
    assert part.stat().st_size == CHUNK
    assert preset.files[0].local_path() is None

    hub.drop_always.clear()
    hub.requests.clear()
    pull(preset)
    assert hub.gets("/big.gguf") == [f"bytes={CHUNK}-"]
    assert preset.files[0].local_path().read_bytes() == data
    assert not part.exists()


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_a_corrupted_file_is_refused_and_removed(hub: HubServer, fault: str) -> None:
    data = _blob(200_000, 7)
    hub.add("org/model", {"model.gguf": data})
    getattr(hub, fault).add("org/model/model.gguf")
    preset = _preset(ModelFile("transformer_gguf", "gguf", repo="org/model", filename="model.gguf"))

    expected = "sha256 .* does not match" if fault == "corrupt" else "sent 100000 bytes where 200000 were published"
    with pytest.raises(PullError, match=expected):
        pull(preset)
    blobs = download.repo_cache_folder("org/model") / "blobs"
    assert not blobs.exists() or not any(blobs.iterdir()), "a refused file stayed in the cache"
    assert preset.files[0].local_path() is None


def test_a_url_file_with_the_wrong_checksum_is_refused(hub: HubServer) -> None:
    hub.files["x2.pth"] = _blob(3_000, 8)
    preset = _preset(ModelFile("upscaler", "x2plus", url=f"{hub.url}/files/x2.pth", sha256="0" * 64))
    with pytest.raises(PullError, match="x2.pth: refused, sha256"):
        pull(preset)
    assert not (sulphur_home() / "downloads").exists() or not any((sulphur_home() / "downloads").iterdir())


def test_disk_check_refuses_before_the_first_byte(hub: HubServer) -> None:
    hub.files["huge.bin"] = b"tiny really"
    preset = _preset(ModelFile("upscaler", "huge", url=f"{hub.url}/files/huge.bin", size=10**18))
    with pytest.raises(PullError, match="not enough disk"):
        pull(preset)
    assert not hub.gets("huge.bin")


def test_env_override_comes_before_the_hf_cache(hub: HubServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add("org/model", {"model.gguf": _blob(1000, 9)})
    spec = ModelFile("transformer_gguf", "gguf", repo="org/model", filename="model.gguf", env="SULPHUR_TEST_GGUF")
    pull(_preset(spec))
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"mine")
    monkeypatch.setenv("SULPHUR_TEST_GGUF", str(mine))
    assert spec.local_path() == mine and download.where_found(spec) == "$SULPHUR_TEST_GGUF"
    assert download.plan(_preset(spec)) == [], "a file the user points at is pulled anyway"


def test_sulphur_home_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SULPHUR_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sulphur_home() == tmp_path / "xdg" / "sulphur"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the spec says: ignore it
    assert sulphur_home() == Path.home() / ".cache" / "sulphur"
    monkeypatch.setenv("SULPHUR_HOME", str(tmp_path / "mine"))
    assert sulphur_home() == tmp_path / "mine"


# --------------------------------------------------------------------------- the command


_REGISTER = """
import sys
from pipeline.models.registry import ModelFile, Preset, register, PRESETS, _load_families
_load_families()
register(Preset("hubtest", "ltx2", "loopback", files=(
    ModelFile("transformer_gguf", "gguf", repo="org/model", filename="model.gguf"),
    ModelFile("upsampler", "folder", repo="org/model", filename="latent_upsampler/*"),
    ModelFile("enhancer", "gated gguf", repo="org/gated", filename="enhancer.gguf"),
)))
from pipeline.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    # Neither a token nor a bar switch leaks in from the developer's shell or an earlier test.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env |= {"PYTHONPATH": str(ROOT)} | extra_env
    return subprocess.run([sys.executable, "-c", _REGISTER, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def _hubtest_repos(hub: HubServer) -> None:
    hub.add("org/model", {"model.gguf": _blob(123_456, 10), "latent_upsampler/config.json": b"{}",
                          "latent_upsampler/model.safetensors": _blob(2_000, 11)})
    hub.add("org/gated", {"enhancer.gguf": _blob(7_000, 12)}, gated=True)


def test_gated_repo_without_a_token_is_refused_in_one_line(hub: HubServer) -> None:
    _hubtest_repos(hub)
    result = _cli("models", "pull", "hubtest")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: org/gated is gated (HTTP 401)") and "HF_TOKEN" in lines[-1], result.stderr
    assert not hub.gets("model.gguf"), "the pull downloaded other files before finding it may not"

    wrong = _cli("models", "pull", "hubtest", HF_TOKEN="hf_wrong")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: org/gated is gated (HTTP 403)")

    # TQDM_POSITION=-1 shows huggingface_hub's bars where stderr is no terminal.
    ok = _cli("models", "pull", "hubtest", HF_TOKEN=hub.token, TQDM_POSITION="-1")
    assert ok.returncode == 0, ok.stderr
    # One bar per file, with its total size and the time left (elapsed<remaining).
    assert re.search(r"model\.gguf: 100%\S* *\|\S+\| 123k/123k \[\d\d:\d\d<\d\d:\d\d", ok.stderr), ok.stderr
    assert re.search(r"enhancer\.gguf: 100%.*7\.00k/7\.00k \[\d\d:\d\d<", ok.stderr), ok.stderr
    assert "4 file(s) ready" in ok.stderr.splitlines()[-1] and "sulphur models verify hubtest" in ok.stderr


def test_dry_run_lists_files_and_sizes_and_downloads_nothing(hub: HubServer, tmp_path: Path) -> None:
    _hubtest_repos(hub)
    result = _cli("models", "pull", "hubtest", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stderr
    assert "org/model/model.gguf  123.5 KB  [to fetch]" in out
    assert "org/model/latent_upsampler/config.json  2 B  [to fetch]" in out
    assert "org/model/latent_upsampler/model.safetensors  2.0 KB  [to fetch]" in out
    assert "org/gated/enhancer.gguf  7.0 KB  [to fetch]" in out
    assert "hubtest: 4 file(s), 132.5 KB; 4 to fetch, 132.5 KB" in out
    assert not [r for r in hub.requests if "/resolve/" in r[1]], "a dry run touched a file"
    assert not (tmp_path / "hf" / "hub" / "models--org--model" / "blobs").exists()

    offline = _cli("models", "pull", "hubtest", "--dry-run", HF_HUB_OFFLINE="1")
    assert offline.returncode == 1 and "Traceback" not in offline.stderr
    assert offline.stderr.strip() == "error: cannot pull org/model: HF_HUB_OFFLINE is set (unset it to download)"

    unknown = _cli("models", "pull", "no-such-preset", "--dry-run")
    assert unknown.returncode == 2 and unknown.stderr.strip().count("\n") == 0
    assert unknown.stderr.startswith("error: unknown model preset 'no-such-preset' (known: ")


def test_models_json_names_repo_file_and_size_of_every_file(hub: HubServer) -> None:
    _hubtest_repos(hub)
    assert _cli("models", "pull", "hubtest", HF_TOKEN=hub.token).returncode == 0
    result = _cli("models", "--json")
    assert result.returncode == 0, result.stderr
    presets = {p["name"]: p for p in json.loads(result.stdout)}
    assert {"tiny", "sulphur2-ltx23", "hubtest"} <= set(presets)
    for preset in presets.values():
        for f in preset["files"]:
            assert {"repo", "filename", "size", "found", "path"} <= set(f)
    gguf = presets["hubtest"]["files"][0]
    assert (gguf["repo"], gguf["filename"], gguf["size"], gguf["found"]) == ("org/model", "model.gguf",
                                                                             123_456, "HF cache")
    folder = presets["hubtest"]["files"][1]
    assert (folder["filename"], folder["found"], folder["size"]) == ("latent_upsampler/*", "HF cache", 2 + 2_000)
    assert folder["parts"] == [{"filename": "latent_upsampler/config.json", "size": 2},
                               {"filename": "latent_upsampler/model.safetensors", "size": 2_000}]
    listing = _cli("models")
    assert "org/model/model.gguf  123.5 KB  [HF cache]" in listing.stdout


@pytest.mark.parametrize("args", [(), ("--json",)], ids=["table", "json"])
def test_sulphur_models_reads_a_pull_record_once(hub: HubServer, args: tuple[str, ...]) -> None:
    """A folder's pull record (which files the pull fetched) is opened once per `sulphur models`,
    though its row asks several times where the folder is and whether it is whole."""
    _hubtest_repos(hub)
    assert _cli("models", "pull", "hubtest", HF_TOKEN=hub.token).returncode == 0
    [record] = (sulphur_home() / "pulled").rglob("*.json")  # latent_upsampler/*'s
    opens = Opens(record)
    try:
        result = _cli("models", *args)
        assert result.returncode == 0, result.stderr
        if args:
            [hubtest] = (p for p in json.loads(result.stdout) if p["name"] == "hubtest")
            assert hubtest["files"][1]["found"] == "HF cache"
        else:
            assert any("org/model/latent_upsampler/*" in line and line.endswith("[HF cache]")
                       for line in result.stdout.splitlines()), result.stdout
        seen = opens()
        assert seen == 1, f"the pull record was opened {seen} times"
    finally:
        opens.close()


def _stand_ins(hub: HubServer, preset: Preset) -> None:
    """Small files for each of ``preset``'s Hub patterns that the loopback Hub does not serve yet."""
    from pipeline.models.download import pattern_root

    for i, spec in enumerate(f for f in preset.files if f.repo):
        names = []
        for pattern in spec.patterns or ("*",):
            if "*" in pattern or "?" in pattern:
                root = pattern_root(pattern)
                names += [f"{root}/config.json" if root else "config.json",
                          f"{root}/diffusion_pytorch_model.safetensors" if root else "model.safetensors"]
            else:
                names.append(pattern)
        repo = hub.repos.get(spec.repo)
        hub.add(spec.repo, {name: _blob(100 + i, 100 + i) for name in names} | (dict(repo.files) if repo else {}))


def test_the_real_presets_files_are_found_after_a_pull(hub: HubServer) -> None:
    """sulphur2-ltx23's own repo ids and patterns, served by the loopback Hub with small files."""
    from dataclasses import replace

    from pipeline.models.registry import get_preset

    real = get_preset("sulphur2-ltx23")
    # URL files (GitHub release assets) are covered above; this machine reaches no GitHub.
    # The loopback Hub serves stand-in bytes, so the published sha256/size pins are left out here.
    preset = replace(real, files=tuple(replace(f, sha256="", size=None) for f in real.files if f.repo))
    assert preset.files, "the preset names no Hub repo"
    _stand_ins(hub, preset)

    pull(preset)

    for spec in preset.files:
        path = spec.local_path()
        assert path is not None and download.where_found(spec) == "HF cache", spec
        assert str(path).startswith(str(download.hf_cache_dir()))


#: diffusers/LTX-2.3-Diffusers as LTX2Pipeline's components lay it out, in small files (the real
#: transformer/ holds ~40 GB of shards; text_encoder/ is Gemma 3 12B in fp32).
_LTX23_TREE = {
    "model_index.json": b'{"_class_name": "LTX2Pipeline"}', "README.md": b"# LTX-2.3", ".gitattributes": b"*.st lfs",
    **{f"{part}/config.json": b'{"part": "%s"}' % part.encode()
       for part in ("vae", "audio_vae", "vocoder", "connectors", "text_encoder", "transformer")},
    **{f"{part}/diffusion_pytorch_model.safetensors": _blob(1_000 + i, 20 + i)
       for i, part in enumerate(("vae", "audio_vae", "vocoder", "connectors"))},
    "text_encoder/model-00001-of-00002.safetensors": _blob(3_000, 30),
    "text_encoder/model-00002-of-00002.safetensors": _blob(2_000, 31),
    "text_encoder/model.safetensors.index.json": b'{"weight_map": {}}',
    "tokenizer/tokenizer.json": _blob(700, 32), "tokenizer/tokenizer_config.json": b"{}",
    "scheduler/scheduler_config.json": b'{"_class_name": "FlowMatchEulerDiscreteScheduler"}',
    "transformer/diffusion_pytorch_model-00001-of-00002.safetensors": _blob(40_000, 33),
    "transformer/diffusion_pytorch_model-00002-of-00002.safetensors": _blob(30_000, 34),
    "transformer/diffusion_pytorch_model.safetensors.index.json": b'{"weight_map": {}}',
    "processor/processor_config.json": b"{}",
}
_PULLED_DIFFUSERS = sorted(k for k in _LTX23_TREE if k.split("/")[0] in {
    "model_index.json", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer", "scheduler"})


def test_the_readme_order_pulls_the_ltx23_diffusers_folder_without_its_transformer(hub: HubServer,
                                                                                   tmp_path: Path) -> None:
    """`sulphur models pull sulphur2-ltx23` fetches every folder the render loads from
    diffusers/LTX-2.3-Diffusers and transformer/config.json, never the transformer's shards;
    `--dry-run` counts them, and `sulphur models --json` finds each part in the HF cache."""
    from dataclasses import replace

    from pipeline.models.registry import get_preset

    preset = get_preset("sulphur2-ltx23")
    hub.add("diffusers/LTX-2.3-Diffusers", _LTX23_TREE)
    # The GGUF, LoRA, enhancer and upsampler repos.
    _stand_ins(hub, replace(preset, files=tuple(f for f in preset.files if f.repo != "diffusers/LTX-2.3-Diffusers")))
    esrgan = tmp_path / "x2plus.pth"  # a GitHub release asset: this machine reaches no GitHub
    esrgan.write_bytes(b"x2")
    env = {"SULPHUR_ESRGAN": str(esrgan)}

    dry = _cli("models", "pull", "sulphur2-ltx23", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    wanted = [*_PULLED_DIFFUSERS, "transformer/config.json"]
    for name in wanted:
        size = download.human(len(_LTX23_TREE[name]))
        assert f"diffusers/LTX-2.3-Diffusers/{name}  {size}  [to fetch]" in dry.stderr, (name, dry.stderr)
    assert "diffusers/LTX-2.3-Diffusers/transformer/diffusion_pytorch_model" not in dry.stderr
    assert "processor/" not in dry.stderr and "README.md" not in dry.stderr
    # The total (what the free-disk check compares) counts the diffusers parts too.
    others = sum(len(data) for repo_id, repo in hub.repos.items() if repo_id != "diffusers/LTX-2.3-Diffusers"
                 for data in repo.files.values())
    total = others + sum(len(_LTX23_TREE[name]) for name in wanted)
    count = len(wanted) + sum(len(r.files) for i, r in hub.repos.items() if i != "diffusers/LTX-2.3-Diffusers")
    assert f"sulphur2-ltx23: {count} file(s), {download.human(total)}; {count} to fetch" in dry.stderr

    done = _cli("models", "pull", "sulphur2-ltx23", **env)
    assert done.returncode == 0, done.stderr
    assert not hub.gets("/transformer/diffusion_pytorch_model-00001-of-00002.safetensors")
    assert not [r for r in hub.requests if "transformer/diffusion_pytorch_model" in r[1]]

    listed = {p["name"]: p for p in json.loads(_cli("models", "--json", **env).stdout)}["sulphur2-ltx23"]
    rows = {f["role"]: f for f in listed["files"]}
    snap = download.repo_cache_folder("diffusers/LTX-2.3-Diffusers") / "snapshots" / hub.repos[
        "diffusers/LTX-2.3-Diffusers"].commit
    folder, config = rows["diffusers"], rows["transformer_config"]
    assert (folder["repo"], folder["found"], folder["path"]) == ("diffusers/LTX-2.3-Diffusers", "HF cache", str(snap))
    assert folder["parts"] == [{"filename": n, "size": len(_LTX23_TREE[n])} for n in _PULLED_DIFFUSERS]
    assert folder["size"] == sum(len(_LTX23_TREE[n]) for n in _PULLED_DIFFUSERS)
    assert (config["found"], config["path"]) == ("HF cache", str(snap / "transformer"))
    assert config["parts"] == [{"filename": "transformer/config.json", "size": len(_LTX23_TREE["transformer/config.json"])}]
    for name in wanted:
        assert (snap / name).read_bytes() == _LTX23_TREE[name], name
    assert sorted(q.name for q in (snap / "transformer").iterdir()) == ["config.json"]
    assert all(f["found"] != "missing" for f in listed["files"]), listed["files"]


def test_ctrl_c_keeps_the_partial_file_and_the_next_pull_resumes(hub: HubServer) -> None:
    data = _blob(3 * CHUNK, 13)
    hub.add("org/model", {"model.gguf": data, "latent_upsampler/config.json": b"{}",
                          "latent_upsampler/model.safetensors": _blob(2_000, 11)})
    hub.add("org/gated", {"enhancer.gguf": _blob(7_000, 12)}, gated=True)
    hub.slow.add("org/model/model.gguf")
    part = download.repo_cache_folder("org/model") / "blobs" / f"{_sha(data)}{download.PART_SUFFIX}"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"} | {"PYTHONPATH": str(ROOT), "HF_TOKEN": hub.token}
    proc = subprocess.Popen([sys.executable, "-c", _REGISTER, "models", "pull", "hubtest"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= CHUNK) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    kept = part.stat().st_size
    assert CHUNK <= kept < len(data)

    hub.slow.clear()
    hub.requests.clear()
    again = _cli("models", "pull", "hubtest", "--dry-run", HF_TOKEN=hub.token)
    assert f"org/model/model.gguf  31.5 MB  [partial, resumes at {download.human(kept)}]" in again.stderr
    done = _cli("models", "pull", "hubtest", HF_TOKEN=hub.token)
    assert done.returncode == 0, done.stderr
    assert hub.gets("/model.gguf") == [f"bytes={kept}-"]
    found = json.loads(_cli("models", "--json").stdout)
    (gguf,) = [f for p in found if p["name"] == "hubtest" for f in p["files"] if f["role"] == "transformer_gguf"]
    assert Path(gguf["path"]).read_bytes() == data


def test_pulling_a_storyboard_fetches_its_hub_loras_and_the_render_finds_them(hub: HubServer, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """``sulphur models pull board.toml``: the shots' Hub LoRAs land in the HF cache, where the
    render's LoRA lookup finds them (before the pull: one line saying to pull)."""
    import argparse

    from pipeline.cli.models import main_pull
    from pipeline.models import user_loras
    from pipeline.project.storyboard import load
    from pipeline.render.errors import RenderError
    from pipeline.render.job import RenderJob
    from pipeline.render.lora_audio import check_loras

    lora = _blob(4_000, 7)
    hub.add("org/camera-loras", {"dolly-in.safetensors": lora, "other.safetensors": _blob(100, 8)})
    board = tmp_path / "board.toml"
    board.write_text('[project]\npreset = "tiny"\n\n[[segment]]\nid = "a"\nprompt = "p"\n'
                     'loras = [{ repo = "org/camera-loras", path = "dolly-in.safetensors", strength = 0.6 }]\n')
    job = RenderJob.resolve(load(board)).segment_job(0)
    with pytest.raises(RenderError, match=r"^segment a: LoRA org/camera-loras/dolly-in.safetensors is not on "
                                          r"this machine: `sulphur models pull board.toml` fetches it$"):
        check_loras([job])
    assert main_pull(argparse.Namespace(preset=str(board), dry_run=False)) == 0
    assert f"next: sulphur render {board}" in capsys.readouterr().err
    (found,) = user_loras.resolve(job.storyboard, job.segment)
    assert found.path is not None and found.path.read_bytes() == lora and found.digest == _sha(lora)
    assert [r[1] for r in hub.requests if "other.safetensors" in r[1]] == []  # only what the shots name


def test_an_unreachable_hub_is_one_line_at_once() -> None:
    """Offline, huggingface_hub retried for ~23 s, printing six warning blocks, before the error."""
    import time

    t0 = time.monotonic()
    result = _cli("models", "pull", "hubtest", "--dry-run", HF_ENDPOINT="http://hub.invalid")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: cannot reach http://hub.invalid: "), result.stderr
    assert time.monotonic() - t0 < 30  # not a retry loop (a fresh interpreter takes a few seconds)
