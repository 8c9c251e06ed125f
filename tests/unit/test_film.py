"""Film assembly from cached segments, in-process, on tiny synthetic frames with real PyAV.

What a user checks in ``renders/<story>/``: final.mp4 has every kept frame once (a chained
segment's repeated anchor left out) at the storyboard's fps, a click planted in a segment's
audio lands at the film sample its frame says, film.json says where each segment starts and
whether the video was copied or re-encoded (and why), and an unchanged film is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.project.layout import RenderFolder
from pipeline.project.storyboard import load
from pipeline.render.film import CachedSegment, assemble_film
from pipeline.render.job import RenderJob
from pipeline.stages.base import Artifact
from pipeline.stages.encode import AUDIO_RATE, FilmPart, encode_film
from pipeline.wire import protocol
from tests.functional.conftest import tiny_storyboard

FPS = 8
W, H = 64, 48
VOCODER_RATE = 24_000
BOARD = tiny_storyboard([{"id": "one", "prompt": "a lighthouse at dawn", "frames": 9},
                         {"id": "two", "prompt": "the beam sweeps the sea", "frames": 9},
                         {"id": "three", "prompt": "a storm rolls in", "frames": 9, "anchor": "none"}],
                        title="film", fps=FPS, preset="tiny", output_size=[W, H], enhance=False)


def _frames(n: int, base: int) -> np.ndarray:
    """Flat frames whose brightness encodes their index (base + 10 i)."""
    return np.stack([np.full((H, W, 3), base + 10 * i, np.uint8) for i in range(n)])


class Film:
    """A storyboard with every segment's cache entries on disk, and the events assembly emits."""

    def __init__(self, tmp: Path, *, encoded: bool = True, kept: int | None = None, clicks: dict | None = None) -> None:
        (tmp / "film.toml").write_text(BOARD)
        self.tmp, self.job = tmp, RenderJob.resolve(load(tmp / "film.toml"))
        self.renders = RenderFolder.of(tmp / "film.toml")
        self.events: list[protocol.Event] = []
        self.segments: list[CachedSegment] = []
        for i, seg in enumerate(self.job.storyboard.segments):
            frames = _frames(9, 20 + 60 * i)
            if i == 1:
                prev = self.segments[0]
                frames[0] = np.load(prev.frames.file("frames.npy"))[prev.kept - 1]  # chained: the anchor
            audio = np.zeros((2, round(9 * VOCODER_RATE / FPS)), np.float32)
            for frame in (clicks or {}).get(seg.id, ()):
                audio[:, round(frame * VOCODER_RATE / FPS)] = 0.9
            self.segments.append(self._entries(seg.id, i, frames, audio, encoded, kept or 9))

    def _entries(self, sid: str, i: int, frames: np.ndarray, audio: np.ndarray, encoded: bool,
                 kept: int) -> CachedSegment:
        up = self.tmp / "cache" / f"upscale-{sid}"
        dr = self.tmp / "cache" / f"draft-{sid}"
        up.mkdir(parents=True)
        dr.mkdir(parents=True)
        np.save(up / "frames.npy", frames)
        np.save(dr / "audio.npy", audio)
        enc = None
        if encoded:
            ed = self.tmp / "cache" / f"encode-{sid}"
            ed.mkdir(parents=True)
            chained = i == 1  # "two" continues "one"; "three" is a hard cut
            encode_film(ed / "segment.mp4", [FilmPart(frames[:kept], None, VOCODER_RATE)], fps=FPS, size=(W, H),
                        keyframes=(1,) if chained else ())
            enc = Artifact("encode", f"e-{sid}", ed, {})
        return CachedSegment(frames=Artifact("upscale", f"u-{sid}", up, {}),
                             draft=Artifact("draft", f"d-{sid}", dr, {"sample_rate": VOCODER_RATE}),
                             encode=enc, kept=kept)

    def assemble(self, missing: int | None = None) -> Path:
        self.events.clear()
        return assemble_film(self.job, lambda i: None if i == missing else self.segments[i], self.renders,
                             self.events.append)

    @property
    def manifest(self) -> dict:
        return json.loads(self.renders.film_manifest.read_text())


