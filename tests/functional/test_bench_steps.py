"""The step benches (``bench/step_contention.py``, ``bench/step_launch.py``) are run on a GPU
machine lent for minutes; their CPU smoke mode runs the same code on a one-block transformer, so
a crash or a renamed field shows here first, not in a device call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--layers", "1", "--frames", "9", "--draft", "64x32", "--steps", "1", "--shapes", "draft"]

pytestmark = pytest.mark.slow


def _bench(tmp_path: Path, script: str, *flags: str) -> dict:
    out = tmp_path / "report.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / script), *SMOKE, *flags, "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def test_step_contention_times_a_step_beside_each_kind_of_work(tmp_path: Path) -> None:
    report = _bench(tmp_path, "step_contention.py", "--conditions", "idle,x264,analysis,python")
    rows = {r["condition"]: r for r in report["results"]}
    assert set(rows) == {"idle", "x264", "analysis", "python"}
    for row in rows.values():
        assert row["step_s"] > 0 and 0 < row["enqueue_s"] <= row["step_s"] * 1.01, row
        assert row["over_idle"] == round(row["step_s"] / rows["idle"]["step_s"], 3)
    assert report["quant"] == "Q4_0" and report["layers"] == 1


def test_step_launch_reports_the_step_and_its_profile(tmp_path: Path) -> None:
    report = _bench(tmp_path, "step_launch.py")
    draft = report["shapes"]["draft"]
    assert draft["size"] == [64, 32] and draft["eager"]["step_s"] > 0
    assert draft["profile"]["wall_s"] > 0 and draft["profile"]["cpu_ops"] > 100  # a real forward ran


def test_gpu_busy_time_counts_overlapping_kernels_once() -> None:
    """Kernels on two streams overlap: added up, they would read as a GPU busier than the step."""
    sys.path.insert(0, str(ROOT / "bench"))
    from step_launch import _busy_s

    assert _busy_s([]) == 0
    assert _busy_s([(0, 100), (50, 150), (300, 400)]) == 250e-6  # µs in, seconds out
    assert _busy_s([(0, 500), (100, 200)]) == 500e-6  # one inside another
