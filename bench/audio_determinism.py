"""Does a segment's sound depend on the process that decodes it? Prints JSON.

On an H100 (2026-12-05, ``ray_pipeline.py`` with ``cache_compare``) the Ray engine's draft actor
decoded segment 1's audio latents, bit for bit the local render's, to another waveform, while two
local renders agreed. This decodes one set of audio latents (``ltx2-19b-random``'s full-size audio
VAE and vocoder, float32, as the draft does) in a fresh child process per variant of what a Ray
actor's process differs in, and compares each waveform with the plain process's:

- ``omp1``: ``OMP_NUM_THREADS=1`` (Ray sets it to the actor's num_cpus);
- ``omp1_threads``: that, then ``torch.set_num_threads(physical cores)`` (what the actor does);
- ``capped``: the allocator capped at 8 GiB (``enforce_vram_budget``), as every capped render is;
- ``warmed``: the cuBLAS/cuDNN handles made first (``warm_cuda_libraries``), as the planner does;
- ``contended``: while another process keeps the GPU busy with matmuls, as a Ray finish actor
  does beside the draft actor (time-sliced kernels: do atomics-based kernels, e.g. cuDNN's
  backward-data algorithms behind ``ConvTranspose1d``, then add in another order?);
- ``deterministic``: ``torch.use_deterministic_algorithms(True)``, the kernels made to give one
  result whatever else runs;
- the plain process decodes twice (``plain_twice_equal``: deterministic at all?).

``--within``: in one process, three decodes per setting (plain, ``cudnn.deterministic``, torch's
deterministic algorithms, cuDNN off), each stage's output compared and each decode timed: which
stage varies, what makes it repeat, and at what cost (an H100, 2026-12-06: the plain process's two decodes differed by 5e-6).

    python bench/audio_determinism.py --out bench/results/audio_determinism_<gpu>_<date>.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS: dict[str, dict[str, str]] = {
    "plain": {}, "omp1": {"OMP_NUM_THREADS": "1"},
    "omp1_threads": {"OMP_NUM_THREADS": "1", "PROBE_SET_THREADS": "1"},
    "capped": {"PROBE_CAP_GB": "8"}, "warmed": {"PROBE_WARM": "1"},
    "contended": {"PROBE_CONTEND": "1"},
    "deterministic": {"PROBE_DETERMINISTIC": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"},
}

_LOAD = """
import torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
a = (a @ a).clamp_(-1, 1)
torch.cuda.synchronize()
print("busy", flush=True)
while True:
    a = (a @ a).clamp_(-1, 1)
