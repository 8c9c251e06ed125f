"""Memory plans: how a stage places its weights so it fits the VRAM *and* host budgets.

The runner asks :func:`plan_ladder` for an ordered list of plans per stage (fastest
first), tries the first through :func:`run_with_ladder`, and on an out-of-memory error
(CUDA or host) steps down to the next plan that needs less of the memory that ran out.
A pair of budgets no plan fits is refused up front with :class:`PlanError`, before any
weights are loaded.

The model (all sizes in bytes; settings in GB are read as GiB, as cards are sold):

* **Weights** come from the preset: measured file sizes where the files exist, else the
  size a GGUF's entry records, else parameter counts × bytes per parameter of the stored
  format (bf16 2, fp8 1, GGUF Q8_0 1.06, Q4_K_M 0.60, Q3_K_M 0.52 ...; a GGUF entry's
  file name says which, ``…-q8_0.gguf``). A GGUF on disk says its format in its header,
  and a plan names that format and where it was learnt. Default parameter counts were counted on
  the meta device from diffusers 0.42.1's LTX-2 configs; the 22B LTX-2.3 transformer
  keeps LTX-2's 48-block layout.
* **Transformer activations** grow with tokens = (frames-1)/8+1 × h/32 × w/32 (+ audio
  at 25 tokens/s): 0.2 MiB per token at batch 1 (CFG=1). Calibrated on the streamed
  runs of bench/results (H200, 2026-11-27): peak minus weights on the GPU was 0.6 GiB
  at 3646 tokens and 2.3 GiB at 14206 (0.17 MiB/token), the same under diffusers'
  group offload; CFG > 1 doubles the batch.
* **Offload modes** (VRAM, host): resident = all weights + activations; model offload =
  the largest component + its activations, host keeps every weight; block-level group
  offload = non-block weights + 2 blocks + activations (matches the 3.3 / 6.9 GiB peaks
  measured); leaf-level = 2 largest layers + activations; sequential = 1 layer.
  ``use_stream`` group offload keeps a pinned copy beside the pageable one: 2× the
  weights in host RAM unless ``low_cpu_mem_usage`` pins block by block (1× + 2 blocks).
  GGUF weights need a bf16 scratch of the largest layer for dequantization.
  Sulphur's block streamer (``streamer="sulphur"``, pipeline/memory/offload.py) pins each block
  in place (1× host), streams through two slots, and keeps as many blocks resident as
  the VRAM budget leaves room for; an fp8-stored block needs a bf16 upcast buffer.
* **Text encoder** (Gemma 3 12B, 24 GB bf16) runs once per prompt and is evicted:
  resident, block group offload without streams, group offload through disk files, or
  the CPU; when it cannot fit beside what the transformer plan keeps loaded between
  segments, the plan drops the transformer while encoding (``options["evict"]``).
* **Reserves**: the CUDA context (0.5 GiB) is outside a configured VRAM budget, 10% of
  VRAM is kept for fragmentation; the render process itself (torch, CUDA libraries,
  frame buffers) takes about 2.5 GiB of host RAM.
* **VAE decode**: 250 B per output pixel×frame untiled (the draft decode measured
  ~110, so this is conservative); tiled (512² px tiles) it is bounded by one tile at 440 B
  per pixel×frame over 24 frames (2.5 GiB measured beside the weights) plus every decoded
  tile, which diffusers keeps until it blends them (LTX-2 tiles in space only: each tile
  holds all the frames). Beside the decode sit the VAE's weights and, under the block
  streamer, its non-block weights, its two slots and its dequant scratch, which it keeps
  while the transformer is held. The chain bench (bench/results/chain_h200_2026-12-04_run2.json,
  19B Q4_0 at 8 GiB) shows the sum: its refine under stream-lean+vaetiles peaked at
  7.35-7.53 GiB reserved where the estimate without the streamer's buffers and the decoded
  tiles said 5.0 (6.65 with them, 7.3 with 10% fragmentation).
* **ESRGAN x2plus** fp16: 0.55 GiB of VRAM per 1024×576 input frame (2.4 GiB measured
  at batch 4), proportional to pixels; tiles only when one frame does not fit.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.memory import recipes
from pipeline.memory.plan import (
    HOST_RESERVE,
    VRAM_MARGIN,
    Budgets,
    GiB,
    MiB,
    PlanError,
    StagePlan,
    context_cost,
)

if TYPE_CHECKING:
    from pipeline.models.registry import ModelFile, Preset
    from pipeline.project.storyboard import Project

# Deferred imports: torch, psutil, pynvml — plans are made from sizes without them; the probes load them to
#   measure a real machine; gguf — only a GGUF on disk has a header to read

OFFLOAD_MODES = ("resident", "model", "group_block", "group_leaf", "sequential")

#: Bytes per parameter of each stored weight format (GGUF: block size incl. scales).
BYTES_PER_PARAM: dict[str, float] = {
    "float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0,
    "Q8_0": 34 / 32, "Q6_K": 210 / 256, "Q5_K_M": 0.71, "Q5_0": 22 / 32, "Q4_K_M": 0.60,
    "Q4_0": 18 / 32, "Q4_K": 144 / 256, "Q3_K_M": 0.52, "Q3_K": 110 / 256, "Q2_K": 84 / 256,
}


def is_quantized(fmt: str) -> bool:
    """A GGML block format (Q*, IQ*, TQ*): dequantized per layer or block, mapped from its file."""
    return fmt.startswith(("Q", "IQ", "TQ"))


ACT_BYTES_PER_TOKEN = 0.2 * MiB       # transformer activations per token, batch 1, bf16 (measured 0.17)
VAE_BYTES_PER_PIXEL_FRAME = 250       # untiled VAE decode, per output pixel × frame
#: Tiled decode holds more per pixel (overlaps, blend buffers, the widest layers on a
#: whole tile): 2.5 GiB per 512²×16-frame tile beside the weights, measured on the
#: 19B refine at 1024×576×121 (bench/results/segment_budget_*_2026-11-27.json).
VAE_TILE_BYTES_PER_PIXEL_FRAME = 440
VAE_TILE_PIXELS = 512 * 512
VAE_TILE_FRAMES = 16
ESRGAN_BYTES_PER_INPUT_PIXEL = 0.55 * GiB / (1024 * 576)
#: Frames from which compiling the upscaler pays in one process: the default (compiled RRDB
#: block, regrouped dense blocks) compiles in 1.9 s from the persistent cache (2.9 s cold) and
#: saves 2.5 s per 121 frames, so it pays from 93 frames warm, 144 cold (H200,
#: bench/results/esrgan_vs_compiled_h200_2026-12-04.json `compile_pays_from_frames`).
ESRGAN_COMPILE_MIN_FRAMES = 93
AUDIO_TOKENS_PER_SECOND = 25


# --------------------------------------------------------------------------- inputs


def detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def detect_budgets(project: Project | None = None, device: str = "cuda") -> Budgets:
    """The storyboard's ``vram_budget_gb``/``ram_budget_gb``, else free VRAM and available RAM now."""
    vram_gb = project.vram_budget_gb if project else None
    host_gb = project.ram_budget_gb if project else None
    vram_detected = vram_gb is None
    if vram_gb is None:
        vram_gb = _free_vram() / GiB if device.startswith("cuda") else 0.0
    host_detected = host_gb is None
    if host_gb is None:
        import psutil

        # available already excludes this process; add the reserve back so it is not counted twice
        host_gb = (psutil.virtual_memory().available + HOST_RESERVE) / GiB
    b = Budgets.from_gb(vram_gb, host_gb, detected=vram_detected)
    return replace(b, host_setting=None if host_detected else host_gb)


