"""The full-size LTX-2.3 stack the GPU bench writes (bench/published_stack.py) has the published
shapes and names: checked here on the meta device and on a one-block GGUF, without a GPU."""

from __future__ import annotations

from pathlib import Path

from pipeline.models import ltx_keys
from pipeline.models import published_stack as stack


def _params(cls: type, config: dict, layer_keys: tuple[str, ...]) -> int:
    """Parameters at the config's depth, from one- and two-layer builds (every layer is alike)."""
    from accelerate import init_empty_weights

    counts = []
    for n in (1, 2):
        with init_empty_weights():
            model = cls(**{**config, **dict.fromkeys(layer_keys, n)})
        counts.append(sum(p.numel() for p in model.parameters()))
    return counts[0] + (config[layer_keys[0]] - 1) * (counts[1] - counts[0])


def test_transformer_and_connectors_add_up_to_the_published_22b() -> None:
    """Lightricks calls LTX-2.3 "22B" (ltx-2.3-22b-dev): its checkpoint bundles the text connectors
    with the transformer. The configs as written must add up to that, with LTX-2.3's blocks."""
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    cfg = stack.configs(stack.Caps())
    total = _params(LTX2VideoTransformer3DModel, cfg["transformer"], ("num_layers",)) + _params(
        LTX2TextConnectors, cfg["connectors"], ("video_connector_num_layers", "audio_connector_num_layers"))
    assert 21.5e9 < total < 22.5e9, total / 1e9
    assert cfg["connectors"]["text_proj_in_factor"] == cfg["text_encoder"]["text_config"]["num_hidden_layers"] + 1


def test_the_gguf_names_every_tensor_as_lightricks_does_and_maps_one_to_one(tmp_path: Path) -> None:
    import gguf

    from pipeline.models.published import expected_transformer_keys

    caps = stack.Caps(layers=1)
    stack._write_transformer(tmp_path, stack.configs(caps)["transformer"], caps)
    reader = gguf.GGUFReader(str(tmp_path / stack.GGUF_FILE))
    names = {t.name: t for t in reader.tensors}
    assert all(n.startswith(ltx_keys.PREFIX) for n in names)
    # LTX-2.3's prompt AdaLN under Lightricks' names, which diffusers' single-file converter does not know.
    assert f"{ltx_keys.PREFIX}prompt_adaln_single.linear.weight" in names
    assert f"{ltx_keys.PREFIX}audio_prompt_adaln_single.linear.weight" in names
    expected = expected_transformer_keys(tmp_path / stack.DIFFUSERS_DIR / "transformer")
    assert {ltx_keys.to_diffusers(n) for n in names} == expected  # zero missing, zero unexpected
    q = names[f"{ltx_keys.PREFIX}transformer_blocks.0.ff.net.0.proj.weight"]
    assert q.tensor_type == gguf.GGMLQuantizationType.Q4_0 and list(q.shape) == [4096, 16384]  # GGUF: (in, out)
    assert names[f"{ltx_keys.PREFIX}patchify_proj.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
