"""Fixtures for the TUI tests: a copy of the example storyboard and its recorded render."""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
RECORDING = DATA / "render-tiny.jsonl"  # `sulphur render --json` of story.toml with the tiny preset
# the same with `--engine ray` on the 2-core CPU box (a draft actor and one finish actor);
# the actors' absolute paths made relative to the story folder, as the local recording has them
RAY_RECORDING = DATA / "render-ray-cpu.jsonl"
# A render on a GPU (ltx2-19b-random, H200, 8 GiB budget), as `sulphur render --json` writes it.
# For now made from RECORDING: the same events with real-looking memory-plan strings (as
# StagePlan.describe() spells them) and VRAM samples of an "NVIDIA H200" (140 GiB); it is
# replaced by the lead's real recording later in the session.
GPU_RECORDING = DATA / "gpu_recording.jsonl"
# A fixed "now" for anything that draws ages or timers, so snapshots are stable.
FIXED_NOW = 1_795_000_000.0


@pytest.fixture(autouse=True)
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no local GPU unless they ask: the screen must not depend on the machine."""
    monkeypatch.setenv("SULPHUR_NO_NVML", "1")


@pytest.fixture
def story(tmp_path: Path) -> Path:
    """story.toml (the example storyboard) in a fresh folder, with the recorded previews."""
    shutil.copy(DATA / "story.toml", tmp_path / "story.toml")
    previews = tmp_path / "renders" / "story" / "previews"
    shutil.copytree(DATA / "previews", previews)
    return tmp_path / "story.toml"


def fake_render(story: Path, segment_id: str, mtime: float = FIXED_NOW - 300) -> Path:
    """Put a segment's mp4 where the runner writes it (content irrelevant to the TUI)."""
    mp4 = story.parent / "renders" / story.stem / "segments" / f"{segment_id}.mp4"
    mp4.parent.mkdir(parents=True, exist_ok=True)
    mp4.write_bytes(b"\x00")
    os.utime(mp4, (mtime, mtime))
    return mp4


def changed_lines(before: str, after: str) -> list[str]:
    """The -/+ lines of a diff between two versions of a file: what a save really touched."""
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def screen_text(app) -> str:  # noqa: ANN001
    """What the terminal shows now, one line per row (what a user reads, not what a widget holds)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def with_budget(story: Path, gb: int = 8) -> Path:
    """The storyboard with ``vram_budget_gb`` set (the example leaves it commented out)."""
    story.write_text(story.read_text().replace("# vram_budget_gb = 8 ", f"vram_budget_gb = {gb}   "))
    return story
