"""``bench/chain.py`` is how issue 20's figures are taken, on a GPU machine lent for minutes: a
bench that breaks there (a renamed field, a crash in a mode not run since) costs the session its
measurements. Its CPU smoke mode runs the same code on the tiny preset: every field the issue
asks for is there, from renders that really ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"draft", "refine", "upscale", "encode"}
STAGE_FIELDS = {"seconds", "to_first_step_s", "first_to_last_step_s", "step_events", "after_last_step_s", "plan"}

pytestmark = pytest.mark.slow


def _chain(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "chain.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the bench makes its folder
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "chain.py"), "--smoke", "--out", str(out), *flags],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def _check_segments(run: dict, segments: int) -> None:
    assert run["returncode"] == 0
    shots = {k: v for k, v in run["segments"].items() if k.startswith("shot")}
    assert len(shots) == segments, run["segments"].keys()
    for shot in shots.values():
        assert set(shot["stages"]) == STAGES and shot["fallbacks"] == []
        for stage in shot["stages"].values():
            assert STAGE_FIELDS <= set(stage), stage
            assert stage["seconds"] > 0 and stage["step_events"] > 0


def test_the_chain_bench_reports_every_figure_issue_20_asks_for(tmp_path: Path) -> None:
    report = _chain(tmp_path)
    assert not list(tmp_path.glob("chain-bench-*")), "the bench left its renders behind"
    for name in ("capped", "uncapped"):
        _check_segments(report["runs"][name], report["segments_n"])
    for key in ("vram_budget_gib", "host_peak_gib", "steady_capped_s", "steady_uncapped_s", "cold_to_first_step_s",
                "cold_io_bound_s", "steady_capped_over_uncapped", "disk_read_gbps"):
        assert isinstance(report[key], float) and report[key] > 0, (key, report[key])
    assert report["steady_capped_over_uncapped"] == round(report["steady_capped_s"] / report["steady_uncapped_s"], 3)
    assert {"resident_steps_s", "steady_uncapped_over_steps", "nvml_peak_gib"} <= set(report)  # GPU-only figures
    assert report["goals"]["no_fallback"] is True
    run = report["runs"]["uncapped"]
    # the encode of shot 1 runs behind shot 2's draft, and who had the CPUs meanwhile is reported
    assert _window(run, "shot1", "encode")[0] < _window(run, "shot2", "draft")[1]
    for shot in ("shot1", "shot2"):
        draft = run["segments"][shot]["stages"]["draft"]
        cpu = draft["cpu_s"]
        assert cpu["seconds"] > 0 and cpu["main"] > 0, cpu
        assert len(draft["step_intervals_s"]) == draft["step_events"] - 1  # each step's own seconds


def test_the_anchored_uncapped_mode_starts_every_shot_from_a_picture(tmp_path: Path) -> None:
    """``--uncapped-only --first-anchor image`` (``gpu_suite.sh anchored``): shot 1 starts from a
    still, and goals that were not measured read as unknown, not as missed."""
    from pipeline.project.storyboard import load

    report = _chain(tmp_path, "--uncapped-only", "--first-anchor", "image", "--keep", "--behind", "inline",
                    "--eager-arm")
    assert set(report["runs"]) == {"uncapped", "uncapped_eager"} and report["first_anchor"] == "image"
    # the arm with every step eager is a render of its own, compared by steady segments
    assert report["graphs_speedup"] == round(report["steady_uncapped_eager_s"] / report["steady_uncapped_s"], 3)
    (kept,) = tmp_path.glob("chain-bench-*/uncapped/story.toml")
    first = load(kept).segments[0].anchor
    assert first.kind == "image" and (kept.parent / first.path).is_file(), first
    _check_segments(report["runs"]["uncapped"], report["segments_n"])
    assert report["steady_capped_s"] is None and report["goals"]["capped_le_1.25x_uncapped"] is None
    assert report["goals"]["nvml_under_budget"] is None
    # --behind inline: shot 1 is encoded before shot 2 drafts (with the encode behind, it overlaps)
    assert report["behind"] == "inline"
    assert _window(report["runs"]["uncapped"], "shot1", "encode")[1] <= _window(report["runs"]["uncapped"],
                                                                                 "shot2", "draft")[0]


def _window(run: dict, segment: str, stage: str) -> tuple[float, float]:
    (found,) = [(t0, t1) for seg, name, t0, t1 in run["stage_ts"] if (seg, name) == (segment, stage)]
    return found
