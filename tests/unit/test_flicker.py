"""Flicker analysis on synthetic videos written with PyAV, checked against FFmpeg's psnr."""

from __future__ import annotations

import argparse
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.cli import flicker as flicker_cli
from pipeline.quality import flicker
from pipeline.wire.protocol import decode_event, encode

W, H = 96, 64


# ------------------------------------------------------------------------- helpers


def moving_y(n: int, planted: dict[int, int] | None = None) -> list[np.ndarray]:
    """Smooth motion (a soft blob panning 1 px per frame over a gradient) in limited-range
    Y, with planted flicker: ``planted[i] = +levels`` brightens the whole of frame i."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    out = []
    for i in range(n):
        y = 60 + 0.8 * xx + 40 * np.exp(-((xx - 20 - i) ** 2 + (yy - 32) ** 2) / 120.0)
        y += (planted or {}).get(i, 0)
        out.append(np.clip(np.round(y), 16, 235).astype(np.uint8))
    return out


def yuv_frame(y: np.ndarray) -> av.VideoFrame:
    """A yuv420p frame with this Y plane and neutral chroma."""
    h, w = y.shape
    buf = np.full((h * 3 // 2, w), 128, np.uint8)
    buf[:h] = y
    return av.VideoFrame.from_ndarray(buf, format="yuv420p")


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24, lossless: bool = True) -> Path:
    """H.264 via PyAV: 2-D arrays are Y planes (lossless, so the file holds exactly them),
    H×W×3 arrays RGB (encoded like a real render, crf 18)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"qp": "0", "preset": "ultrafast"} if lossless else {"crf": "18", "preset": "ultrafast"}
        for i, f in enumerate(frames):
            vf = yuv_frame(f) if f.ndim == 2 else av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def ffmpeg_psnr_y(path: Path) -> list[float]:
    """Independent reference: FFmpeg's own psnr filter on each consecutive decoded pair."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    h, w = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
    graph = av.filter.Graph()
    a = graph.add_buffer(width=w, height=h, format="yuv420p", time_base=Fraction(1, 24))
    b = graph.add_buffer(width=w, height=h, format="yuv420p", time_base=Fraction(1, 24))
    psnr, sink = graph.add("psnr"), graph.add("buffersink")
    a.link_to(psnr, 0, 0)
    b.link_to(psnr, 0, 1)
    psnr.link_to(sink)
    graph.configure()
    out = []
    for i in range(len(frames) - 1):
        fa = av.VideoFrame.from_ndarray(frames[i], format="yuv420p")
        fb = av.VideoFrame.from_ndarray(frames[i + 1], format="yuv420p")
        fa.pts = fb.pts = i
        a.push(fa)
        b.push(fb)
        out.append(float(sink.pull().metadata["lavfi.psnr.psnr.y"]))
    return out


def cli(video: Path, *extra: str, seams: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(video=video, json="--json" in extra, worst=5, seams=seams)


# --------------------------------------------------------------------------- tests


def test_planted_flicker_is_worst_and_matches_ffmpeg(tmp_path: Path) -> None:
    planted = {12: 30, 27: 15}  # frame → brightness jump in Y levels
    path = write_video(tmp_path / "flicker.mp4", moving_y(36, planted))
    stats = flicker.analyze_video(path, worst=4)

    assert stats.frames == 36 and len(stats.psnr) == 35
    # Each planted frame makes two bad transitions (into it and out of it), the larger
    # amplitude first.
    assert set(stats.worst[:2]) == {11, 12}
    assert set(stats.worst[2:]) == {26, 27}
    ref = ffmpeg_psnr_y(path)
    assert len(ref) == len(stats.psnr)
    assert max(abs(x - r) for x, r in zip(stats.psnr, ref, strict=True)) < 0.05
    # A uniform jump of A levels on top of ~1 px of motion: PSNR close to 20·log10(255/A).
    assert stats.psnr[12] == pytest.approx(20 * math.log10(255 / 30), abs=1.0)
    assert stats.minimum == pytest.approx(min(ref), abs=0.05)
    assert stats.worst_transitions()[0]["time"] == pytest.approx(stats.times[stats.worst[0] + 1])


def test_in_memory_rgb_matches_reference_formula() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(40, 200, (H, W, 3)).astype(np.int16)
    frames = []
    for i in range(20):
        f = np.roll(base, i, axis=1)
        if i == 7:
            f = f + np.array([0, 0, 40])  # a blue-only flash: matrix matters
        frames.append(np.clip(f, 0, 255).astype(np.uint8))

    def ref_db(a: np.ndarray, b: np.ndarray, kr: float, kb: float) -> float:
        def y(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float64)
            return 16 + 219 / 255 * (kr * x[..., 0] + (1 - kr - kb) * x[..., 1] + kb * x[..., 2])
        return 10 * math.log10(255**2 / np.mean((y(a) - y(b)) ** 2))

    for matrix, kr, kb in (("bt709", 0.2126, 0.0722), ("bt601", 0.299, 0.114)):
        # A generator: the analysis must stream, not need the whole array.
        stats = flicker.analyze_frames((f for f in frames), fps=24, worst=2, matrix=matrix)
        ref = [ref_db(a, b, kr, kb) for a, b in zip(frames, frames[1:], strict=False)]
        assert max(abs(x - r) for x, r in zip(stats.psnr, ref, strict=True)) < 0.05
        assert set(stats.worst) == {6, 7}
    assert flicker.analyze_frames(np.stack(frames)).psnr == pytest.approx(
        flicker.analyze_frames(frames).psnr)


def test_planted_flicker_survives_real_encode(tmp_path: Path) -> None:
    """RGB frames through a lossy H.264 encode, as a render would be: still the worst."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(30):
        img = np.stack([(xx * 2 + i) % 256, (yy * 3) % 256, np.full_like(xx, 90)], -1).astype(np.int16)
        if i == 18:
            img += 25
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    stats = flicker.analyze_video(write_video(tmp_path / "rgb.mp4", frames, lossless=False), worst=2)
    assert set(stats.worst) == {17, 18}
    mem = flicker.analyze_frames(np.stack(frames), worst=2)
    assert set(mem.worst) == {17, 18}


