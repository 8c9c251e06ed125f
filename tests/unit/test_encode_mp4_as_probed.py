"""What a user checks on the MP4s Sulphur writes, read back with ffprobe or PyAV (issue 24).

encode.py is mostly PyAV calls with keyword arguments; a mutant that drops one gets PyAV's
or x264's default. These tests read what a player, ``ffprobe`` or ``mediainfo`` would show
(x264's settings record, the Y'CbCr values, stream start times, where audio sits in the
file, the reason a film was re-encoded) so a changed default is seen. Tiny synthetic frames.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.stages.encode import (
    AUDIO_RATE,
    FilmPart,
    NotJoinable,
    encode_in_fresh_process,
    encode_mp4,
    join_film,
    remux_film,
)

W, H = 64, 48
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")


def _frames(n: int, base: int = 30) -> np.ndarray:
    return np.stack([np.full((H, W, 3), base + 7 * i, np.uint8) for i in range(n)])


def _tone(samples: int) -> np.ndarray:
    t = np.arange(samples) / AUDIO_RATE
    return np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]) * 0.3  # float64, as numpy makes it


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _x264_settings(path: Path) -> dict[str, str]:
    """x264's own record of its settings (the SEI ``mediainfo`` shows as "Encoding settings")."""
    with av.open(str(path)) as c:
        first = bytes(next(p for p in c.demux(video=0) if p.size))
    options = re.search(rb"options: ([ -~]*)", first)
    assert options, "no x264 settings SEI in the first packet"
    return dict(o.split("=", 1) for o in options.group(1).decode().split() if "=" in o)


@needs_ffprobe
def test_a_segment_is_what_ffprobe_should_report(tmp_path: Path) -> None:
    out = tmp_path / "seg.mp4"
    encode_mp4(out, _frames(9), fps=8, size=(W, H), audio=_tone(AUDIO_RATE).astype(np.float32))
    info = _ffprobe(out)
    video, audio = (next(s for s in info["streams"] if s["codec_type"] == k) for k in ("video", "audio"))
    assert {k: video[k] for k in ("codec_name", "profile", "pix_fmt", "width", "height", "color_range",
                                  "color_space", "color_transfer", "color_primaries", "r_frame_rate")} == {
        "codec_name": "h264", "profile": "High", "pix_fmt": "yuv420p", "width": W, "height": H,
        "color_range": "tv", "color_space": "bt709", "color_transfer": "bt709", "color_primaries": "bt709",
        "r_frame_rate": "8/1"}
    assert {k: audio[k] for k in ("codec_name", "profile", "sample_rate", "channels", "channel_layout")} == {
        "codec_name": "aac", "profile": "LC", "sample_rate": str(AUDIO_RATE), "channels": 2,
        "channel_layout": "stereo"}
    assert float(video["start_time"]) == 0.0 and float(audio["start_time"]) == 0.0  # they start together
    assert abs(int(audio["bit_rate"]) - 192_000) < 40_000
    assert "mp4" in info["format"]["format_name"]


def test_x264_records_crf_18_and_preset_medium(tmp_path: Path) -> None:
    """What ``mediainfo`` shows as "Encoding settings" (x264's defaults would be CRF 23); no ffprobe needed."""
    out = tmp_path / "seg.mp4"
    encode_mp4(out, _frames(3), fps=8, size=(W, H))
    settings = _x264_settings(out)
    assert settings["rc"] == "crf" and settings["crf"] == "18.0"
    assert (settings["subme"], settings["ref"], settings["me"], settings["bframes"]) == ("7", "3", "hex", "3")
    assert settings["sliced_threads"] == "0" and settings["open_gop"] == "0"


#: Pure colours in 8-bit limited-range Y'CbCr, BT.709 matrix (BT.601 would give red Y'=81, green Y'=145).
BT709 = {(255, 0, 0): (63, 102, 240), (0, 255, 0): (173, 42, 26), (0, 0, 255): (32, 240, 118),
         (255, 255, 255): (235, 128, 128)}


