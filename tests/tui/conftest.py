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
# A real render on a GPU, `sulphur render --json` of story.toml with ltx2-19b-random on an H200
# under an 8 GiB VRAM budget (enhance off; paths relative to the story folder): real memory-plan
# strings, a final film. The recording holds no VRAM samples, so tests that draw
# the GPU panel post the H200's figures themselves (H200_SAMPLE).
GPU_RECORDING = DATA / "gpu_recording.jsonl"
GIB = 1024**3
# NVML's figures for an H200 (143771 MiB) during that render's draft, with torch's share.
H200_SAMPLE = {"gpu": 0, "name": "NVIDIA H200", "used": int(8.3 * GIB), "total": 143771 * 2**20,
               "utilisation": 97, "temperature": 58, "torch_allocated": int(7.4 * GIB),
               "torch_reserved": int(7.7 * GIB)}
# A fixed "now" for anything that draws ages or timers, so snapshots are stable.
FIXED_NOW = 1_795_000_000.0


@pytest.fixture(autouse=True)
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no local GPU unless they ask: the screen must not depend on the machine."""
    monkeypatch.setenv("SULPHUR_NO_NVML", "1")
    monkeypatch.setenv("SULPHUR_NO_HOST", "1")  # nor this machine's RAM and CPU


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


async def footer_text(pilot, pauses: int = 100) -> str:  # noqa: ANN001
    """The footer row once it is drawn. Textual fills the footer after the screen's bindings
    settle, a frame or more after the first paint: on a loaded CI box one pause was not enough
    (an all-blank row). Waits a bounded time, then returns what shows, so a missing key fails."""
    row = screen_text(pilot.app).splitlines()[-1]
    for _ in range(pauses):
        if row.strip():
            break
        await pilot.pause(0.02)
        row = screen_text(pilot.app).splitlines()[-1]
    return row


async def screen_once(pilot, text: str, pauses: int = 400) -> str:  # noqa: ANN001
    """The screen once it shows ``text`` (a screen pushed a moment ago is drawn a frame or more
    later; on a loaded CI box one pause was not enough). Bounded; returns what shows either way."""
    shown = screen_text(pilot.app)
    for _ in range(pauses):
        if text in shown:
            break
        await pilot.pause(0.05)
        shown = screen_text(pilot.app)
    return shown


def with_budget(story: Path, gb: int = 8) -> Path:
    """The storyboard with ``vram_budget_gb`` set (the example leaves it commented out)."""
    story.write_text(story.read_text().replace("# vram_budget_gb = 8 ", f"vram_budget_gb = {gb}   "))
    return story


def show_h200(app) -> None:  # noqa: ANN001
    """Post the H200's VRAM sample as the worker would, timed at the replay's clock (a sample
    stamped "now" would move a replay's timers to today)."""
    from pipeline.wire.protocol import VramSample
    from sulphur_tui.messages import WorkerEvent

    app.post_message(WorkerEvent(VramSample(ts=app.live.last_ts, **H200_SAMPLE)))


async def type_text(pilot, text: str) -> None:  # noqa: ANN001
    """Type ``text`` key by key, as a user would."""
    await pilot.press(*["space" if c == " " else c for c in text])