def test_identical_frames_are_inf_not_a_crash(tmp_path: Path) -> None:
    ys = moving_y(6)
    ys[3] = ys[2].copy()  # a duplicated frame
    stats = flicker.analyze_frames(ys)
    assert math.isinf(stats.psnr[2]) and stats.identical == 1
    assert math.isfinite(stats.mean)  # mean over finite pairs
    d = stats.to_dict()
    assert d["psnr"][2] is None  # JSON: null = identical
    json.dumps(d, allow_nan=False)
    again = flicker.FlickerStats.from_dict(json.loads(json.dumps(d)))  # cached with a segment
    assert math.isinf(again.psnr[2]) and again.worst == stats.worst and again.frames == stats.frames
    assert again.psnr[0] == pytest.approx(stats.psnr[0], abs=1e-3)
    event = stats.to_event("shot1", "draft", job_id="j")
    assert decode_event(encode(event)).psnr[2] == flicker.WIRE_INF_DB

    still = flicker.analyze_frames([ys[0]] * 4)
    assert all(math.isinf(v) for v in (still.mean, still.median, still.minimum, still.p5))
    assert flicker.seam_psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)) == math.inf


def test_one_frame_video_is_defined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_video(tmp_path / "one.mp4", moving_y(1))
    stats = flicker.analyze_video(path)
    assert stats.frames == 1 and stats.psnr == [] and stats.worst == []
    assert math.isinf(stats.minimum)
    assert flicker_cli.main(cli(path)) == 0
    assert "no transitions" in capsys.readouterr().out


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_frames = tmp_path / "no_frames.avi"  # a video stream with zero frames
    no_stream = tmp_path / "no_stream.mp4"  # MP4 drops a stream that never got a sample
    for path, codec in ((no_frames, "mpeg4"), (no_stream, "libx264")):
        with av.open(str(path), "w") as c:
            s = c.add_stream(codec, rate=24)
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            c.start_encoding()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    good = write_video(tmp_path / "good.mp4", moving_y(10))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {no_frames: "no frames", no_stream: "no video stream", garbage: "not a readable video",
             truncated: "not a readable video", tmp_path / "missing.mp4": "no such file", tmp_path: "not a file"}
    for path, why in cases.items():
        assert flicker_cli.main(cli(path)) == 2, path
        err = capsys.readouterr().err.strip()
        assert err.startswith("sulphur flicker: ") and why in err, err
        assert "\n" not in err and "Traceback" not in err
        assert "Errno" not in err and "1094995529" not in err, err  # PyAV's errno, not a reason
    with pytest.raises(flicker.FlickerError, match="no frames"):
        flicker.analyze_frames([])


