"""Do the full-size I2V family architectures fit a 12 GB card with the brief's recipes?

Builds one preset's full-size denoiser(s) and VAE with random weights (on the meta
device, then filled from a random bank: seconds, not minutes), assembles the real
diffusers pipeline without a text encoder (the recipes encode prompts on the CPU, so
random embeddings of the real shape stand in), places it with the preset's recipe from
``pipeline/memory/recipes.py`` through ``pipeline.models.family.apply_recipe`` — the
draft stage's own code — caps the process at ``--vram-gb`` and runs a few denoising
steps plus the VAE decode. Wan2.2-I2V-A14B's experts are written as GGUF Q4_0 files of
random blocks (≈0.56 B/param, like the brief's ~9 GB Q4 experts) and loaded with
``from_single_file`` + ``GGUFQuantizationConfig``.

Prints one JSON document: seconds per step (median of steps after the first), decode
seconds, peak allocated / reserved VRAM, peak host RSS, GPU name and versions.

    python bench/family_fit.py --preset wan22-i2v-a14b-gguf --recipe group_leaf --size 1280x720 --frames 81
    python bench/family_fit.py --preset svd-xt                       # first recipe, native size
    python bench/family_fit.py --preset ltxv-0.9 --device cpu --layers 1 --size 64x32 --frames 9  # smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.memory import recipes  # noqa: E402
from pipeline.memory.planner import GiB  # noqa: E402
from pipeline.models import random_weights  # noqa: E402
from pipeline.models.family import apply_recipe  # noqa: E402
from pipeline.models.registry import get_preset  # noqa: E402

# Full-size configs, transcribed from the config.json files of the Diffusers repos the presets name.
WAN_5B = {"patch_size": [1, 2, 2], "num_attention_heads": 24, "attention_head_dim": 128, "in_channels": 48,
          "out_channels": 48, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 14336, "num_layers": 30,
          "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}
WAN_A14B = dict(WAN_5B, num_attention_heads=40, in_channels=36, out_channels=16, ffn_dim=13824, num_layers=40)
WAN22_VAE = {"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
             "temperal_downsample": [False, True, True], "is_residual": True, "in_channels": 12, "out_channels": 12,
             "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
             "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}
WAN21_VAE: dict[str, Any] = {}  # the class defaults are Wan2.1's VAE
COG_5B_I2V = {"num_attention_heads": 48, "attention_head_dim": 64, "in_channels": 32, "out_channels": 16,
              "time_embed_dim": 512, "text_embed_dim": 4096, "num_layers": 42, "sample_width": 90,
              "sample_height": 60, "sample_frames": 49, "patch_size": 2, "max_text_seq_length": 226,
              "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": True}
SVD_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
           "layers_per_block": 2, "latent_channels": 4}
SVD_CLIP = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
            "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu"}
TEXT = {"wan": (512, 4096), "ltxv": (128, 4096), "cogvideox": (226, 4096)}  # (tokens, width) of the embeddings


# --------------------------------------------------------------------------- random full-size models


def build(cls: Any, config: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    return random_weights.build(lambda: cls(**config), dtype)


def random_q4_gguf(config: dict[str, Any], path: Path) -> Path:
    """A Wan expert as GGUF (original key layout): Q4_0 blocks of random nibbles for the big 2-D weights."""
    import gguf
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from pipeline.models.wan import to_original_keys

    with init_empty_weights():
        meta = WanTransformer3DModel(**config)
    rng = np.random.default_rng(0)
    scale = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    writer = gguf.GGUFWriter(str(path), "wan")
    for name, t in to_original_keys(meta.state_dict()).items():
        shape = tuple(t.shape)
        if len(shape) == 2 and shape[1] % 32 == 0 and name.endswith(".weight"):
            blocks = rng.integers(0, 256, (shape[0], shape[1] // 32, 18), dtype=np.uint8)
            blocks[..., :2] = scale
            writer.add_tensor(name, blocks.reshape(shape[0], -1), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            writer.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * 0.02))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_expert(config: dict[str, Any], work: Path, name: str, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dict(config, _class_name="WanTransformer3DModel")))
    path = random_q4_gguf(config, work / f"{name}-Q4_0.gguf")
    return WanTransformer3DModel.from_single_file(str(path), config=str(work), subfolder=name,
                                                  quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
                                                  dtype=dtype, local_files_only=True)


def pipeline_for(preset_name: str, dtype: torch.dtype, layers: int | None, work: Path) -> tuple[Any, str]:
    """The preset's diffusers pipeline with full-size random weights and no text encoder; and its family."""
    import diffusers as d

    def n(cfg: dict[str, Any], key: str = "num_layers") -> dict[str, Any]:
        return dict(cfg, **{key: layers}) if layers else cfg

    if preset_name == "wan22-ti2v-5b":
        pipe = d.WanImageToVideoPipeline(
            tokenizer=None, text_encoder=None, image_encoder=None, image_processor=None,
            transformer=build(d.WanTransformer3DModel, n(WAN_5B), dtype), transformer_2=None,
            vae=build(d.AutoencoderKLWan, WAN22_VAE, torch.float32),
            scheduler=d.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                flow_shift=5.0),
            expand_timesteps=True)
        return pipe, "wan"
    if preset_name == "wan22-i2v-a14b-gguf":
        pipe = d.WanImageToVideoPipeline(
            tokenizer=None, text_encoder=None, image_encoder=None, image_processor=None,
            transformer=gguf_expert(n(WAN_A14B), work, "transformer", dtype),
            transformer_2=gguf_expert(n(WAN_A14B), work, "transformer_2", dtype),
            vae=build(d.AutoencoderKLWan, WAN21_VAE, torch.float32),
            scheduler=d.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                flow_shift=5.0),
            boundary_ratio=0.9)
        return pipe, "wan"
    if preset_name == "svd-xt":
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        pipe = d.StableVideoDiffusionPipeline(
            vae=build(d.AutoencoderKLTemporalDecoder, SVD_VAE, dtype),
            image_encoder=random_weights.build(
                lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_CLIP)), dtype),
            unet=build(d.UNetSpatioTemporalConditionModel, {}, dtype),
            scheduler=d.EulerDiscreteScheduler(prediction_type="v_prediction", use_karras_sigmas=True,
                                               sigma_max=700.0, sigma_min=0.002, timestep_type="continuous"),
            feature_extractor=CLIPImageProcessor(crop_size=224, size=224))
        return pipe, "svd"
    if preset_name == "ltxv-0.9":
        pipe = d.LTXImageToVideoPipeline(
            scheduler=d.FlowMatchEulerDiscreteScheduler(), vae=build(d.AutoencoderKLLTXVideo, {}, dtype),
            text_encoder=None, tokenizer=None, transformer=build(d.LTXVideoTransformer3DModel, n({}), dtype))
        return pipe, "ltxv"
    if preset_name == "cogvideox-5b-i2v":
        pipe = d.CogVideoXImageToVideoPipeline(
            tokenizer=None, text_encoder=None, vae=build(d.AutoencoderKLCogVideoX, {}, dtype),
            transformer=build(d.CogVideoXTransformer3DModel, n(COG_5B_I2V), dtype),
            scheduler=d.CogVideoXDDIMScheduler())
        return pipe, "cogvideox"
    raise SystemExit(f"no full-size build for preset {preset_name!r}")


