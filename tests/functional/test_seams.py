"""Seams of a chained film at a frame rate other than 24: the segments are encoded at the
storyboard's fps, the film is their stream copy, and audio lands on the right sample.

A chained segment's frame 0 repeats the previous segment's last frame; the film leaves it
out, and must leave out its audio too, or every seam pushes the sound one frame late (the
total length still matches, so only positions tell).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.wire import protocol
from tests.functional.conftest import checkout_env, tiny_storyboard

pytestmark = pytest.mark.slow

FPS = 8
BOARD = tiny_storyboard([{"id": "one", "prompt": "a lighthouse at dawn", "frames": 9, "keep": 6},
                         {"id": "two", "prompt": "the beam sweeps the sea", "frames": 9},
                         {"id": "three", "prompt": "a storm rolls in", "frames": 9}],
                        title="seams", fps=FPS, preset="tiny", output_size=[448, 256], enhance=False)
#: (segment, frame of that segment's draft) where a click is planted
CLICKS = {"two": 3, "three": 6}


def _render(folder: Path) -> list[protocol.Event]:
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "render", "seams.toml", "--json"], cwd=folder,
                            capture_output=True, text=True, timeout=900, env=checkout_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return [protocol.decode_event(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seams")
    (folder / "seams.toml").write_text(BOARD)
    _render(folder)
    return folder


def _rate(path: Path) -> tuple[object, int]:
    with av.open(str(path)) as c:
        return c.streams.video[0].average_rate, sum(1 for _ in c.demux(video=0) if _.size)


def test_segments_are_encoded_at_the_storyboards_fps_and_the_film_is_their_copy(film: Path) -> None:
    out = film / "renders" / "seams"
    for seg, frames in (("one", 6), ("two", 9), ("three", 9)):
        assert _rate(out / "segments" / f"{seg}.mp4") == (FPS, frames)
    manifest = json.loads((out / "film.json").read_text())
    assert (manifest["fps"], manifest["video"], manifest["reencode_reason"]) == (FPS, "copied", None)
    assert [s["offset"] for s in manifest["segments"]] == [0, 6, 14]
    assert _rate(out / "final.mp4") == (FPS, 6 + 8 + 8)


def _plant_clicks(folder: Path) -> dict[str, int]:
    """Silence every draft's audio but for a click at CLICKS' frames; returns each click's
    draft sample rate. Cache entries are edited in place, so the film is assembled again."""
    manifest = json.loads((folder / "renders" / "seams" / "film.json").read_text())
    rates = {}
    for seg in manifest["segments"]:
        entry = next((folder / ".sulphur" / "cache" / "draft").glob(f"*/{seg['draft_key']}"))
        rate = json.loads((entry / "meta.json").read_text())["meta"]["sample_rate"]
        audio = np.zeros_like(np.load(entry / "audio.npy"))
        if seg["id"] in CLICKS:
            at = CLICKS[seg["id"]] * rate // FPS
            audio[:, at:at + rate // 400] = 0.9  # 2.5 ms
        np.save(entry / "audio.npy", audio)
        rates[seg["id"]] = rate
    (folder / "renders" / "seams" / "film.json").unlink()
    return rates


def test_a_click_at_a_known_frame_lands_at_the_right_sample_of_the_film(film: Path) -> None:
    _plant_clicks(film)
    events = _render(film)
    assert not [e for e in events if isinstance(e, protocol.StageFinished) and e.segment]  # only the film ran
    out = film / "renders" / "seams"
    manifest = {s["id"]: s for s in json.loads((out / "film.json").read_text())["segments"]}
    with av.open(str(out / "final.mp4")) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        sound = np.abs(np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)).max(axis=0)
    per_frame = rate // FPS
    for seg, frame in CLICKS.items():
        m = manifest[seg]
        film_frame = m["offset"] + frame - int(m["skip_first"])  # the anchor frame is not in the film
        expected = film_frame * per_frame
        window = sound[expected - 3 * per_frame // 2: expected + 3 * per_frame // 2]
        found = expected - 3 * per_frame // 2 + int(np.argmax(window))
        assert window.max() > 0.3, f"no click near film frame {film_frame}"
        # within an eighth of a frame: a seam that keeps the anchor's audio is a whole frame late
        assert abs(found - expected) < per_frame // 8, (seg, found, expected)
    assert sound[: manifest["two"]["offset"] * per_frame - per_frame].max() < 0.05  # silence before