def _film(tmp_path: Path, order_by: str) -> tuple[Path, list[int]]:
    """renders/story/segments: a → b continues smoothly, b → c jumps +25 levels."""
    ys = moving_y(30)
    parts = {"a": ys[:10], "b": ys[10:20], "c": [np.clip(y.astype(int) + 25, 0, 255).astype(np.uint8)
                                                   for y in ys[20:]]}
    render = tmp_path / "renders" / "story"
    # Written in the wrong order so that only the chosen source of order can be right.
    for i, sid in enumerate(("c", "b", "a")):
        p = write_video(render / "segments" / f"{sid}.mp4", parts[sid])
        os.utime(p, (1_000_000 + i, 1_000_000 + (i if order_by == "manifest" else -i)))
    if order_by in ("manifest", "storyboard"):
        # A storyboard in the other order: film.json (what was rendered) must win.
        (tmp_path / "story.toml").write_text(
            '[project]\ntitle = "t"\n\n[[segment]]\nid = "c"\nprompt = "x"\n\n'
            '[[segment]]\nid = "b"\nprompt = "y"\n\n[[segment]]\nid = "a"\nprompt = "z"\n')
    if order_by == "manifest":
        (render / "film.json").write_text(json.dumps({"segments": [
            {"id": "a", "frames": 10, "offset": 0}, {"id": "b", "frames": 10, "offset": 10},
            {"id": "c", "frames": 10, "offset": 20}]}))
    if order_by == "storyboard":
        (tmp_path / "story.toml").write_text(
            '[project]\ntitle = "t"\n\n[[segment]]\nid = "a"\nprompt = "x"\n\n'
            '[[segment]]\nid = "b"\nprompt = "y"\n\n[[segment]]\nid = "c"\nprompt = "z"\n')
    return render, [10, 20]


@pytest.mark.parametrize("order_by", ["manifest", "mtime", "storyboard"])
def test_seam_with_brightness_jump_is_flagged(tmp_path: Path, order_by: str) -> None:
    render, offsets = _film(tmp_path, order_by)
    report = flicker.analyze_seams(render)
    assert report["order"] == {"manifest": "film.json", "mtime": "file mtime",
                               "storyboard": "storyboard story.toml"}[order_by]
    assert [s["id"] for s in report["segments"]] == ["a", "b", "c"]
    seams = report["seams"]
    assert [s["frame"] for s in seams] == offsets
    assert [s["flagged"] for s in seams] == [False, True]
    assert seams[1]["psnr"] == pytest.approx(20 * math.log10(255 / 25), abs=1.0)
    # The drift block sees c brighter than the reference (a's last frame).
    assert report["segments"][2]["drift"]["L_mean"] > 5