def _free_vram() -> int:
    try:
        import torch

        if torch.cuda.is_available():
            # free now + what this process holds in its allocator (held models can be evicted)
            return int(torch.cuda.mem_get_info()[0]) + int(torch.cuda.memory_reserved())
    except Exception:  # pragma: no cover - broken driver: fall through to NVML
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).free)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


@dataclass(frozen=True)
class Component:
    """One model's weight footprint, as stored."""

    name: str
    params: float
    fmt: str = "bfloat16"
    blocks: int = 0                  # repeated blocks (0: not block-structured)
    block_fraction: float = 1.0      # share of the weights inside the blocks
    largest_layer_params: float = 0  # for leaf-level/sequential and the dequant scratch
    file_bytes: int | None = None    # measured on disk; wins over params × format
    fmt_source: str = ""             # where ``fmt`` was learnt ("": the planner's own table)

    @property
    def nbytes(self) -> int:
        if self.file_bytes is not None:
            return self.file_bytes
        return int(self.params * BYTES_PER_PARAM[self.fmt])

    @property
    def block_bytes(self) -> int:
        return int(self.nbytes * self.block_fraction / self.blocks) if self.blocks else self.nbytes

    @property
    def nonblock_bytes(self) -> int:
        return int(self.nbytes * (1 - self.block_fraction)) if self.blocks else 0

    @property
    def layer_bytes(self) -> int:
        """Largest single layer as stored (leaf-level offload moves these)."""
        bpp = self.nbytes / self.params if self.params else 2.0
        return int((self.largest_layer_params or self.params / max(1, self.blocks * 8)) * bpp)

    @property
    def scratch_bytes(self) -> int:
        """bf16 copy of the largest layer while a quantized layer is dequantized for its matmul."""
        return int((self.largest_layer_params or 0) * 2) if is_quantized(self.fmt) or self.fmt == "fp8" else 0

    def as_format(self, fmt: str) -> Component:
        return replace(self, fmt=fmt, file_bytes=None)


# LTX-2 / LTX-2.3 parameter counts (meta-device counts of diffusers 0.42.1 defaults; the
# transformer scaled to LTX-2.3's 22B). 48 blocks hold 98.2% of the transformer; its
# largest layer is time_embed.linear (100.7M); Gemma 3 12B is the text encoder.
_LTX2_COMPONENTS: dict[str, Component] = {
    "transformer": Component("transformer", 22.0e9, "Q3_K_M", blocks=48, block_fraction=0.982,
                             largest_layer_params=100.7e6),
    "text_encoder": Component("text_encoder", 12.2e9, "bfloat16", blocks=48, block_fraction=0.92,
                              largest_layer_params=1.07e9),  # embedding 262k × 3840 (vocab)
    "connectors": Component("connectors", 1.43e9, "bfloat16", largest_layer_params=16.8e6),
    "vae": Component("vae", 1.22e9, "bfloat16", largest_layer_params=9.4e6),
    "audio": Component("audio", 0.109e9, "bfloat16", largest_layer_params=4.2e6),  # audio VAE + vocoder
    "upsampler": Component("upsampler", 0.498e9, "bfloat16", largest_layer_params=4.7e6),
    "esrgan": Component("esrgan", 16.7e6, "float16", largest_layer_params=37e3),
    "enhancer": Component("enhancer", 12.2e9, "Q3_K_M", blocks=48, block_fraction=0.92,
                          largest_layer_params=1.07e9),
}
_TINY_COMPONENTS = {n: Component(n, 1e6, "Q8_0" if n == "transformer" else "float32",  # tiny GGUF is Q8_0/F32
                                 blocks=2 if n in ("transformer", "text_encoder", "enhancer") else 0,
                                 block_fraction=0.9, largest_layer_params=1e5)
                    for n in _LTX2_COMPONENTS}
#: where each component's files are measured: (preset file role, sub-folder)
_ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    "transformer": (("transformer_gguf", ""), ("transformer", "")),
    "text_encoder": (("diffusers", "text_encoder"), ("text_encoder", "")),
    "connectors": (("diffusers", "connectors"),),
    "vae": (("diffusers", "vae"), ("vae", "")),
    "upsampler": (("upsampler", ""),),
    "esrgan": (("upscaler", ""), ("esrgan", "")),
    "enhancer": (("enhancer", ""),),
}


