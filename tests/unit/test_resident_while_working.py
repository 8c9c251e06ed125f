"""Small modules stay on their device while they work: a leaf-offloaded VAE is onloaded once
per (tiled) decode, not once per leaf per tile. The real tiny LTX-2 VAE, on the CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers.hooks import apply_group_offloading
from diffusers.hooks.group_offloading import ModuleGroup

from pipeline.memory.offload import keep_host_copies, onloaded, resident_while_working
from pipeline.memory.plan import StagePlan


def _vae() -> torch.nn.Module:
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    vae = ltx2._load_diffusers_component(get_preset("tiny"), "vae", StagePlan(name="cpu"))
    vae.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=128,
                      tile_sample_stride_height=64, tile_sample_stride_width=64)
    return vae


def _decode(vae: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, vae.config.latent_channels, 2, 6, 10, generator=g)
    temb = torch.tensor([0.05]) if vae.config.timestep_conditioning else None
    with torch.no_grad():
        return vae.decode(lat, temb, return_dict=False)[0]


def _count_onloads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = ModuleGroup.onload_

    def counting(self: ModuleGroup) -> None:
        calls[0] += 1
        real(self)

    monkeypatch.setattr(ModuleGroup, "onload_", counting)
    return calls


def _count_module_moves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``Module.to`` calls from now on (what diffusers' stream-less offload runs)."""
    moved = [0]
    real_to = torch.nn.Module.to

    def counting_to(self: torch.nn.Module, *a: object, **k: object) -> torch.nn.Module:
        moved[0] += 1
        return real_to(self, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "to", counting_to)
    return moved


def test_a_tiled_decode_onloads_each_group_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _decode(_vae())
    calls = _count_onloads(monkeypatch)
    per_call, once = _vae(), _vae()
    for vae in (per_call, once):
        apply_group_offloading(vae, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                               offload_type="leaf_level")
    resident_while_working(once)
    groups = {id(h.group) for m in once.modules()
              if (r := getattr(m, "_diffusers_hook", None)) and (h := r.get_hook("group_offloading"))}

    calls[0] = 0
    assert torch.equal(_decode(per_call), reference)
    hooked = calls[0]
    calls[0] = 0
    assert torch.equal(_decode(once), reference)
    assert calls[0] == len(groups), "each group onloaded once for the whole decode"
    assert hooked > 2 * len(groups), "without it the tiles onload the leaves again and again"
    assert torch.equal(_decode(once), reference) and calls[0] == 2 * len(groups)  # the hooks still work after