def test_seams_follow_film_json_when_frame_0_repeats_the_anchor(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The runner leaves out each continuation's frame 0 (it repeats the anchor) and says
    so in film.json: seams land where the film has them and compare the previous last
    frame with frame 1, as a viewer sees it."""
    ys = moving_y(28)
    bright = [np.clip(y.astype(int) + 25, 0, 255).astype(np.uint8) for y in ys[19:]]
    render = tmp_path / "renders" / "story"
    for sid, frames in (("a", ys[:10]), ("b", [ys[9]] + ys[10:19]), ("c", [ys[18]] + bright)):
        write_video(render / "segments" / f"{sid}.mp4", frames)
    (render / "film.json").write_text(json.dumps({"segments": [
        {"id": "a", "frames": 10, "offset": 0, "skip_first": False},
        {"id": "b", "frames": 10, "offset": 10, "skip_first": True},
        {"id": "c", "frames": 10, "offset": 19, "skip_first": True}]}))
    seams = flicker.analyze_seams(render)["seams"]
    assert [s["frame"] for s in seams] == [10, 19]
    assert [s["flagged"] for s in seams] == [False, True]
    assert seams[0]["psnr"] == pytest.approx(flicker.psnr_y(ys[9], ys[10]), abs=0.01)
    film = write_video(tmp_path / "final.mp4", ys[:19] + bright)
    assert flicker_cli.main(cli(film, "--json", seams=render)) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["film_psnr"] for s in data["seams"]["seams"]] == pytest.approx([s["psnr"] for s in seams], abs=0.01)


def test_cli_report_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    render, _ = _film(tmp_path, "manifest")
    film = write_video(tmp_path / "film.mp4", moving_y(24, {9: 20}))
    assert flicker_cli.main(cli(film, seams=render)) == 0
    out = capsys.readouterr().out
    assert any(ch in out for ch in flicker.SPARK) and "worst transitions" in out
    assert "frame     8 → 9" in out and "FLASH" in out
    assert flicker_cli.main(cli(film, "--json", seams=render)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["video"]["frames"] == 24
    assert {w["from"] for w in data["video"]["worst"][:2]} == {8, 9}
    assert data["seams"]["seams"][1]["flagged"] is True
    # The film as the runner would concatenate it: its own PSNR at the seam frames too.
    parts = [flicker.first_last_frames(render / "segments" / f"{s}.mp4") for s in "abc"]
    assert [p[2] for p in parts] == [10, 10, 10]
    whole = write_video(tmp_path / "whole.mp4", moving_y(20) + [
        np.clip(y.astype(int) + 25, 0, 255).astype(np.uint8) for y in moving_y(30)[20:]])
    assert flicker_cli.main(cli(whole, "--json", seams=render)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["seams"]["seams"][1]["film_psnr"] == pytest.approx(data["seams"]["seams"][1]["psnr"], abs=0.05)
    assert data["video"]["worst"][0]["from"] == 19


def test_seams_drift_against_named_reference_image(tmp_path: Path) -> None:
    render, _ = _film(tmp_path, "storyboard")
    ref = np.clip(moving_y(1)[0].astype(int) + 40, 0, 255).astype(np.uint8)
    with av.open(str(tmp_path / "look.png"), "w") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = W, H, "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(np.repeat(ref[..., None], 3, -1), format="rgb24")):
            c.mux(p)
    story = tmp_path / "story.toml"
    story.write_text(story.read_text().replace('title = "t"', 'title = "t"\ndrift_reference = "look.png"'))
    report = flicker.analyze_seams(render)
    assert report["drift_reference"].endswith("look.png")
    assert all(seg["drift"]["L_mean"] < -3 for seg in report["segments"])  # all darker than the look


def test_cli_entry_point_exit_code(tmp_path: Path) -> None:
    """Through the real console entry: a one-line error and exit 2, no traceback."""
    import subprocess
    import sys

    from tests.functional.conftest import checkout_env

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "flicker", str(tmp_path / "nope.mp4")],
                       cwd=root, capture_output=True, text=True, timeout=120, env=checkout_env())
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
