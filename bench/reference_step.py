"""One resident LTX-2 transformer step with the bench's bare inputs against the inputs a rendered
step has (``ltx2_step_inputs(as_rendered=True)``: the preset's text length with masks, a timestep
per video token). Prints JSON: how far the old reference of ``bench/chain.py`` was from a
rendered step at the draft and refine shapes.

    python bench/reference_step.py --out bench/results/reference_step_h200_<date>.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ltx2_inputs import ltx2_step_inputs  # noqa: E402
from machine_info import print_report  # noqa: E402
from resident_step import time_steps  # noqa: E402

from pipeline.memory.planner import audio_tokens  # noqa: E402
from pipeline.models import ltx2_random  # noqa: E402
from pipeline.models.registry import get_preset  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ltx2-19b-random")
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--draft", default=None, help="WxH (default: the preset's draft size)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    preset = get_preset(args.preset)
    draft = tuple(int(v) for v in args.draft.split("x")) if args.draft else preset.draft_size
    shapes = {"draft": draft, "refine": (draft[0] * 2, draft[1] * 2)}
    frames = preset.round_frames(args.frames)
    text = int(preset.extra.get("max_sequence_length", 1024))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = ltx2_random.transformer(dtype, quant=None).to(device).eval()
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    out: dict[str, Any] = {"bench": "reference_step", "device": gpu, "preset": preset.name, "frames": frames, "text_tokens": text, "steps": {}}
    for name, size in shapes.items():
        common = {"audio_tokens": audio_tokens(frames, 24), "device": device, "dtype": dtype}
        bare = time_steps(model, ltx2_step_inputs(model.config, size, frames, text_tokens=128, **common),
                          args.runs, device)["steps_s"]
        rendered = time_steps(model, ltx2_step_inputs(model.config, size, frames, text_tokens=text,
                                                      as_rendered=True, **common), args.runs, device)["steps_s"]
        out["steps"][name] = {"size": list(size), "bare_128_s": bare, "as_rendered_s": rendered,
                              "as_rendered_over_bare": round(statistics.median(rendered) / statistics.median(bare), 3)}
    return print_report(out, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