"""


def _child(out: Path, frames: int, fps: int) -> None:
    """Decode seeded latents with the seeded random audio VAE + vocoder; save the waveform. With
    ``PROBE_CONTEND`` a second process keeps the GPU busy from before the decode to after it."""
    import torch

    if os.environ.get("PROBE_SET_THREADS"):
        import psutil

        torch.set_num_threads(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    if os.environ.get("PROBE_DETERMINISTIC"):
        torch.use_deterministic_algorithms(True)
    load = None
    if os.environ.get("PROBE_CONTEND") and torch.cuda.is_available():
        load = subprocess.Popen([sys.executable, "-c", _LOAD], stdout=subprocess.PIPE, text=True)
    try:
        contended = load is not None and load.stdout.readline().strip() == "busy"  # its first matmul done
        _decode(out, frames, fps, contended, load)
    finally:
        if load is not None:
            load.kill()
            load.wait()


def _decode(out: Path, frames: int, fps: int, contended: bool, load: subprocess.Popen | None) -> None:
    import numpy as np
    import psutil
    import torch

    from pipeline.memory.offload import enforce_vram_budget, warm_cuda_libraries
    from pipeline.models import ltx2, ltx2_random

    if os.environ.get("PROBE_WARM"):
        warm_cuda_libraries()
    if os.environ.get("PROBE_CAP_GB"):
        enforce_vram_budget(float(os.environ["PROBE_CAP_GB"]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = ltx2_random.component("audio_vae", torch.float32).to(device).eval()
    vocoder = ltx2_random.component("vocoder", torch.float32).to(device).eval()
    per_second = vae.config.sample_rate / vae.config.mel_hop_length / vae.temporal_compression_ratio
    length = round(frames / fps * per_second)
    shape = (1, vae.config.latent_channels, length, vae.config.mel_bins // vae.mel_compression_ratio)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    pipe = type("Pipe", (), {"_execution_device": torch.device(device), "audio_vae": vae, "vocoder": vocoder})()
    waves = [ltx2.decode_audio(pipe, latents)]
    if os.environ.get("PROBE_TWICE"):
        waves.append(ltx2.decode_audio(pipe, latents))
    np.save(out, np.stack(waves))
    # contended: the load ran through the whole decode (a load that died proves nothing)
    print(json.dumps({"threads": torch.get_num_threads(), "physical_cores": psutil.cpu_count(logical=False),
                      "device": device, "latents": list(shape),
                      **({"contended": contended and load.poll() is None} if load is not None else {})}))


SETTINGS = ("plain", "cudnn_deterministic", "deterministic_algorithms", "cudnn_off")


def _within(frames: int, fps: int) -> dict[str, Any]:
    """Three decodes per setting in this process; per stage (the audio VAE's mel, the vocoder's
    waveform): equal every time, and the largest difference."""
    import torch

    from pipeline.models import ltx2_random

    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = ltx2_random.component("audio_vae", torch.float32).to(device).eval()
    vocoder = ltx2_random.component("vocoder", torch.float32).to(device).eval()
    per_second = vae.config.sample_rate / vae.config.mel_hop_length / vae.temporal_compression_ratio
    shape = (1, vae.config.latent_channels, round(frames / fps * per_second),
             vae.config.mel_bins // vae.mel_compression_ratio)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(7)).to(device)
    out: dict[str, Any] = {"device": device}
    for setting in SETTINGS:
        torch.backends.cudnn.deterministic = setting == "cudnn_deterministic"
        torch.backends.cudnn.enabled = setting != "cudnn_off"
        torch.use_deterministic_algorithms(setting == "deterministic_algorithms")
        mels, waves, seconds = [], [], []
        with torch.no_grad():
            for _ in range(3):
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                mel = vae.decode(latents, return_dict=False)[0]
                mels.append(mel.cpu())
                waves.append(vocoder(mel).cpu())  # .cpu() waits for the GPU
                seconds.append(time.perf_counter() - t0)
                # the vocoder on the first decode's mel too: does it vary on the same input?
                waves.append(vocoder(mels[0].to(device)).cpu())
        out[setting] = {
            "mel_equal": all(torch.equal(m, mels[0]) for m in mels),
            "mel_max_abs": max(float((m - mels[0]).abs().max()) for m in mels),
            "vocoder_same_input_equal": all(torch.equal(w, waves[1]) for w in waves[1::2]),
            "wave_equal": all(torch.equal(w, waves[0]) for w in waves[0::2]),
            "wave_max_abs": max(float((w - waves[0]).abs().max()) for w in waves[0::2]),
            "decode_s": [round(t, 4) for t in seconds]}
    torch.backends.cudnn.deterministic, torch.backends.cudnn.enabled = False, True
    torch.use_deterministic_algorithms(False)
    return out


def _write(report: dict[str, Any], out: Path | None) -> str:
    doc = json.dumps(report, indent=1)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc + "\n")
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--within", action="store_true", help="three decodes per setting in one process")
    args = ap.parse_args()
    if args.within:
        print(_write({"bench": "audio_determinism_within", "frames": args.frames,
                      **_within(args.frames, args.fps)}, args.out))
        return 0
    if args.child:
        _child(args.child, args.frames, args.fps)
        return 0
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="audio-det-"))
    report: dict[str, Any] = {"bench": "audio_determinism", "frames": args.frames, "variants": {}}
    waves: dict[str, Any] = {}
    for name, env in VARIANTS.items():
        path = tmp / f"{name}.npy"
        child_env = {**os.environ, **env, **({"PROBE_TWICE": "1"} if name == "plain" else {})}
        r = subprocess.run([sys.executable, __file__, "--child", str(path), "--frames", str(args.frames),
                            "--fps", str(args.fps)], env=child_env, capture_output=True, text=True, check=False)
        row: dict[str, Any] = {"env": env, "returncode": r.returncode}
        if r.returncode != 0:
            row["stderr_tail"] = r.stderr[-1500:]
        else:
            row.update(json.loads(r.stdout.strip().splitlines()[-1]))
            waves[name] = np.load(path)
            row["sha256"] = hashlib.sha256(waves[name][0].tobytes()).hexdigest()[:16]
        report["variants"][name] = row
        _write(report, args.out)  # what finished survives a timeout
    base = waves.get("plain")
    if base is not None:
        report["plain_twice_equal"] = bool(np.array_equal(base[0], base[1]))
        for name, w in waves.items():
            report["variants"][name]["equal_to_plain"] = bool(np.array_equal(w[0], base[0]))
            report["variants"][name]["max_abs_vs_plain"] = float(np.abs(w[0] - base[0]).max())
    print(_write(report, args.out))
    return 0 if all(v["returncode"] == 0 for v in report["variants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