def _video(path: Path) -> tuple[list[float], object, list[float]]:
    """Each frame's mean brightness, the stream's frame rate, each frame's time in seconds."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(video=0))
        return [float(f.to_ndarray(format="rgb24").mean()) for f in frames], v.average_rate, [f.time for f in frames]


def _audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)


def test_the_film_is_the_segments_copied_and_film_json_says_where_each_starts(tmp_path: Path) -> None:
    film = Film(tmp_path)
    final = film.assemble()
    assert final == film.renders.final and final.is_file()
    m = film.manifest
    assert m["video"] == "copied" and m["reencode_reason"] is None
    assert m["fps"] == FPS and m["frames"] == 9 + 8 + 9
    assert [(s["id"], s["frames"], s["skip_first"], s["offset"]) for s in m["segments"]] == \
        [("one", 9, False, 0), ("two", 9, True, 9), ("three", 9, False, 17)]
    assert [(s["upscale_key"], s["draft_key"], s["encode_key"]) for s in m["segments"]] == \
        [(f"u-{i}", f"d-{i}", f"e-{i}") for i in ("one", "two", "three")]
    means, rate, times = _video(final)
    assert len(means) == 26 and rate == FPS and times == pytest.approx([i / FPS for i in range(26)])
    # "two"'s frame 0 (the anchor, a copy of "one"'s last frame) is not shown twice
    assert abs(means[9] - (20 + 60 + 10)) < 3 and abs(means[8] - (20 + 80)) < 3
    started = [e for e in film.events if isinstance(e, protocol.StageStarted)]
    assert [(e.stage, e.segment, e.total_steps) for e in started] == [("film", "", 26)]
    finished = [e for e in film.events if isinstance(e, protocol.StageFinished)]
    assert [(e.stage, e.segment) for e in finished] == [("film", "")]  # "" : the film, not a segment
    assert 0 <= finished[0].seconds < 120
    assert not [e for e in film.events if isinstance(e, protocol.Log)]


def test_a_segment_without_its_encode_makes_a_reencoded_film_that_says_why(tmp_path: Path) -> None:
    film = Film(tmp_path)
    film.segments[2] = CachedSegment(film.segments[2].frames, film.segments[2].draft, None, 9)
    film.assemble()
    m = film.manifest
    assert m["video"] == "re-encoded" and "segment three has no encoded MP4" in m["reencode_reason"]
    assert m["segments"][2]["encode_key"] is None and m["frames"] == 26
    warnings = [e for e in film.events if isinstance(e, protocol.Log)]
    assert len(warnings) == 1 and warnings[0].level == "warning" and "segment three" in warnings[0].message
    means, rate, _ = _video(film.renders.final)
    assert len(means) == 26 and rate == FPS


def test_an_unchanged_film_is_not_assembled_again(tmp_path: Path) -> None:
    film = Film(tmp_path)
    film.assemble()
    before = film.renders.final.stat().st_mtime_ns, film.renders.film_manifest.read_text()
    assert film.assemble() == film.renders.final and film.events == []
    assert (film.renders.final.stat().st_mtime_ns, film.renders.film_manifest.read_text()) == before
    # another draft of one segment is another film
    s = film.segments[1]
    film.segments[1] = CachedSegment(s.frames, Artifact("draft", "d-two-v2", s.draft.path, s.draft.meta), s.encode,
                                     s.kept)
    film.assemble()
    assert film.events and film.manifest["segments"][1]["draft_key"] == "d-two-v2"


@pytest.mark.parametrize("damage", ["manifest_garbled", "manifest_gone", "final_gone"])
def test_a_damaged_or_missing_film_is_assembled_again(tmp_path: Path, damage: str) -> None:
    film = Film(tmp_path)
    film.assemble()
    if damage == "manifest_garbled":
        film.renders.film_manifest.write_text("{not json")
    elif damage == "manifest_gone":
        film.renders.film_manifest.unlink()
    else:
        film.renders.final.unlink()
    film.assemble()
    assert [e.stage for e in film.events if isinstance(e, protocol.StageFinished)] == ["film"]
    assert film.renders.final.is_file() and film.manifest["frames"] == 26


def test_a_segment_not_rendered_yet_leaves_the_film_alone(tmp_path: Path) -> None:
    film = Film(tmp_path)
    assert film.assemble(missing=1) == film.renders.root
    assert not film.renders.final.exists() and not film.renders.film_manifest.exists()
    logs = [e.message for e in film.events if isinstance(e, protocol.Log)]
    assert logs == ["final film not assembled: segment two is not rendered yet"]
    assert not [e for e in film.events if isinstance(e, protocol.StageStarted)]


def test_only_the_kept_frames_of_each_segment_are_in_the_film(tmp_path: Path) -> None:
    film = Film(tmp_path, kept=5)
    film.assemble()
    m = film.manifest
    assert m["frames"] == 5 + 4 + 5 and [s["offset"] for s in m["segments"]] == [0, 5, 9]
    assert [s["frames"] for s in m["segments"]] == [5, 5, 5] and m["video"] == "copied"
    assert len(_video(film.renders.final)[0]) == 14
    assert _audio(film.renders.final).shape[1] == pytest.approx(14 * AUDIO_RATE / FPS, abs=1024)


def test_a_click_lands_at_the_film_sample_of_its_frame(tmp_path: Path) -> None:
    """Clicks at frame 3 of every segment: at film frame offset + 3 - skip_first, not one frame late."""
    film = Film(tmp_path, clicks={"one": [3], "two": [3], "three": [3]})
    film.assemble()
    audio = np.abs(_audio(film.renders.final)[0])
    per_frame = AUDIO_RATE // FPS
    for s in film.manifest["segments"]:
        at = (s["offset"] + 3 - int(s["skip_first"])) * per_frame
        window = audio[at - per_frame // 4: at + per_frame // 4]
        assert window.max() > 0.3, (s["id"], at)
        found = at - per_frame // 4 + int(np.argmax(window))
        assert abs(found - at) < per_frame // 4, (s["id"], found, at)
    assert audio.shape[0] == round(26 * per_frame) or abs(audio.shape[0] - 26 * per_frame) <= 1024


def test_a_silent_draft_is_silence_and_a_draft_without_a_rate_is_at_48_khz(tmp_path: Path) -> None:
    film = Film(tmp_path, clicks={"three": [3]})
    (film.segments[0].draft.path / "audio.npy").unlink()  # a shot rendered without audio
    three = film.segments[2].draft
    per_frame = AUDIO_RATE // FPS
    audio48 = np.zeros((2, 9 * per_frame), np.float32)
    audio48[:, 3 * per_frame] = 0.9
    np.save(three.path / "audio.npy", audio48)
    film.segments[2] = CachedSegment(film.segments[2].frames, Artifact("draft", "d-three", three.path, {}),
                                     film.segments[2].encode, 9)
    film.assemble()
    audio = np.abs(_audio(film.renders.final)[0])
    assert audio.shape[0] >= 26 * per_frame - 1024
    assert audio[: 8 * per_frame].max() < 0.05  # silence where the silent shot plays
    at = (17 + 3) * per_frame
    window = audio[at - per_frame // 4: at + per_frame // 4]
    assert window.max() > 0.3 and abs(int(np.argmax(window)) - per_frame // 4) < per_frame // 8


# ------------------------------------------------------------------ the encode stage on a segment


def _run_encode(film: Film, index: int, tmp: Path, **changes: object) -> tuple[dict, Path, list]:
    import threading
    from dataclasses import replace as dc_replace

    from pipeline.memory.loaded import LoadedModels
    from pipeline.memory.plan import StagePlan
    from pipeline.stages.base import StageContext
    from pipeline.stages.encode import EncodeStage

    job = film.job.segment_job(index)
    if "keep" in changes:
        job.segment = dc_replace(job.segment, keep=changes.pop("keep"))
    job = dc_replace(job, **changes)
    events: list = []
    cancel = threading.Event()
    ctx = StageContext(emit=events.append, cancel=cancel, models=LoadedModels(), plan=StagePlan(name="cpu"))
    out = tmp / f"enc-{index}"
    out.mkdir()
    seg = film.segments[index]
    meta = EncodeStage().run(ctx, job, {"upscale": seg.frames, "draft": seg.draft}, out)
    return meta, out / "segment.mp4", events


def test_the_encode_stage_writes_the_kept_frames_at_the_storyboards_fps_with_an_idr_after_the_anchor(
        tmp_path: Path) -> None:
    film = Film(tmp_path, encoded=False)
    meta, mp4, events = _run_encode(film, 1, tmp_path)
    assert meta == {"frames": 9, "size": [W, H], "fps": FPS}
    means, rate, times = _video(mp4)
    assert len(means) == 9 and rate == FPS and times == pytest.approx([i / FPS for i in range(9)])
    with av.open(str(mp4)) as c:
        keys = [bool(f.key_frame) for f in c.decode(video=0)]
    assert keys[:2] == [True, True] and not any(keys[2:])  # frame 1 starts over: the film can drop frame 0
    assert _audio(mp4).shape[1] == pytest.approx(9 * AUDIO_RATE / FPS, abs=1024)
    steps = [(e.stage, e.step, e.total) for e in events if isinstance(e, protocol.StepProgress)]
    assert steps[-1] == ("encode", 9, 9) and [s[1] for s in steps] == list(range(1, 10))
    meta, mp4, _ = _run_encode(film, 0, tmp_path, keep=5)  # a shot that keeps 5 frames, not chained
    assert meta["frames"] == 5 and len(_video(mp4)[0]) == 5
    with av.open(str(mp4)) as c:
        assert [bool(f.key_frame) for f in c.decode(video=0)] == [True, False, False, False, False]


def test_the_encode_stage_leaves_out_audio_the_storyboard_turned_off(tmp_path: Path) -> None:
    film = Film(tmp_path, encoded=False)
    _, mp4, _ = _run_encode(film, 2, tmp_path, audio=False)
    with av.open(str(mp4)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1
    (film.segments[2].draft.path / "audio.npy").unlink()  # a draft without audio: silent, not an error
    (tmp_path / "again").mkdir()
    _, mp4, _ = _run_encode(film, 2, tmp_path / "again")
    with av.open(str(mp4)) as c:
        assert len(c.streams.audio) == 0


@pytest.mark.parametrize("blocked,what", [("final.mp4", "final film"), ("film.json", "film manifest")])
def test_a_film_that_cannot_be_written_is_one_line_naming_the_file(tmp_path: Path, blocked: str, what: str) -> None:
    from pipeline.render.errors import RenderError

    film = Film(tmp_path)
    target = film.renders.root / blocked
    (target / "in-the-way").mkdir(parents=True)  # a folder where the file goes: replacing it fails
    with pytest.raises(RenderError) as info:
        film.assemble()
    msg = info.value.message
    assert msg.startswith(f"{what} not written: {target}: ") and "\n" not in msg
    assert info.value.kind == "write_failed"
    assert sorted(p.name for p in film.renders.root.iterdir()) == (["final.mp4"] if blocked == "final.mp4"
                                                                  else ["film.json", "final.mp4"])


def test_the_encode_stage_reads_the_drafts_sample_rate(tmp_path: Path) -> None:
    """The vocoder's 24 kHz audio is resampled, not played at 48 kHz: a click stays at its frame."""
    film = Film(tmp_path, encoded=False, clicks={"two": [5]})
    _, mp4, _ = _run_encode(film, 1, tmp_path)
    audio = np.abs(_audio(mp4)[0])
    per_frame = AUDIO_RATE // FPS
    at = 5 * per_frame
    window = audio[at - per_frame // 4: at + per_frame // 4]
    assert window.max() > 0.3 and abs(int(np.argmax(window)) - per_frame // 4) < per_frame // 8