def component_sizes(preset: Preset) -> dict[str, Component]:
    """Each component's footprint: preset ``extra["memory"]`` overrides, measured files, else defaults."""
    # Built-on-first-use presets are tiny, except full-size random-weight stacks, which
    # state their sizes in extra["memory"], take the real table otherwise, and have no
    # weight files to measure.
    random = bool(preset.extra.get("random_weights"))
    tiny = (preset.builder is not None or preset.name == "tiny") and not random
    table = dict(_TINY_COMPONENTS if tiny else _LTX2_COMPONENTS)
    files = not tiny and not random
    if files:  # a file not on disk yet: as the preset's entry names it
        table.update({n: _as_named(table[n], spec) for n in _GGUF_ROLES
                      if (spec := _gguf_entry(preset, n)) and spec.local_path() is None})
    for name, spec in (preset.extra.get("memory") or {}).items():
        base = table.get(name, Component(name, 0.0))
        table[name] = replace(base, **spec) if isinstance(spec, dict) else replace(base, file_bytes=int(spec))
    if files:
        for name, roles in _ROLES.items():
            size = _measured(preset, roles)
            if size and name in table:
                table[name] = replace(table[name], file_bytes=size)
        table.update({n: _as_read(table[n], spec) for n in _GGUF_ROLES if (spec := _gguf_entry(preset, n))})
    return table


#: Components a preset ships as one GGUF file, and the roles of the entry that names it.
_GGUF_ROLES: dict[str, tuple[str, ...]] = {"transformer": ("transformer_gguf", "transformer"),
                                           "enhancer": ("enhancer",)}
#: GGML's float type names as the planner's formats.
_GGML_FLOATS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _gguf_entry(preset: Preset, name: str) -> ModelFile | None:
    """The preset's entry for component ``name`` when it is one GGUF file."""
    for role in _GGUF_ROLES[name]:
        try:
            spec = preset.file(role)
        except KeyError:
            continue
        if _entry_file_name(spec).lower().endswith(".gguf"):
            return spec
    return None


def _entry_file_name(spec: ModelFile) -> str:
    return Path(spec.filename if isinstance(spec.filename, str) and spec.filename else spec.path).name


def _as_named(c: Component, spec: ModelFile) -> Component:
    """``c`` as the preset's entry names its file: the size it records, the quantization its
    file name carries (``…-Q3_K_M.gguf``, ``…-q8_0.gguf``), else the table's guess."""
    token = Path(_entry_file_name(spec)).stem.replace(".", "-").rsplit("-", 1)[-1].upper()
    fmt = _GGML_FLOATS.get(token, token)
    if fmt not in BYTES_PER_PARAM:
        return replace(c, file_bytes=spec.size) if spec.size else c
    return replace(c, fmt=fmt, file_bytes=spec.size or None, fmt_source="per the preset; file absent")


def _as_read(c: Component, spec: ModelFile) -> Component:
    """``c`` stored as the GGUF on disk says (its header), when the file is there."""
    path = spec.local_path()
    if path is None or not path.is_file():
        return c
    st = path.stat()
    fmt = _gguf_format(path, st.st_size, st.st_mtime_ns)
    return replace(c, fmt=fmt, fmt_source="read from the GGUF") if fmt else c


@functools.lru_cache(maxsize=64)
def _gguf_format(path: Path, _size: int, _mtime_ns: int) -> str | None:
    """The format one version of a GGUF file holds its weights in: the mix its
    ``general.file_type`` names (Q3_K_M holds Q3_K, Q4_K and Q5_K tensors), else the type that
    stores most of its weights. None for a file gguf-py cannot read (the loader says why)."""
    import gguf  # deferred: see the module's deferred imports

    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError, IndexError, struct.error):
        return None
    field = reader.get_field("general.file_type")
    try:
        ftype = gguf.LlamaFileType(int(field.contents())).name if field is not None else "GUESSED"
    except (TypeError, ValueError):
        ftype = "GUESSED"
    if ftype != "GUESSED":
        name = ftype.split("_", 1)[1]  # MOSTLY_Q3_K_M, ALL_F32
    else:
        weights: dict[str, int] = {}
        for t in reader.tensors:
            weights[t.tensor_type.name] = weights.get(t.tensor_type.name, 0) + int(t.n_elements)
        if not weights:
            return None
        name = max(weights, key=weights.__getitem__)
    return _GGML_FLOATS.get(name, name)


def _measured(preset: Preset, roles: Sequence[tuple[str, str]]) -> int | None:
    for role, sub in roles:
        try:
            path = preset.file(role).local_path()
        except KeyError:
            continue
        if path is not None and (path / sub if sub else path).exists():
            return _disk_size(path / sub if sub else path) or None
    return None