def test_the_placement_decides_it_for_stream_less_leaf_offload() -> None:
    """ltx2.place wraps the ride-along components it leaf-offloads (no streams), e.g. the VAE
    under the streamer plan; resident ones need nothing."""
    from pipeline.models import ltx2

    streamed = StagePlan(name="stream", device="cuda", offload="group_block", dtype="float32",
                         options={"streamer": "sulphur", "resident_blocks": 0})
    vae = ltx2.place(_vae(), streamed)
    assert getattr(vae.decode, "_sulphur_onloaded", False)
    resident = ltx2.place(_vae(), StagePlan(name="cpu", device="cpu", offload="resident", dtype="float32"))
    assert not getattr(resident.decode, "_sulphur_onloaded", False)
    assert _group_kinds(vae) == {"_KeptCopyGroup"}, "every leaf of the ride-along VAE swaps back to its host copy"


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_offloading_swaps_back_to_one_host_copy_instead_of_copying(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream-less group offload no longer runs ``module.to("cpu")`` after each use (a device
    to host copy of unchanged weights): every weight lives in one host buffer, offloading
    points it back there, and the decode and the weights stay what they were."""
    reference_vae = _vae()
    reference, weights = _decode(reference_vae), _weights(reference_vae)
    vae = _vae()
    apply_group_offloading(vae, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                           offload_type="leaf_level")
    changed = keep_host_copies(vae)
    groups = {id(h.group) for m in vae.modules()
              if (r := getattr(m, "_diffusers_hook", None)) and (h := r.get_hook("group_offloading"))}
    assert changed == len(groups) > 0
    home = {name: t.data_ptr() for name, t in vae.state_dict().items()}
    lo, hi = min(home.values()), max(home.values())
    nbytes = sum(t.numel() * t.element_size() for t in vae.state_dict().values())
    assert hi - lo < 2 * nbytes, "one packed buffer, not scattered allocations"

    moved = _count_module_moves(monkeypatch)
    for _ in range(2):
        assert torch.equal(_decode(vae), reference)
    assert moved[0] == 0, "no group moved its module to the host"
    assert {name: t.data_ptr() for name, t in vae.state_dict().items()} == home, "offload points back home"
    after = _weights(vae)
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)
    assert keep_host_copies(vae) == 0, "a second call changes nothing"


def _group_kinds(module: torch.nn.Module) -> set[str]:
    return {type(h.group).__name__ for m in module.modules()
            if (r := getattr(m, "_diffusers_hook", None)) and (h := r.get_hook("group_offloading"))}


def _connector_outputs(connectors: torch.nn.Module) -> list[torch.Tensor]:
    from pipeline.models import tiny_ltx2

    cfg = tiny_ltx2.CONNECTORS_CONFIG
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 8, cfg["caption_channels"], cfg["text_proj_in_factor"], generator=gen)
    with torch.no_grad():
        return [t.clone() for t in connectors(hidden, torch.ones(1, 8, dtype=torch.long))[:2]]


def test_a_shots_lora_leaves_the_connectors_on_their_one_host_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a shot's LoRA and deleting it afterwards makes diffusers rebuild the connectors'
    offload groups; they keep swapping back to their host copy (no ``Module.to`` copying the
    weights out after each use for the rest of the render), re-using it rather than copying
    the weights again, and the shot leaves nothing behind."""
    from types import SimpleNamespace

    from pipeline.models import ltx2, tiny_ltx2, user_loras
    from pipeline.models.registry import get_preset

    root = tiny_ltx2.build_tiny()
    preset, plan = get_preset("tiny"), StagePlan(name="cpu")
    reference = _connector_outputs(ltx2._load_diffusers_component(preset, "connectors", plan))
    connectors = ltx2._load_diffusers_component(preset, "connectors", plan)
    apply_group_offloading(connectors, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                           offload_type="leaf_level")
    keep_host_copies(connectors)
    home = {name: t.data_ptr() for name, t in connectors.state_dict().items()}
    pipe = SimpleNamespace(transformer=ltx2.load_transformer(preset, plan), connectors=connectors)
    # The distilled LoRA's file again, as a shot's own: it has a part for the connectors.
    shot = user_loras.UserLora("shot.safetensors", root / tiny_ltx2.LORA_FILE, "5" * 64, 1.0)

    with user_loras.applied(pipe, (shot,), base_strength=1.0):
        assert _group_kinds(connectors) == {"_KeptCopyGroup"}, "rebuilt after the load, and kept"
        inside = _connector_outputs(connectors)
    assert not torch.allclose(inside[0], reference[0], atol=1e-4), "the shot's LoRA reached the connectors"
    assert _group_kinds(connectors) == {"_KeptCopyGroup"}, "rebuilt after the delete, and kept"

    moved = _count_module_moves(monkeypatch)
    after = _connector_outputs(connectors)
    assert moved[0] == 0, "no group moved its module to the host"
    assert all(torch.equal(a, b) for a, b in zip(after, reference, strict=True)), "nothing of the shot stays"
    assert {name: t.data_ptr() for name, t in connectors.state_dict().items()} == home, "the same host copy"
    assert len(connectors._sulphur_host_buffers) == 1, "the LoRA's own buffer went with it"


def test_the_module_holds_the_buffers_its_weights_live_in() -> None:
    """``_pinned`` undoes the page-locking when its buffer object is collected, and views of it
    do not keep that object alive: the module must hold it, or its weights silently become
    pageable again and every onload a synchronous copy."""
    import gc
    import weakref

    vae = _vae()
    apply_group_offloading(vae, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                           offload_type="leaf_level")
    keep_host_copies(vae)
    held = [weakref.ref(b) for b in vae._sulphur_host_buffers]
    gc.collect()
    assert held and all(r() is not None for r in held)
    homes = {r().untyped_storage().data_ptr() for r in held}
    assert {t.data.untyped_storage().data_ptr() for t in vae.parameters()} <= homes


def test_a_page_locked_buffer_is_whole_pages_starting_where_its_storage_does() -> None:
    """torch reads a tensor as pinned by its storage's first byte: a buffer carved out of a larger
    heap allocation was registered with CUDA from a later page, so ``is_pinned()`` said False
    (the GPU run of 2026-12-05 caught it) and the buffer may share a page with another one."""
    import mmap

    from pipeline.memory.offload import _page_aligned

    for n in (1, 4096, 5000, 3 * mmap.PAGESIZE):
        buf = _page_aligned(n)
        storage = buf.untyped_storage()
        assert buf.numel() == n and buf.data_ptr() == storage.data_ptr()
        assert storage.data_ptr() % mmap.PAGESIZE == 0 and storage.nbytes() % mmap.PAGESIZE == 0
        assert storage.nbytes() < n + mmap.PAGESIZE
        buf.fill_(7)
        assert int(buf.sum()) == 7 * n


@pytest.mark.gpu
def test_kept_host_copies_stay_page_locked() -> None:
    """On CUDA the kept copies are page-locked for as long as the module lives, so an onload is
    an asynchronous copy (they were unregistered as soon as keep_host_copies returned)."""
    import gc

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    vae = _vae()
    apply_group_offloading(vae, onload_device=torch.device("cuda"), offload_device=torch.device("cpu"),
                           offload_type="leaf_level")
    assert keep_host_copies(vae) > 0
    gc.collect()
    assert all(t.data.is_pinned() for t in vae.parameters())
    with onloaded(vae):
        assert all(t.device.type == "cuda" for t in vae.parameters())
    assert all(t.device.type == "cpu" and t.data.is_pinned() for t in vae.parameters())


def test_the_text_encoder_keeps_diffusers_path_and_the_vae_its_host_copy() -> None:
    """Leaf-offloaded under the same plan, the VAE (used on every segment) gets its kept host
    copy; the text encoder (once per batch of prompts; 24 GB at full size, copied twice over
    while a copy is made) does not."""
    from pipeline.memory.loaded import LoadedModels
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset, models = get_preset("tiny"), LoadedModels()
    plan = StagePlan(name="group", device="cuda", offload="group_leaf", dtype="float32",
                     options={"use_stream": False})
    text_encoder = ltx2.component(models, preset, "text_encoder", plan)
    vae = ltx2.component(models, preset, "vae", plan)
    assert _group_kinds(text_encoder) == {"ModuleGroup"}
    assert not hasattr(text_encoder, "_sulphur_host_buffers")
    assert _group_kinds(vae) == {"_KeptCopyGroup"}


def test_host_copies_are_packed_in_bounded_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a buffer is filled its weights are in host RAM twice: buffers of about PACK_BYTES
    (each group whole) bound that peak, and the decode is unchanged."""
    from pipeline.memory import offload

    reference = _decode(_vae())
    vae = _vae()
    apply_group_offloading(vae, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                           offload_type="leaf_level")
    biggest_group = max(sum(t.numel() * t.element_size() for t in offload._group_tensors(g))
                        for g in offload._offload_groups(vae))
    monkeypatch.setattr(offload, "PACK_BYTES", 64 << 10)
    keep_host_copies(vae)
    sizes = [b.numel() for b in vae._sulphur_host_buffers]
    total = sum(t.numel() * t.element_size() for t in vae.state_dict().values())
    assert len(sizes) > 1 and max(sizes) < (64 << 10) + biggest_group + 4096 and sum(sizes) >= total
    assert torch.equal(_decode(vae), reference)


def test_a_tied_weight_is_kept_once_and_an_empty_layer_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two leaves sharing one weight (tied) get one host copy that both groups swap back to; a
    layer with no elements needs no copy (and tiny buffers must not trip over it)."""
    from pipeline.memory import offload

    first, second, empty = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(0, 4)
    second.weight = first.weight
    net = torch.nn.Sequential(first, second, empty)
    x = torch.randn(2, 8)
    with torch.no_grad():
        reference = net[1](net[0](x))
    apply_group_offloading(net, onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                           offload_type="leaf_level")
    monkeypatch.setattr(offload, "PACK_BYTES", 64)
    assert keep_host_copies(net) == 3
    kept = [g._kept for g in offload._offload_groups(net)]
    homes = [k[first.weight] for k in kept if first.weight in k]
    assert len(homes) == 2 and homes[0] is homes[1], "one host copy of the tied weight"
    with torch.no_grad():
        assert torch.equal(net[1](net[0](x)), reference)
        assert net[2](torch.zeros(2, 0)).shape == (2, 4)


@pytest.mark.gpu
def test_a_draft_parks_the_upsampler_a_resident_refine_left_on_the_gpu() -> None:
    """``options["park"]``: the upsampler goes to host RAM for the draft and comes back to the
    GPU for the next refine (its placement tag cleared, so the refine places it again)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from pipeline.memory.loaded import LoadedModels
    from pipeline.models import ltx2
    from pipeline.models.registry import get_preset

    preset, models = get_preset("tiny"), LoadedModels()
    refine = StagePlan(name="resident", device="cuda", offload="resident", dtype="float32")
    draft = replace(refine, options={"park": ["upsampler"]})
    up = ltx2.component(models, preset, "upsampler", refine)
    assert all(t.device.type == "cuda" for t in up.parameters())
    ltx2.park_for_plan(models, preset, draft)
    assert all(t.device.type == "cpu" for t in up.parameters())
    assert ltx2.component(models, preset, "upsampler", refine) is up
    assert all(t.device.type == "cuda" for t in up.parameters())
    ltx2.park_for_plan(models, preset, refine)  # no "park": left where it is
    assert all(t.device.type == "cuda" for t in up.parameters())
