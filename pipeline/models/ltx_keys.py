"""LTX-2 / LTX-2.3 transformer tensor names: Lightricks' originals ↔ diffusers'.

diffusers' single-file converter (``convert_ltx2_transformer_to_diffusers`` in 0.42.1) knows
only the LTX-2.0 table, so LTX-2.3's ``prompt_adaln_single`` / ``audio_prompt_adaln_single``
stay unrenamed and the load misses them. diffusers' own ``scripts/convert_ltx2_to_diffusers.py``
(``LTX_2_3_TRANSFORMER_KEYS_RENAME_DICT`` = the 2.0 table + those two, loaded with
``strict=True``) and its LTX-2.3 LoRA converter use the table restated below, plus two prefix
rules (``adaln_single.`` → ``time_embed.``, ``audio_adaln_single.`` → ``audio_time_embed.``) and
dropping the text connectors, which a checkpoint bundles but diffusers keeps in ``connectors/``.

Pure Python: the twins are written with :func:`to_lightricks`, loads go through :func:`to_diffusers`.
"""

from __future__ import annotations

#: Prefix of every transformer tensor in Lightricks' checkpoints (and the GGUFs made from them).
PREFIX = "model.diffusion_model."

#: Every rename replaces one whole dotted component of a name, so the table maps both ways.
RENAMES: dict[str, str] = {
    "patchify_proj": "proj_in",
    "audio_patchify_proj": "audio_proj_in",
    "adaln_single": "time_embed",                # top level only (see to_diffusers)
    "audio_adaln_single": "audio_time_embed",    # top level only
    "prompt_adaln_single": "prompt_adaln",       # LTX-2.3
    "audio_prompt_adaln_single": "audio_prompt_adaln",  # LTX-2.3
    "av_ca_video_scale_shift_adaln_single": "av_cross_attn_video_scale_shift",
    "av_ca_a2v_gate_adaln_single": "av_cross_attn_video_a2v_gate",
    "av_ca_audio_scale_shift_adaln_single": "av_cross_attn_audio_scale_shift",
    "av_ca_v2a_gate_adaln_single": "av_cross_attn_audio_v2a_gate",
    "scale_shift_table_a2v_ca_video": "video_a2v_cross_attn_scale_shift_table",
    "scale_shift_table_a2v_ca_audio": "audio_a2v_cross_attn_scale_shift_table",
    "q_norm": "norm_q",
    "k_norm": "norm_k",
}
_INVERSE = {v: k for k, v in RENAMES.items()}
_TOP_ONLY = ("adaln_single", "audio_adaln_single")

#: Bundled in the checkpoint, loaded by diffusers as ``LTX2TextConnectors`` from its own folder.
CONNECTOR_PREFIXES = ("video_embeddings_connector.", "audio_embeddings_connector.")


def strip_prefix(name: str) -> str:
    for p in (PREFIX, "diffusion_model."):
        if name.startswith(p):
            return name[len(p):]
    return name


def is_connector(name: str) -> bool:
    return strip_prefix(name).startswith(CONNECTOR_PREFIXES)


def _rename(name: str, table: dict[str, str], top_only: tuple[str, ...]) -> str:
    parts = name.split(".")
    return ".".join(table.get(c, c) if (i == 0 or c not in top_only) else c for i, c in enumerate(parts))


def to_diffusers(name: str) -> str:
    """One of Lightricks' transformer tensor names as diffusers' ``LTX2VideoTransformer3DModel`` calls it."""
    return _rename(strip_prefix(name), RENAMES, _TOP_ONLY)


def to_lightricks(name: str, prefix: str = PREFIX) -> str:
    """The inverse of :func:`to_diffusers`: how a published checkpoint names a diffusers tensor."""
    return prefix + _rename(name, _INVERSE, ("time_embed", "audio_time_embed"))