def test_colours_are_converted_with_the_bt709_matrix_the_stream_is_tagged_with(tmp_path: Path) -> None:
    """The tags say BT.709; a player decodes with that matrix, so the conversion must use it too
    (with BT.601 every saturated colour shifts: pure green by 28 levels of Y')."""
    out = tmp_path / "colours.mp4"
    colours = list(BT709)
    encode_mp4(out, np.stack([np.full((H, W, 3), c, np.uint8) for c in colours]), fps=8, size=(W, H))
    with av.open(str(out)) as c:
        planes = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    for rgb, plane in zip(colours, planes, strict=True):
        y, u, v = plane[:H].mean(), plane[H:H + H // 4].mean(), plane[H + H // 4:].mean()
        assert np.allclose((y, u, v), BT709[rgb], atol=2), f"{rgb} came out as Y'CbCr {(y, u, v)}"


def test_audio_as_numpy_makes_it_float64_is_encoded_like_float32(tmp_path: Path) -> None:
    tone = _tone(AUDIO_RATE // 2)
    pcm = []
    for name, audio in (("f64.mp4", tone), ("f32.mp4", tone.astype(np.float32))):
        encode_mp4(tmp_path / name, _frames(4), fps=8, size=(W, H), audio=audio)
        with av.open(str(tmp_path / name)) as c:
            frames = list(c.decode(audio=0))
        assert frames[0].pts == 0  # the first sample plays at 0, with the first frame
        pcm.append(np.concatenate([f.to_ndarray() for f in frames], axis=1))
    assert pcm[0].shape == pcm[1].shape and np.array_equal(pcm[0], pcm[1])


def test_an_mp4_is_written_whatever_the_file_is_called(tmp_path: Path) -> None:
    """A caller may write to a temporary without the .mp4 suffix and rename it afterwards."""
    seg = tmp_path / "segment.mp4.tmp"
    encode_mp4(seg, _frames(5), fps=8, size=(W, H))
    film = tmp_path / "final.partial"
    n, reason = join_film(film, [FilmPart(_frames(5), None, AUDIO_RATE, encoded=seg, name="a")], fps=8, size=(W, H))
    assert (n, reason) == (5, None)  # copied, not re-encoded
    for path in (seg, film):
        with av.open(str(path)) as c:
            assert "mp4" in c.format.name and c.streams.video[0].frames == 5


# ------------------------------------------------------------------ the film: why it was re-encoded


def _encoded(tmp_path: Path, name: str, n: int = 5, fps: int = 8, **kw) -> FilmPart:
    path = tmp_path / f"{name}.mp4"
    encode_mp4(path, _frames(n), fps=fps, size=(W, H), **kw)
    return FilmPart(_frames(n), None, AUDIO_RATE, encoded=path, name=name)


def _x264(path: Path, n: int = 5, *, fmt: str = "mp4", fps: int = 8, pix_fmt: str = "yuv420p",
          primaries: int = 1) -> Path:
    """An H.264 file as another tool might write it (the same x264 settings as encode_mp4)."""
    with av.open(str(path), mode="w", format=fmt) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, pix_fmt
        s.options = {"crf": "18", "preset": "medium", "forced-idr": "1"}
        cc = s.codec_context
        cc.thread_type = "FRAME"
        cc.color_trc = cc.colorspace = cc.color_range = 1
        cc.color_primaries = primaries
        for i, frame in enumerate(_frames(n)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode())
    return path


def _copy(src: Path, dst: Path, *, dts_shift: int = 0, first: int = 0) -> Path:
    """``src``'s video packets into a new MP4 from packet ``first`` on, decode times moved back by ``dts_shift``."""
    with av.open(str(src)) as i, av.open(str(dst), mode="w", format="mp4") as o:
        out = o.add_stream_from_template(i.streams.video[0])
        for k, pkt in enumerate(p for p in i.demux(video=0) if p.size):
            if k >= first:
                pkt.dts -= dts_shift
                pkt.stream = out
                o.mux(pkt)
    return dst


def _reason(tmp_path: Path, parts: list[FilmPart]) -> str:
    """Why join_film re-encoded these parts (and that it did: a whole film of their frames)."""
    n, reason = join_film(tmp_path / "film.mp4", parts, fps=8, size=(W, H))
    assert n == sum(len(p.frames) - p.skip_first for p in parts) and reason is not None
    return reason


@pytest.mark.parametrize("what,other", [
    ("pix_fmt", {"pix_fmt": "yuv444p"}),
    ("time base", {"fps": 24}),
    ("colour tags", {"primaries": 6}),  # SMPTE 170M (NTSC) primaries
])
def test_a_film_reencoded_for_a_mismatch_names_what_differs(tmp_path: Path, what: str, other: dict) -> None:
    b = FilmPart(_frames(5), None, AUDIO_RATE, encoded=_x264(tmp_path / "b.mp4", **other), name="b")
    a = _encoded(tmp_path, "a")
    with av.open(str(a.encoded)) as c1, av.open(str(b.encoded)) as c2:
        s1, s2 = c1.streams.video[0], c2.streams.video[0]
        values = {"pix_fmt": (s2.codec_context.pix_fmt, s1.codec_context.pix_fmt),
                  "time base": (s2.time_base, s1.time_base),
                  "colour tags": ((6, 1, 1, 1), (1, 1, 1, 1))}[what]
    assert _reason(tmp_path, [a, b]) == f"segment b's {what} differs from segment a's: {values[0]} vs {values[1]}"


def test_an_h264_file_without_an_avcc_record_is_named_and_reencoded(tmp_path: Path) -> None:
    """Raw Annex B H.264 (an elementary stream saved as segment.mp4) has no avcC to copy."""
    raw = FilmPart(_frames(5), None, AUDIO_RATE, encoded=_x264(tmp_path / "r.mp4", fmt="h264"), name="r")
    assert _reason(tmp_path, [raw, _encoded(tmp_path, "a")]) == "segment r's H.264 has no avcC extradata"


def test_a_segment_cut_to_start_on_a_non_key_frame_is_named_and_reencoded(tmp_path: Path) -> None:
    cut = _copy(_encoded(tmp_path, "whole", 6).encoded, tmp_path / "b.mp4", first=1)
    parts = [_encoded(tmp_path, "a"), FilmPart(_frames(5), None, AUDIO_RATE, encoded=cut, name="b")]
    assert _reason(tmp_path, parts) == "segment b's first frame is not an IDR"


def test_a_segment_whose_decode_times_reach_back_into_the_previous_one_is_refused(tmp_path: Path) -> None:
    """Equal decode times at a seam are an overlap too: a decoder would get two pictures at one time."""
    a, b = _encoded(tmp_path, "a"), _encoded(tmp_path, "b0")
    with av.open(str(b.encoded)) as c:
        tick = int(1 / (8 * c.streams.video[0].time_base))
    b = FilmPart(b.frames, None, AUDIO_RATE, encoded=_copy(b.encoded, tmp_path / "b.mp4", dts_shift=tick), name="b")
    with pytest.raises(NotJoinable) as info:
        remux_film(tmp_path / "x.mp4", [a, b], fps=8, size=(W, H))
    assert str(info.value) == "segment b's decode timestamps overlap segment a's"
    assert _reason(tmp_path, [a, b]) == str(info.value)


def test_a_full_disk_under_the_film_is_raised_not_retried(tmp_path: Path) -> None:
    """ENOSPC: a re-encode would only fill the disk again (``final.mp4`` here points at /dev/full)."""
    film = tmp_path / "final.mp4"
    film.symlink_to("/dev/full")
    with pytest.raises(OSError) as info:
        join_film(film, [_encoded(tmp_path, "a")], fps=8, size=(W, H))
    assert info.value.errno == errno.ENOSPC
    assert film.is_symlink()  # not removed for a second try


def test_a_muxer_error_is_the_reason_given_for_a_reencode(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    film = tmp_path / "final.mp4"
    film.symlink_to(folder)  # the copy cannot open it; the re-encode replaces the link with a file
    n, reason = join_film(film, [_encoded(tmp_path, "a")], fps=8, size=(W, H))
    assert n == 5 and reason is not None and reason.startswith("muxer error: ")
    assert film.is_file() and not film.is_symlink()


def test_a_long_films_audio_is_interleaved_with_its_video(tmp_path: Path) -> None:
    """A player reading the film front to back (a download, a network share) finds each second's
    audio beside its video, not ten seconds later (FFmpeg's own interleaving gives up after 10 s)."""
    n, fps = 160, 8  # 20 s
    frames = np.stack([np.full((H, W, 3), (3 * i) % 256, np.uint8) for i in range(n)])
    encode_mp4(tmp_path / "a.mp4", frames, fps=fps, size=(W, H))
    part = FilmPart(frames, np.zeros((2, 20 * 24_000), np.float32), 24_000, encoded=tmp_path / "a.mp4", name="a")
    assert join_film(tmp_path / "film.mp4", [part], fps=fps, size=(W, H)) == (n, None)
    with av.open(str(tmp_path / "film.mp4")) as c:
        packets = sorted((p.pos, p.stream.type, float(p.dts * p.time_base)) for p in c.demux() if p.size)
    video_time, skew = 0.0, 0.0
    for _, kind, t in packets:
        if kind == "video":
            video_time = t
        else:
            skew = max(skew, abs(t - video_time))
    assert skew < 1.0, f"audio lies {skew:.1f} s away from the video beside it in the file"


# ------------------------------------------------------------------ the encoder child


def test_the_encoder_child_imports_this_checkout_and_keeps_the_callers_path(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTHONPATH may name another checkout (a developer with two) and folders of wheels the child
    needs (an offline install): the child runs this checkout's code, with that path after it."""
    other = tmp_path / "elsewhere"
    (other / "pipeline").mkdir(parents=True)
    (other / "pipeline" / "__init__.py").write_text("raise ImportError('the other checkout was imported')\n")
    marker = tmp_path / "site-ran"
    (other / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'a').write('ran')\n")
    # before what is set already (mutmut's trampoline, offline wheels): the child needs that too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(other), os.environ.get("PYTHONPATH")) if p))
    np.save(tmp_path / "frames.npy", _frames(3))
    monkeypatch.chdir(tmp_path)  # a worker started elsewhere (``python -m`` would find a checkout in cwd)
    n = encode_in_fresh_process(tmp_path / "seg.mp4", tmp_path / "frames.npy", None, AUDIO_RATE, fps=8, size=(W, H))
    assert n == 3 and marker.read_text() == "ran"


def _children() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != "zombie"]


def test_a_cancel_stops_the_encoder_child_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress arrives frame by frame while the child encodes, and a cancel kills it there:
    the MP4 is left unfinished (no index) and no encoder keeps running."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # a user's shell: the child's stdout is a buffered pipe
    rng = np.random.default_rng(0)
    np.save(tmp_path / "frames.npy", rng.integers(0, 255, (400, 96, 128, 3), dtype=np.uint8))

    class Cancelled(Exception):
        pass

    def cancel(i: int) -> None:
        raise Cancelled(i)

    with pytest.raises(Cancelled) as info:
        encode_in_fresh_process(tmp_path / "c.mp4", tmp_path / "frames.npy", None, AUDIO_RATE, fps=8,
                                size=(128, 96), on_frame=cancel)
    assert info.value.args == (1,)
    assert not [p for p in _children() if "pipeline.stages.encode" in " ".join(p.cmdline())]
    with pytest.raises(av.error.FFmpegError):
        av.open(str(tmp_path / "c.mp4")).close()  # 400 frames would take seconds; it stopped near the first


def test_an_encoder_child_killed_without_a_word_says_so(tmp_path: Path) -> None:
    """The kernel's OOM killer leaves no message: the error names the signal and says there was none."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "frames.npy", rng.integers(0, 255, (400, 96, 128, 3), dtype=np.uint8))

    def kill_child(i: int) -> None:
        if i == 1:
            for p in _children():
                if "pipeline.stages.encode" in " ".join(p.cmdline()):
                    p.kill()

    with pytest.raises(RuntimeError) as info:
        encode_in_fresh_process(tmp_path / "k.mp4", tmp_path / "frames.npy", None, AUDIO_RATE, fps=8,
                                size=(128, 96), on_frame=kill_child)
    assert str(info.value) == "the encoder process exited with -9: no message"


def test_the_encoder_child_flushes_each_frame_number_as_it_is_encoded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's stdout is a pipe (block-buffered): unflushed, the parent would see no progress and
    could not cancel until the whole segment was encoded. (In-process: a ``python -m`` child runs its
    module as ``__main__``, where mutmut's mutants never switch on.)"""
    from pipeline.stages.encode import _child

    class Pipe:
        def __init__(self) -> None:
            self.pending, self.delivered = "", []

        def write(self, text: str) -> int:
            self.pending += text
            return len(text)

        def flush(self) -> None:
            self.delivered += self.pending.split()
            self.pending = ""

    np.save(tmp_path / "frames.npy", _frames(4))
    pipe, seen = Pipe(), []
    monkeypatch.setattr(sys, "stdout", pipe)
    import pipeline.stages.encode as encode_mod

    real = encode_mod.encode_film

    def encode_film(*args, on_frame, **kw) -> int:  # what the parent has read when each frame is done
        return real(*args, on_frame=lambda i: (on_frame(i), seen.append(list(pipe.delivered))), **kw)

    monkeypatch.setattr(encode_mod, "encode_film", encode_film)
    spec = {"path": str(tmp_path / "c.mp4"), "frames": str(tmp_path / "frames.npy"), "audio": None,
            "sample_rate": AUDIO_RATE, "fps": 8, "size": [W, H], "keyframes": [], "limit": None}
    assert _child(json.dumps(spec)) == 0
    assert seen == [["1"], ["1", "2"], ["1", "2", "3"], ["1", "2", "3", "4"]]


def test_an_empty_frame_file_encodes_no_frame_and_says_0(tmp_path: Path) -> None:
    np.save(tmp_path / "frames.npy", np.zeros((0, H, W, 3), np.uint8))
    seen: list[int] = []
    assert encode_in_fresh_process(tmp_path / "e.mp4", tmp_path / "frames.npy", None, AUDIO_RATE, fps=8,
                                   size=(W, H), on_frame=seen.append) == 0
    assert seen == []

