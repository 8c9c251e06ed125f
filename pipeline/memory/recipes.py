"""Memory recipes for the I2V draft families, as data.

Each real preset has an ordered ladder of recipes, fastest first; the tiny twin of a
preset names its real twin in ``extra["recipe"]`` and so inherits the same ladder on a
GPU. A recipe says how the draft stage places every component — where the text encoder
runs, which offload mode the denoiser gets, VAE tiling, UNet forward chunking — so the
stage applies data instead of branching per model.

Source: the brief, shared/seeds/003 ("six models compared on a 12 GB RTX 4070 Ti", 125 GB RAM):

* T5 / umT5-XXL is ~11 GB: encode the prompt on the CPU in fp32 (bf16 matmuls on CPU
  are pathologically slow), cast the embeddings, drop the encoder, then start the video
  model — the encoder never touches the GPU.
* Wan2.2-TI2V-5B: model offload at 640×384 (~3 min a clip).
* Wan2.2-I2V-A14B GGUF Q4 (two ~9 GB experts): model offload + CPU prompt at 640×384
  (~8 min); at 1280×720 model offload peaks at ~11.7 GB and holds only ~13 frames, while
  leaf-level group offload with streams on both experts + VAE tiling peaks at 1.9 GB
  (~20 min). Sequential offload breaks GGUF (accelerate's meta-device step drops the
  quant type), so it is never on a GGUF ladder.
* SVD img2vid-xt: model offload + ``unet.enable_forward_chunking()`` at 1024×576 (~2 min).
* LTX-Video 2B: sequential offload (its T5 is the same 11 GB trap) at 768×512 (~3 min).
* CogVideoX-5B-I2V: sequential + VAE tiling at 720×480, 49 frames (~1 h).

Torch-free: the memory planner and ``sulphur models`` may read this without loading
anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.memory.plan import StagePlan

if TYPE_CHECKING:
    from pipeline.models.registry import Preset

#: Where the prompt is encoded. ``cpu_fp32``: on the CPU in fp32, embeddings cast to the
#: run dtype, encoder evicted before the video model loads. ``with_pipeline``: the text
#: encoder is placed like every other component (only sensible on big cards).
TEXT_PLACEMENTS = ("cpu_fp32", "with_pipeline")


@dataclass(frozen=True)
class Recipe:
    """How one draft run places its components (applied by ``pipeline.models.family.apply_recipe``)."""

    name: str
    offload: str                       # resident | model | group_leaf | group_block | sequential
    use_stream: bool = False           # group offload: prefetch on a side CUDA stream
    text_encoder: str = "cpu_fp32"     # see TEXT_PLACEMENTS
    vae_tiling: bool = False
    forward_chunking: bool = False     # UNet feed-forward in chunks (SVD)
    decode_chunk_size: int | None = None  # frames decoded at once (SVD)
    dtype: str = "bfloat16"
    #: Largest draft the brief ran with this recipe within 12 GB: (width, height, frames).
    measured: tuple[int, int, int] | None = None
    #: Smallest draft measured to overflow 12 GiB with this recipe (bench/family_fit.py).
    overflowed: tuple[int, int, int] | None = None
    note: str = ""

    def fits(self, size: tuple[int, int], frames: int) -> bool:
        """True when a draft of ``size``×``frames`` is smaller than what overflowed and no
        bigger than what the brief measured."""
        volume = size[0] * size[1] * frames
        if self.overflowed is not None:
            w, h, n = self.overflowed
            if volume >= w * h * n:
                return False
        if self.measured is None:
            return True
        w, h, n = self.measured
        return volume <= w * h * n


#: On the CPU (CI, tiny twins) everything stays resident in fp32; the prompt path is the
#: same CPU encode + evict as on a GPU, so tests exercise it.
CPU = Recipe("cpu", "resident", dtype="float32", note="CPU: resident, fp32")

RECIPES: dict[str, tuple[Recipe, ...]] = {
    "wan22-ti2v-5b": (
        # bench/results/family_fit_*_2026-11-27.json: 11.9 GiB allocated before the first
        # step at 640×352×121 (CFG 5 doubles the batch), so longer clips start one rung down.
        Recipe("model", "model", measured=(640, 384, 121), overflowed=(640, 352, 121),
               note="seed: model offload + CPU prompt, 640×384, ~3 min a clip"),
        Recipe("group_leaf", "group_leaf", use_stream=True, vae_tiling=True,
               note="leaner: leaf-level group offload with streams, VAE tiling"),
        Recipe("sequential", "sequential", vae_tiling=True, note="leanest: sequential offload"),
    ),
    "wan22-i2v-a14b-gguf": (
        Recipe("model", "model", measured=(640, 384, 81),
               note="seed: model offload + CPU prompt at 640×384, ~8 min a clip"),
        Recipe("group_leaf", "group_leaf", use_stream=True, vae_tiling=True, measured=(1280, 720, 81),
               note="seed: both experts leaf-level group offload with streams, 1280×720 at 1.9 GB peak"),
        # no sequential rung: accelerate's meta-device step drops the GGUF quant type
    ),
    "svd-xt": (
        Recipe("model", "model", forward_chunking=True, decode_chunk_size=8, dtype="float16",
               measured=(1024, 576, 25), note="seed: model offload + forward chunking, 1024×576, ~2 min"),
        Recipe("sequential", "sequential", forward_chunking=True, decode_chunk_size=2, dtype="float16",
               note="leaner: sequential offload, decode 2 frames at a time"),
    ),
    "ltxv-0.9": (
        Recipe("sequential", "sequential", measured=(768, 512, 121),
               note="seed: sequential offload (the T5 OOM trap), 768×512, ~3 min a clip"),
    ),
    "cogvideox-5b-i2v": (
        Recipe("sequential", "sequential", vae_tiling=True, measured=(720, 480, 49),
               note="seed: sequential offload + VAE tiling, 720×480×49, ~1 h a clip"),
    ),
}


def ladder(preset: Preset) -> tuple[Recipe, ...]:
    """The recipe ladder of a preset (a tiny twin uses its real twin's)."""
    key = str(preset.extra.get("recipe", preset.name))
    try:
        return RECIPES[key]
    except KeyError:
        raise KeyError(f"no memory recipe for preset {preset.name!r} (recipe key {key!r})") from None


def plans(preset: Preset, device: str, size: tuple[int, int], frames: int) -> list[StagePlan]:
    """Draft plans for the memory planner / runner, from the recipe ladder.

    Fastest first; recipes whose measured envelope is smaller than this draft are moved
    behind the ones that were measured at this size or more (they may still work, but
    the brief says they overflowed).
    """
    if device == "cpu":
        return [StagePlan(name="cpu", device="cpu", offload="resident", dtype="float32",
                          options={"recipe": CPU.name})]
    rungs = ladder(preset)
    ordered = [r for r in rungs if r.fits(size, frames)] + [r for r in rungs if not r.fits(size, frames)]
    return [StagePlan(name=f"recipe-{r.name}", device=device, offload=r.offload, vae_tiling=r.vae_tiling,
                      dtype=r.dtype, notes=(r.note,),
                      options={"recipe": r.name, "use_stream": r.use_stream, "text_encoder": r.text_encoder})
            for r in ordered]


def resolve(preset: Preset, plan: StagePlan) -> Recipe:
    """The recipe a draft runs with under ``plan``.

    A plan made by :func:`plans` names its recipe. A plan from the generic planner names
    only an offload mode: take the preset's first recipe with that mode, else the first
    recipe at least as lean (so an OOM fallback never gets *less* lean), else the leanest.
    """
    if plan.device == "cpu":
        return CPU
    rungs = ladder(preset)
    name = plan.options.get("recipe")
    for r in rungs:
        if r.name == name:
            return r
    order = ("resident", "model", "group_block", "group_leaf", "sequential")
    want = order.index(plan.offload) if plan.offload in order else 0
    for r in rungs:
        if r.offload == plan.offload:
            return r
    for r in rungs:
        if order.index(r.offload) >= want:
            return r
    return rungs[-1]


def describe(preset: Preset) -> list[dict[str, Any]]:
    """The ladder as plain dicts (for ``sulphur models`` / bench output)."""
    return [{"name": r.name, "offload": r.offload, "use_stream": r.use_stream, "text_encoder": r.text_encoder,
             "vae_tiling": r.vae_tiling, "forward_chunking": r.forward_chunking,
             "decode_chunk_size": r.decode_chunk_size, "dtype": r.dtype, "measured": r.measured,
             "overflowed": r.overflowed, "note": r.note}
            for r in ladder(preset)]