def _disk_size(path: Path) -> int:
    """Bytes the weights take once loaded. A safetensors file counts its float tensors at 2 bytes
    each: the loaders cast them to the plan's 16-bit dtype, and diffusers/LTX-2.3-Diffusers stores
    its text encoder and connectors in fp32 (48.75 + 12.7 GB on disk, half that loaded)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                           and p.suffix in (".safetensors", ".gguf", ".bin", ".pth")]
    return sum(_safetensors_loaded_bytes(f) if f.suffix == ".safetensors" else f.stat().st_size for f in files)


#: safetensors float dtypes wider than 16 bits, which the loaders cast to bf16/fp16.
_WIDE_FLOATS = {"F32": 4, "F64": 8}


def _safetensors_loaded_bytes(path: Path) -> int:
    """A safetensors file's size with its fp32/fp64 tensors counted at 2 bytes (header only is read)."""
    st = path.stat()
    return _loaded_bytes(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _loaded_bytes(path: Path, size: int, _mtime_ns: int) -> int:
    """:func:`_safetensors_loaded_bytes` for one version of a file (every stage's plan asks again)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n)) if 0 < n < size else {}
    except (OSError, ValueError, struct.error):
        return size
    saved = 0
    for name, info in header.items():
        width = _WIDE_FLOATS.get(info.get("dtype", "")) if name != "__metadata__" else None
        if width:
            start, end = info["data_offsets"]
            saved += (end - start) * (width - 2) // width
    return size - saved


def video_tokens(size: tuple[int, int], frames: int) -> int:
    """Latent tokens of LTX-2 (VAE 8× in time, 32× in space, patch 1)."""
    w, h = size
    return ((frames - 1) // 8 + 1) * max(1, h // 32) * max(1, w // 32)


def audio_tokens(frames: int, fps: int) -> int:
    return math.ceil(frames / fps * AUDIO_TOKENS_PER_SECOND) + 1


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class _Est:
    vram: int          # peak while running
    host: int          # peak while running (pageable + pinned)
    pinned: int = 0
    held_vram: int = 0  # kept between runs (LoadedModels holds the component)
    held_host: int = 0


def _weights_mode(c: Component, mode: str, act: int, *, stream: bool, low_cpu: bool,
                  mmap: bool = False) -> _Est:
    """VRAM / host peak of one component running under ``mode`` with ``act`` bytes of activations.

    ``mmap``: the weights stay pages of the memory-mapped GGUF file (reclaimable page
    cache, re-read from disk under pressure), so only pinned copies count against RAM.
    """
    w = c.nbytes
    pageable = 0 if mmap else w
    scratch = c.scratch_bytes
    if mode == "resident":
        # a safetensors/bf16 load passes through RAM once; GGUF pages are mapped, then copied
        return _Est(w + act + scratch, 0 if is_quantized(c.fmt) else pageable, held_vram=w)
    if mode == "model":
        return _Est(w + act + scratch, pageable, held_host=pageable)
    if mode == "group_block" and c.blocks:
        vram = c.nonblock_bytes + 2 * c.block_bytes + act + scratch
        pinned = (2 * c.block_bytes if low_cpu else w) if stream else 0
        return _Est(vram, pageable + pinned, pinned, held_host=pageable + pinned)
    if mode in ("group_block", "group_leaf"):
        vram = 2 * c.layer_bytes + act + scratch
        pinned = (2 * c.layer_bytes if low_cpu else w) if stream else 0
        return _Est(vram, pageable + pinned, pinned, held_host=pageable + pinned)
    if mode == "sequential":
        return _Est(c.layer_bytes + act + scratch, pageable, held_host=pageable)
    if mode == "cpu":
        return _Est(0, w + act)
    raise ValueError(mode)


@dataclass(frozen=True)
class _Job:
    stage: str
    draft_size: tuple[int, int]
    refine_size: tuple[int, int]
    output_size: tuple[int, int]
    frames: int
    fps: int
    audio: bool
    batch: int  # 2 with CFG > 1
    stream_fp8: bool = False  # preset allows fp8 storage of streamed bf16 weights first


def _job_from(preset: Preset, project: Project, stage: str, frames: int | None) -> _Job:
    draft = preset.round_size(project.draft_size or preset.draft_size)
    refine = preset.round_size(project.refine_size or preset.refine_size)
    return _Job(stage=stage, draft_size=draft, refine_size=refine, output_size=project.output_size,
                frames=preset.round_frames(frames or 121), fps=project.fps, audio=project.audio and preset.audio,
                batch=2 if preset.guidance_scale > 1.0 else 1,
                stream_fp8=bool(preset.extra.get("stream_fp8", False)))


def _transformer_act(job: _Job, size: tuple[int, int], with_audio: bool) -> int:
    tokens = video_tokens(size, job.frames) + (audio_tokens(job.frames, job.fps) if with_audio else 0)
    return int(tokens * ACT_BYTES_PER_TOKEN * job.batch)


def _vae_decode(size: tuple[int, int], frames: int, tile: int) -> int:
    """Decode working set; ``tile`` is the tile edge in pixels (0 = untiled).

    diffusers' LTX-2 VAE tiles in space only: each tile is decoded over all frames and kept
    until the tiles are blended, so a tiled decode holds one tile's working set plus every
    decoded tile (:func:`_decoded_tiles`), and at the blend two more clips beside the tiles:
    ``tiled_decode`` concatenates each row's blended tiles, then the rows. Without those two
    the 19B refine at 1024×576×121 peaked 1.0 GiB over its estimate under 256 px tiles
    (bench/results/chain_h200_2026-12-04_run3.json: 5.74 GiB allocated against 4.72)."""
    w, h = size
    full = w * h * frames * VAE_BYTES_PER_PIXEL_FRAME
    if not tile:
        return full
    blend = 2 * w * h * frames * 3 * 2  # the rows and the clip, bf16 RGB
    return min(full, tile * tile * (VAE_TILE_FRAMES + 8) * VAE_TILE_BYTES_PER_PIXEL_FRAME) \
        + _decoded_tiles(size, frames, tile) + blend


def _decoded_tiles(size: tuple[int, int], frames: int, tile: int) -> int:
    """Bytes of every decoded tile held until the blend (bf16 RGB, overlaps included): tiles start
    every 7/8 of an edge, as :func:`pipeline.memory.offload.enable_vae_tiling` sets them."""
    stride = tile * 7 // 8

    def extents(n: int) -> int:
        return sum(min(tile, n - start) for start in range(0, n, stride))

    return extents(size[0]) * extents(size[1]) * frames * 3 * 2


#: VAE tile edges the planner tries, fastest first: untiled, diffusers' default 512 px,
#: then 256 px tiles (a quarter of the working set, for 6 GB cards).
VAE_TILES = (0, 512, 256)


#: (offload mode, use_stream, low_cpu_mem_usage, mmap) from fastest to leanest;
#: "stream" is Sulphur's block streamer (pipeline/memory/offload.py), measured faster than
#: diffusers' block-level group offload (bench/results) and pinned in place (1× host)
_TRANSFORMER_RUNGS: tuple[tuple[str, bool, bool, bool], ...] = (
    ("resident", False, False, False),
    ("model", False, False, False),
    ("stream", True, False, False),
    ("group_block", True, False, False),
    ("group_block", True, True, False),
    ("group_leaf", True, True, False),
    ("group_block", False, False, False),
    ("group_block", False, False, True),   # GGUF files only
    ("sequential", False, False, False),
    ("sequential", False, False, True),    # GGUF files only
)
#: text encoder placements, fastest first. No streams: it runs once per prompt, so
#: pinning 24 GB would cost more than the copies it speeds up.
_TEXT_RUNGS = ("resident", "group", "disk", "cpu")


def _rung_name(mode: str, stream: bool, low_cpu: bool, mmap: bool = False) -> str:
    return mode + ("+stream" if stream else "") + ("+lowmem" if low_cpu else "") + ("+mmap" if mmap else "")


def _text_estimates(comps: dict[str, Component]) -> list[tuple[str, _Est]]:
    """Text encoder then connectors, one after the other (each evicted after its run)."""
    te, conn = comps["text_encoder"], comps["connectors"]
    act = 256 * MiB
    out = []
    for mode in _TEXT_RUNGS:
        if mode == "disk":  # group offload through files on disk: two blocks + the embedding in RAM
            e = _Est(te.nonblock_bytes + 2 * te.block_bytes + act, te.nonblock_bytes + 2 * te.block_bytes)
        else:
            e = _weights_mode(te, "group_block" if mode == "group" else mode, act, stream=False, low_cpu=False)
        conn_vram = 0 if mode == "cpu" else conn.nbytes + act
        out.append((mode, _Est(max(e.vram, conn_vram), e.host + conn.nbytes)))
    return out


def _streamer_estimate(t: Component, act: int, decode_phase: int, b: Budgets) -> tuple[_Est, int]:
    """Sulphur's streamer: non-block weights + two slots + the upcast/dequant scratch +
    activations while it denoises; what it keeps between calls (non-block weights, slots, the
    block-dequant scratch) beside the VAE decode and the upsampler; plus as many resident
    blocks as the VRAM budget leaves room for."""
    blk = t.block_bytes
    kept = 0  # buffers BlockStreamer allocates once and holds while the transformer is held
    if t.fmt == "fp8":
        upcast = int(t.block_bytes * 2 / max(1e-9, BYTES_PER_PARAM.get(t.fmt, 2.0)))
    elif is_quantized(t.fmt):
        # dequant="block": one bf16 scratch the size of a block (kept), plus the per-layer
        # scratch of the GGUF layers outside the blocks.
        kept = int(t.params * t.block_fraction / max(1, t.blocks) * 2)
        upcast = kept + t.scratch_bytes
    else:
        upcast = t.scratch_bytes
    # The slots and the scratch sit beside the VAE decode and the upsampler too
    # (pipeline/memory/offload.py BlockStreamer.__init__), not only beside the denoise.
    held = t.nonblock_bytes + 2 * blk + kept
    base = max(t.nonblock_bytes + 2 * blk + upcast + act, held + decode_phase)
    k = max(0, min(t.blocks - 2, (b.vram - base) // blk)) if blk else 0
    w = t.nbytes
    return _Est(base + k * blk, w, w, held_vram=held + k * blk, held_host=w), k


def _transformer_plans(stage: str, job: _Job, comps: dict[str, Component], device: str,
                       b: Budgets) -> list[StagePlan]:
    """Candidate plans for draft/refine, fastest first, with estimates; not yet filtered."""
    tr = comps["transformer"]
    size = job.draft_size if stage == "draft" else job.refine_size
    act = _transformer_act(job, size, with_audio=job.audio and stage == "draft")
    vae = comps["vae"]
    side = [comps["audio"]] if job.audio and stage == "draft" else []
    if stage == "refine":
        side.append(comps["upsampler"])
    side_bytes = vae.nbytes + sum(c.nbytes for c in side)
    # The upsampler stays loaded from one refine to the next (reloading and re-pinning it took
    # ~2 s of each capped segment, bench/results/chain_h200_2026-12-04_run5.json), so a draft
    # holds it too. It is counted in host RAM, where any but a resident refine leaves it (a Ray
    # draft actor, which never refines, is over-counted by its ~1 GB). After a resident refine it
    # is on the GPU: a draft parks it in host RAM (options["park"]) unless the draft is resident
    # with room for it beside its own weights.
    between = comps["upsampler"].nbytes if stage == "draft" and "upsampler" in comps else 0
    weights_options = [tr.fmt] + (["fp8"] if tr.fmt in ("bfloat16", "float16", "float32") else [])
    out: list[StagePlan] = []
    for rung, stream, low_cpu, mmap in _TRANSFORMER_RUNGS:
        if rung == "stream" and tr.blocks < 1:
            continue  # Sulphur's streamer moves repeated blocks; a model without them cannot use it
        mode = "group_block" if rung == "stream" else rung
        order = weights_options[::-1] if rung == "stream" and job.stream_fp8 else weights_options
        for wfmt in order:
            if mmap and not is_quantized(wfmt):
                continue
            t = tr if wfmt == tr.fmt else tr.as_format(wfmt)
            est = _weights_mode(t, mode, act, stream=stream, low_cpu=low_cpu, mmap=mmap)
            # The streamer's "lean" twin keeps no block on the GPU: the first rung to fall
            # back to, since a held model is re-streamed in place rather than reloaded.
            leans = (False, True) if rung == "stream" else (False,)
            for tile, lean in ((tile, lean) for tile in VAE_TILES for lean in leans):
                dec = _vae_decode(size, job.frames, tile)
                extra: dict[str, Any] = {}
                if rung == "stream":
                    dec_phase = max([vae.nbytes + dec] + [c.nbytes for c in side])
                    est, k = _streamer_estimate(t, act, dec_phase, b)
                    if lean:
                        if k == 0:
                            continue
                        est = _Est(est.vram - k * t.block_bytes, est.host, est.pinned,
                                   held_vram=est.held_vram - k * t.block_bytes, held_host=est.held_host)
                        k = 0
                    vram, held_vram = est.vram, est.held_vram
                    extra = {"streamer": "sulphur", "resident_blocks": k}
                    if is_quantized(wfmt):
                        # Dequantize each streamed block once, not each layer (1.05× vs 1.14× resident, H200).
                        extra["dequant"] = "block"
                elif mode == "resident":  # everything stays on the GPU, decode beside the weights
                    vram = max(est.vram + side_bytes, t.nbytes + side_bytes + dec)
                    held_vram = t.nbytes + side_bytes
                    # steps replayed as a CUDA graph (pipeline/memory/cuda_graphs.py); fp8 storage
                    # upcasts each layer in a hook, which no graph records
                    if device != "cpu" and wfmt != "fp8":
                        extra = {"cuda_graph": True}
                else:  # other components swap in one at a time while the transformer is offloaded
                    vram = max(est.vram, max([vae.nbytes + dec] + [c.nbytes for c in side]) + t.nonblock_bytes)
                    held_vram = 0
                # what stays held besides the transformer (a draft that evicts it keeps these)
                side_vram = side_bytes if mode == "resident" else 0
                side_host = between + (0 if mode == "resident" else side_bytes)
                notes = _transformer_notes(t, wfmt, low_cpu, mmap, extra)
                out.append(StagePlan(
                    name=(rung + ("-lean" if lean else "") if rung == "stream"
                          else _rung_name(mode, stream, low_cpu, mmap))
                    + ("/fp8" if wfmt == "fp8" else "")
                    + ({0: "", 512: "+vaetiles"}.get(tile, f"+vaetiles{tile}")),
                    device=device, offload=mode, vae_tiling=bool(tile), dtype="bfloat16", notes=tuple(notes),
                    options={"weights": wfmt, "use_stream": stream, "low_cpu_mem_usage": low_cpu, "mmap": mmap,
                             "num_blocks_per_group": 1, "vram_bytes": int(vram),
                             "host_bytes": int(est.host + side_bytes + between), "pinned_bytes": est.pinned,
                             "held_vram_bytes": held_vram, "held_host_bytes": est.held_host + side_bytes + between,
                             "side_held_vram_bytes": side_vram, "side_held_host_bytes": side_host,
                             "activation_bytes": act, "component": "transformer", "vae_tile": tile,
                             **({"weights_source": t.fmt_source} if t.fmt_source else {}), **extra,
                             **({"upsampler_bytes": between} if between else {})}))
    return out


def _transformer_notes(t: Component, wfmt: str, low_cpu: bool, mmap: bool, extra: dict[str, Any]) -> list[str]:
    """What a transformer plan trades, in words the TUI shows."""
    notes = []
    if wfmt == "fp8":
        notes.append("transformer stored in fp8, upcast to bf16 per layer (slightly lossy)")
    if low_cpu:
        notes.append("pins one block at a time (slower copies, half the host RAM)")
    if mmap:
        notes.append("weights paged from the memory-mapped file (disk-speed when RAM is short)")
    if extra.get("cuda_graph"):
        notes.append("steps after the first two replayed as a CUDA graph (one launch instead of thousands)")
    if "resident_blocks" in extra:
        notes.append(f"streams {t.blocks - extra['resident_blocks']} of {t.blocks} blocks through "
                     f"two GPU slots; weights pinned in place (one host copy)")
    return notes


def esrgan_compile_pays(frames: int, plan: StagePlan) -> bool:
    """Whether compiling the upscaler pays for ``frames`` upscaled in one process: CUDA,
    untiled (tiles change shapes, which recompiles), and enough frames to earn the compile."""
    return (plan.device == "cuda" and not plan.options.get("esrgan_tile")
            and frames >= ESRGAN_COMPILE_MIN_FRAMES)


def _upscale_plans(job: _Job, comps: dict[str, Component], device: str) -> list[StagePlan]:
    esr = comps["esrgan"]
    w, h = job.refine_size
    per_frame = int(w * h * ESRGAN_BYTES_PER_INPUT_PIXEL)
    # host: input frames + 2× output frames (uint8) + one float16 batch on the way back
    out_bytes = job.output_size[0] * job.output_size[1] * 3 * job.frames
    host_base = w * h * 3 * job.frames + 2 * out_bytes + esr.nbytes
    # two batches in flight on CUDA: uint8 results on the device, pinned uint8 buffers on the host
    in_flight = 2 * (w * h * 3 + job.output_size[0] * job.output_size[1] * 3)
    plans = []
    for batch in (8, 4, 2, 1):
        vram = esr.nbytes + batch * per_frame + batch * in_flight
        host = host_base + batch * (2 * w) * (2 * h) * 3 * 2 + batch * in_flight
        plans.append(StagePlan(name=f"batch{batch}", device=device, offload="resident", dtype="float16",
                               options={"esrgan_batch": batch, "esrgan_tile": 0, "vram_bytes": vram,
                                        "host_bytes": host, "component": "esrgan"}))
    for tile in (512, 256, 128):
        vram = esr.nbytes + int(tile * tile * ESRGAN_BYTES_PER_INPUT_PIXEL * 1.3)  # overlap padding
        plans.append(StagePlan(name=f"tiles{tile}", device=device, offload="resident", dtype="float16",
                               notes=("frames split into tiles: slower",),
                               options={"esrgan_batch": 1, "esrgan_tile": tile, "vram_bytes": vram,
                                        "host_bytes": host_base, "component": "esrgan"}))
    return plans


def _enhance_plans(comps: dict[str, Component], device: str) -> list[StagePlan]:
    """llama.cpp: as many layers on the GPU as fit, the rest run on the CPU from the mapped file."""
    llm = comps["enhancer"]
    layers = llm.blocks or 1
    per_layer = llm.nbytes * llm.block_fraction / layers
    kv = 512 * MiB
    plans = []
    for frac in (1.0, 0.75, 0.5, 0.25, 0.0):
        n = int(layers * frac)
        vram = int(n * per_layer + (llm.nonblock_bytes if n == layers else 0) + (kv if n else 0))
        host = int(llm.nbytes - n * per_layer)  # mmap'd, but the CPU layers are touched every token
        plans.append(StagePlan(name=f"llm-gpu{n}" if n else "llm-cpu", device=device if n else "cpu",
                               offload="resident" if n in (0, layers) else "group_block",
                               dtype="float16", options={"n_gpu_layers": -1 if n == layers else n,
                                                         "vram_bytes": vram, "host_bytes": host,
                                                         "component": "enhancer"}))
    return plans


def _attach_text(plans: list[StagePlan], comps: dict[str, Component], b: Budgets) -> list[StagePlan]:
    """Draft also encodes the prompt (then evicts the encoder). For each transformer plan:
    the fastest text placement that fits beside what that plan keeps loaded between
    segments and the one needing the least RAM, then the same with the transformer
    dropped while the prompt is encoded (the ladder's dedupe keeps the useful ones)."""
    out = []
    texts = _text_estimates(comps)
    # With room for every component at once, the encoder stays in host RAM between
    # segments instead of being loaded again for each prompt.
    everything = sum(c.nbytes for name, c in comps.items() if name != "enhancer")
    for p in plans:
        held_v, held_h = p.options["held_vram_bytes"], p.options["held_host_bytes"]
        for evict in (False, True):
            # evicting drops the transformer only: the VAEs and the upsampler stay held
            extra_v, extra_h = ((p.options.get("side_held_vram_bytes", 0), p.options.get("side_held_host_bytes", 0))
                                if evict else (held_v, held_h))
            fits = [(m, e) for m, e in texts if e.vram + extra_v <= b.vram and e.host + extra_h <= b.host]
            if not fits:
                continue
            picks = [fits[0]] + [x for x in [min(fits, key=lambda me: me[1].host)] if x is not fits[0]]
            for mode, e in picks:
                # Disk-offloaded, it holds only a few layers in RAM once its files are written:
                # keeping it saves loading 24 GB per segment beside the held transformer.
                # Otherwise only when everything fits at once (pinned bytes counted on top:
                # conservative for the streamer, which pins in place).
                keep = not evict and (mode == "disk" or everything + p.options.get("pinned_bytes", 0) <= b.host)
                then = "kept in host RAM for the next segment" if keep else "evicted"
                notes = p.notes + (f"text encoder ({mode}) runs first, then is {then}",)
                if evict:
                    notes += ("transformer dropped while the prompt is encoded (reloaded after)",)
                opts = dict(p.options, text_encoder=mode, text_vram_bytes=e.vram, text_host_bytes=e.host,
                            evict=["transformer"] if evict else [], keep_text_encoder=keep,
                            vram_bytes=max(p.vram_bytes, e.vram + extra_v),
                            host_bytes=max(p.host_bytes, e.host + extra_h))
                # The upsampler a resident refine left on the GPU: parked in host RAM at the
                # draft's start unless the draft is resident with room for it in every phase.
                up = p.options.get("upsampler_bytes", 0)
                if up and not (p.offload == "resident" and opts["vram_bytes"] + up <= b.vram):
                    opts["park"] = ["upsampler"]
                name = f"{p.name}/text-{mode}" + ("-evict" if evict else "")
                out.append(replace(p, name=name, notes=notes, options=opts))
    return out


def _fits(p: StagePlan, b: Budgets) -> bool:
    return p.vram_bytes <= b.vram and p.host_bytes <= b.host


def _refuse(stage: str, plans: list[StagePlan], b: Budgets, job: _Job, component: str | None = None,
            fits_at: Callable[[tuple[int, int]], bool] | None = None) -> PlanError:
    """Explain the shortfall of the leanest plan on the side that is short. ``fits_at(size)``
    says whether some plan of the stage fits at another draft/refine size: a size is offered
    only if the planner itself would accept it."""
    vram_low = min(plans, key=lambda p: p.vram_bytes)
    component = component or vram_low.options.get("component", stage)
    if vram_low.vram_bytes > b.vram:
        need = vram_low.vram_bytes
        setting = math.ceil(need / (1 - VRAM_MARGIN) / GiB + context_cost() / GiB)
        hint = f"set vram_budget_gb = {setting} or more"
        if stage in ("draft", "refine") and fits_at is not None:
            key = "draft_size" if stage == "draft" else "refine_size"
            smaller = _largest_fitting_size(job.draft_size if stage == "draft" else job.refine_size, fits_at)
            if smaller is not None:
                hint += f", or a smaller {key} such as [{smaller[0]}, {smaller[1]}] or fewer frames per segment"
        return PlanError(stage, component, "VRAM", need, b.vram, hint)
    # some plan fits the VRAM, so host RAM is what is short: name the leanest such plan
    low = min((p for p in plans if p.vram_bytes <= b.vram), key=lambda p: p.host_bytes)
    need = low.host_bytes
    setting = math.ceil((need + HOST_RESERVE) / GiB)
    what = "host RAM (pinned + pageable)" if low.options.get("pinned_bytes") else "host RAM"
    return PlanError(stage, component, what, need, b.host,
                     f"set ram_budget_gb = {setting} or more (plan {low.name}), or use a smaller "
                     f"quantized file for it")


def _largest_fitting_size(size: tuple[int, int], fits_at: Callable[[tuple[int, int]], bool],
                          ) -> tuple[int, int] | None:
    """The largest size of the same shape (sides multiples of 32, 5% steps) at which some plan
    fits; None when not even the smallest does (then the hint names only the budget)."""
    seen = set()
    for k in range(1, 100):
        scale = 0.95 ** k
        smaller = (max(32, int(size[0] * scale) // 32 * 32), max(32, int(size[1] * scale) // 32 * 32))
        if smaller in seen:
            continue
        seen.add(smaller)
        if fits_at(smaller):
            return smaller
        if smaller == (32, 32):
            break
    return None


def plan_ladder(stage: str, preset: Preset, project: Project, device: str | None = None, *,
                budgets: Budgets | None = None, frames: int | None = None) -> list[StagePlan]:
    """Plans for ``stage`` from fastest to leanest that fit both budgets.

    Without CUDA this is a single CPU plan (the tiny CI path). Raises :class:`PlanError`
    when no plan fits, before anything is loaded. ``frames`` is the longest segment
    (default 121); ``budgets`` overrides the storyboard settings / detection.
    """
    device = device or detect_device()
    if device == "cpu":
        return cpu_ladder()
    if preset.family != "ltx2" and stage in ("draft", "refine"):
        # the I2V families carry measured recipe ladders (pipeline/memory/recipes.py);
        # their refine is a resize without a model
        if stage == "refine":
            return [_CPU_PLANS["cpu"]]
        try:
            return recipes.plans(preset, device, preset.round_size(project.draft_size or preset.draft_size),
                                 preset.round_frames(frames or 121))
        except KeyError:
            pass  # no recipe: plan it like LTX-2 from its sizes
    b = budgets or detect_budgets(project, device)
    comps = component_sizes(preset)
    job = _job_from(preset, project, stage, frames)
    if stage in ("draft", "refine"):
        candidates = _transformer_plans(stage, job, comps, device, b)
        if stage == "draft":
            with_text = _attach_text(candidates, comps, b)
            if not with_text:
                # each placement beside what each plan still holds with the transformer evicted
                # (VAEs, the upsampler), as _attach_text tries them
                held = {(p.options.get("side_held_vram_bytes", 0), p.options.get("side_held_host_bytes", 0))
                        for p in candidates}
                texts = [StagePlan(name=f"text-{m}", options={"vram_bytes": e.vram + v, "host_bytes": e.host + h,
                                                              "component": "text_encoder"})
                         for v, h in sorted(held) for m, e in _text_estimates(comps)]
                raise _refuse(stage, texts, b, job, "text encoder + connectors")
            candidates = with_text
    elif stage == "upscale":
        candidates = _upscale_plans(job, comps, device)
    elif stage == "enhance":
        candidates = _enhance_plans(comps, device)
    else:  # encode, and anything without big weights
        return [_CPU_PLANS["cpu"]]
    ladder = _dedupe([p for p in candidates if _fits(p, b)])
    if not ladder:
        def fits_at(size: tuple[int, int]) -> bool:
            resized = replace(job, **{"draft_size" if stage == "draft" else "refine_size": size})
            plans = _transformer_plans(stage, resized, comps, device, b)
            return any(_fits(p, b) for p in (_attach_text(plans, comps, b) if stage == "draft" else plans))

        raise _refuse(stage, candidates, b, job, fits_at=fits_at if stage in ("draft", "refine") else None)
    return ladder


_CPU_PLANS = {
    "cpu": StagePlan(name="cpu", device="cpu", offload="resident", dtype="float32",
                     options={"keep_text_encoder": True}),
    # host RAM can run out too: the lean rung tiles the VAE, upscales one frame at a time
    # and drops every held model between stages
    "cpu-lean": StagePlan(name="cpu-lean", device="cpu", offload="resident", vae_tiling=True, dtype="float32",
                          options={"batch": 1, "esrgan_batch": 1, "evict_between_stages": True}),
}


def cpu_ladder() -> list[StagePlan]:
    """One CPU plan (the tiny CI path), or the rungs named in ``$SULPHUR_DEVICE_LADDER``
    (comma-separated, e.g. ``cpu,cpu-lean``) so tests can exercise a fallback on a CPU."""
    names = [n.strip() for n in os.environ.get("SULPHUR_DEVICE_LADDER", "cpu").split(",")]
    return [_CPU_PLANS[n] for n in names if n in _CPU_PLANS] or [_CPU_PLANS["cpu"]]


def _dedupe(plans: list[StagePlan]) -> list[StagePlan]:
    """Keep a plan only if it needs less VRAM or less host RAM than every plan before it:
    a fallback that is no leaner on either side could never survive the OOM that led to it."""
    out: list[StagePlan] = []
    for p in plans:
        if any(q.vram_bytes <= p.vram_bytes and q.host_bytes <= p.host_bytes for q in out):
            continue
        out.append(p)
    return out


# --------------------------------------------------------------------------- running a ladder


def oom_kind(exc: BaseException) -> str | None:
    """"cuda" for a GPU allocation failure, "host" for RAM, None for anything else."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return "cuda"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return "host"
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        if "cuda" in text and ("out of memory" in text or "memoryallocation" in text or "alloc_failed" in text):
            return "cuda"
        if "can't allocate memory" in text or "cannot allocate memory" in text or "defaultcpuallocator" in text:
            return "host"
        if "out of memory" in text:
            return "cuda"
    return None


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory and host allocation failures."""
    return oom_kind(exc) is not None


def beside_held(plans: Sequence[StagePlan], room: int | None) -> list[StagePlan]:
    """The ladder with the plans that fit ``room`` (VRAM left beside models a stage does not
    use but the worker keeps for the next segment) moved to the front, in ladder order.

    Running ESRGAN at batch 1 beside the held transformer costs ~10 % of its frames/s
    (H200: 20.6 vs 22.6 frames/s); the OOM that batch 4 met there instead (measured in the
    whole-segment bench) evicted the transformer, which the next segment's draft rebuilt.
    """
    if room is None:
        return list(plans)
    beside = [p for p in plans if p.vram_bytes and p.vram_bytes <= room]
    return beside + [p for p in plans if p not in beside]


def vram_room(project: Project | None) -> int | None:
    """VRAM left in this process's budget beside what it already holds; None without CUDA
    or when nothing is held."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if not torch.cuda.is_available() or not torch.cuda.memory_allocated():
        return None
    return detect_budgets(project, "cuda").vram - int(torch.cuda.memory_allocated())


def plan_summary(ladders: dict[str, list[StagePlan]]) -> str:
    """One line per stage: the first plan of each ladder (what will be tried)."""
    return "\n".join(f"{stage}: {plans[0].describe()}" + (f" (+{len(plans) - 1} fallbacks)" if len(plans) > 1 else "")
                     for stage, plans in ladders.items())