# --------------------------------------------------------------------------- one run


def call_args(family: str, preset: Any, size: tuple[int, int], frames: int, steps: int, dtype: torch.dtype,
              device: str) -> dict[str, Any]:
    from PIL import Image

    w, h = size
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))
    args: dict[str, Any] = {"image": image, "width": w, "height": h, "num_frames": frames,
                            "num_inference_steps": steps, "output_type": "np"}
    if family == "svd":
        return dict(args, min_guidance_scale=1.0, max_guidance_scale=preset.guidance_scale, fps=7,
                    motion_bucket_id=127, noise_aug_strength=0.02)
    tokens, width = TEXT[family]
    emb = (torch.randn(1, tokens, width) * 0.1).to(device=device, dtype=dtype)
    args.update(prompt_embeds=emb, negative_prompt_embeds=emb.clone(), guidance_scale=preset.guidance_scale)
    if family == "ltxv":
        mask = torch.ones(1, tokens, dtype=torch.long, device=device)
        args.update(prompt_attention_mask=mask, negative_prompt_attention_mask=mask.clone(), frame_rate=24)
    if family == "wan" and "a14b" in preset.name:
        args["guidance_scale_2"] = preset.guidance_scale
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--recipe", default=None, help="recipe name (default: the ladder's first)")
    ap.add_argument("--size", default=None, help="WxH (default: the preset's draft size)")
    ap.add_argument("--frames", type=int, default=None, help="default: the preset's native frame count")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--vram-gb", type=float, default=12.0, help="cap the process at this much VRAM")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=None, help="fewer transformer layers (smoke runs only)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (e.g. bench/results/…)")
    args = ap.parse_args()

    preset = get_preset(args.preset)
    ladder = recipes.ladder(preset)
    recipe = next((r for r in ladder if r.name == args.recipe), None) if args.recipe else ladder[0]
    if recipe is None:
        raise SystemExit(f"{args.preset} has no recipe {args.recipe!r} (has: {', '.join(r.name for r in ladder)})")
    if args.device == "cpu":
        recipe = recipes.CPU
    size = tuple(int(v) for v in args.size.split("x")) if args.size else preset.draft_size
    frames = args.frames or int(preset.extra.get("native_frames", 25))
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[recipe.dtype]
    cuda = args.device.startswith("cuda")
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_gb * GiB / total))

    with tempfile.TemporaryDirectory(prefix="family-fit-") as tmp:
        t0 = time.perf_counter()
        pipe, family = pipeline_for(preset.name, dtype, args.layers, Path(tmp))
        build_s = time.perf_counter() - t0
        from pipeline.stages.family_draft import family_of

        apply_recipe(pipe, recipe, args.device, family_of(preset).denoisers)
        pipe.set_progress_bar_config(disable=True)
        stamps: list[float] = []

        def on_step(_p: Any, i: int, _t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return kw

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        call = call_args(family, preset, size, frames, args.steps, dtype, str(pipe._execution_device))
        if recipe.decode_chunk_size and family == "svd":
            call["decode_chunk_size"] = recipe.decode_chunk_size
        error = ""
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                pipe(**call, generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=on_step)
            if cuda:
                torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError as exc:
            error = f"OOM: {str(exc).splitlines()[0]}"
        end = time.perf_counter()

    steps = np.diff([start, *stamps]).tolist()
    result = {
        "preset": preset.name, "recipe": recipe.name, "offload": recipe.offload, "use_stream": recipe.use_stream,
        "vae_tiling": recipe.vae_tiling, "forward_chunking": recipe.forward_chunking, "dtype": recipe.dtype,
        "size": list(size), "frames": frames, "steps": args.steps, "layers": args.layers or "full",
        "vram_cap_gib": args.vram_gb if cuda else None, "fits": not error, "error": error,
        "build_seconds": round(build_s, 1),
        "seconds_per_step": round(statistics.median(steps[1:] or steps), 3) if steps else None,
        "first_step_seconds": round(steps[0], 3) if steps else None,
        "decode_seconds": round(end - stamps[-1], 2) if stamps and not error else None,
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GiB, 2) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GiB, 2) if cuda else None,
        "peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB, 2),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
        "date": datetime.date.today().isoformat(), "host_cpus": os.cpu_count(),
        "seed_reference": recipe.note,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
