"""Encode details a viewer would notice, on tiny synthetic frames with real PyAV (issue 24).

The frame rate a segment is written at, the audio at a chained seam (one frame of samples
left out with the repeated anchor frame), audio of odd shapes fitted to the video's length,
the encoder child's own entry point, and segments the film cannot copy.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.stages.encode import (
    AUDIO_RATE,
    FilmPart,
    NotJoinable,
    _child,
    _film_audio,
    encode_mp4,
    join_film,
    remux_film,
)

W, H = 64, 48


def _frames(n: int, base: int = 30) -> np.ndarray:
    return np.stack([np.full((H, W, 3), base + 7 * i, np.uint8) for i in range(n)])


def _times(path: Path) -> tuple[object, list[float], list[bool]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return c.streams.video[0].average_rate, [f.time for f in frames], [bool(f.key_frame) for f in frames]


@pytest.mark.parametrize("fps", [8, 25, 30])
def test_a_segment_plays_at_the_fps_it_is_given(tmp_path: Path, fps: int) -> None:
    out = tmp_path / "seg.mp4"
    seen: list[int] = []
    assert encode_mp4(out, _frames(7), fps=fps, size=(W, H), on_frame=seen.append) == 7
    rate, times, keys = _times(out)
    assert rate == fps and times == pytest.approx([i / fps for i in range(7)])
    assert seen == list(range(1, 8)) and keys == [True] + [False] * 6


def test_the_frames_asked_to_start_over_are_keyframes_and_colours_are_tagged_bt709(tmp_path: Path) -> None:
    out = tmp_path / "seg.mp4"
    encode_mp4(out, _frames(9), fps=8, size=(W, H), keyframes=(1, 5))
    assert _times(out)[2] == [True, True, False, False, False, True, False, False, False]
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range) == (1, 1, 1, 1)
        assert cc.pix_fmt == "yuv420p"


def _ramp(frames: int, fps: int) -> np.ndarray:
    """Stereo audio whose every sample says its own index (left) and minus it (right)."""
    n = round(frames * AUDIO_RATE / fps)
    ramp = np.arange(n, dtype=np.float32)
    return np.stack([ramp, -ramp])


def test_a_chained_seam_leaves_out_exactly_the_anchor_frames_audio() -> None:
    fps = 8
    per_frame = AUDIO_RATE // fps
    parts = [FilmPart(_frames(9), _ramp(9, fps), AUDIO_RATE),
             FilmPart(_frames(9), _ramp(9, fps), AUDIO_RATE, skip_first=True),
             FilmPart(_frames(5), None, AUDIO_RATE),
             FilmPart(_frames(5), _ramp(5, fps), AUDIO_RATE)]
    audio = _film_audio(parts, fps)
    assert audio is not None and audio.shape == (2, (9 + 8 + 5 + 5) * per_frame)
    first, second = audio[:, :9 * per_frame], audio[:, 9 * per_frame:17 * per_frame]
    assert first[0, 0] == 0 and first[0, -1] == 9 * per_frame - 1
    assert second[0, 0] == per_frame and second[0, -1] == 9 * per_frame - 1  # the anchor's samples are gone
    assert np.array_equal(second[1], -second[0])
    assert not audio[:, 17 * per_frame:22 * per_frame].any()  # a silent segment keeps its place
    assert audio[0, 22 * per_frame] == 0 and audio[0, -1] == 5 * per_frame - 1
    assert _film_audio([FilmPart(_frames(3), None, AUDIO_RATE)], fps) is None


def test_audio_of_any_shape_is_fitted_to_the_frames() -> None:
    fps = 8
    per_frame = AUDIO_RATE // fps
    mono = np.linspace(-0.5, 0.5, 3 * per_frame, dtype=np.float32)
    out = _film_audio([FilmPart(_frames(3), mono, AUDIO_RATE)], fps)
    assert out.shape == (2, 3 * per_frame) and np.array_equal(out[0], mono) and np.array_equal(out[1], mono)
    surround = np.stack([np.full(4 * per_frame, v, np.float32) for v in (0.1, 0.2, 0.3)])
    out = _film_audio([FilmPart(_frames(3), surround, AUDIO_RATE)], fps)
    assert out.shape == (2, 3 * per_frame) and set(out[0]) == {np.float32(0.1)} and set(out[1]) == {np.float32(0.2)}
    short = np.ones((2, per_frame), np.float32)
    out = _film_audio([FilmPart(_frames(3), short, AUDIO_RATE)], fps)
    assert out.shape == (2, 3 * per_frame) and out[:, :per_frame].all() and not out[:, per_frame:].any()
    vocoder = np.ones((2, 3 * 24_000 // fps), np.float32)
    out = _film_audio([FilmPart(_frames(3), vocoder, 24_000)], fps)
    assert out.shape == (2, 3 * per_frame)  # resampled to the film's rate, same duration


def test_loud_audio_is_clipped_not_wrapped(tmp_path: Path) -> None:
    out = tmp_path / "loud.mp4"
    loud = np.full((2, AUDIO_RATE), 3.0, np.float32)
    encode_mp4(out, _frames(8), fps=8, size=(W, H), audio=loud)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert (a.codec_context.name, a.codec_context.sample_rate, a.codec_context.channels) == ("aac", AUDIO_RATE, 2)
        pcm = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    assert pcm.shape[1] == pytest.approx(AUDIO_RATE, abs=2048)
    assert np.median(pcm[:, AUDIO_RATE // 4: AUDIO_RATE // 2]) > 0.8  # positive, near full scale


def test_the_encoder_child_encodes_the_first_limit_frames_and_reports_each(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "frames.npy", _frames(9))
    np.save(tmp_path / "audio.npy", np.zeros((2, 24_000), np.float32))
    spec = {"path": str(tmp_path / "c.mp4"), "frames": str(tmp_path / "frames.npy"),
            "audio": str(tmp_path / "audio.npy"), "sample_rate": 24_000, "fps": 8, "size": [W, H],
            "keyframes": [1], "limit": 6}
    assert _child(json.dumps(spec)) == 0
    assert capsys.readouterr().out.split() == [str(i) for i in range(1, 7)]
    rate, times, keys = _times(tmp_path / "c.mp4")
    assert rate == 8 and len(times) == 6 and keys[:2] == [True, True]
    with av.open(str(tmp_path / "c.mp4")) as c:
        assert len(c.streams.audio) == 1
    _child(json.dumps({**spec, "path": str(tmp_path / "d.mp4"), "audio": None, "limit": None}))
    assert len(capsys.readouterr().out.split()) == 9
    with av.open(str(tmp_path / "d.mp4")) as c:
        assert len(c.streams.audio) == 0


def _encoded(tmp_path: Path, name: str, n: int, fps: int, chained: bool = False) -> FilmPart:
    path = tmp_path / f"{name}.mp4"
    frames = _frames(n)
    encode_mp4(path, frames, fps=fps, size=(W, H), keyframes=(1,) if chained else ())
    return FilmPart(frames, None, AUDIO_RATE, skip_first=chained, encoded=path, name=name)


def test_segments_encoded_at_another_fps_are_not_copied_into_the_film(tmp_path: Path) -> None:
    """Issue 24, item 2: 24 fps segments in an 8 fps film would play three times too fast."""
    parts = [_encoded(tmp_path, "a", 9, 24), _encoded(tmp_path, "b", 9, 24, chained=True)]
    with pytest.raises(NotJoinable, match="8 fps"):
        remux_film(tmp_path / "x.mp4", parts, fps=8, size=(W, H))
    n, reason = join_film(tmp_path / "film.mp4", parts, fps=8, size=(W, H))
    assert n == 17 and reason is not None and "8 fps" in reason
    rate, times, _ = _times(tmp_path / "film.mp4")
    assert rate == 8 and times == pytest.approx([i / 8 for i in range(17)])


def test_a_copied_film_counts_each_kept_frame_once(tmp_path: Path) -> None:
    parts = [_encoded(tmp_path, "a", 9, 8), _encoded(tmp_path, "b", 9, 8, chained=True), _encoded(tmp_path, "c", 5, 8)]
    n, reason = join_film(tmp_path / "film.mp4", parts, fps=8, size=(W, H))
    assert reason is None and n == 9 + 8 + 5
    rate, times, keys = _times(tmp_path / "film.mp4")
    assert rate == 8 and times == pytest.approx([i / 8 for i in range(22)])
    assert [i for i, k in enumerate(keys) if k] == [0, 9, 17]


def test_segments_the_film_cannot_copy_say_which_and_why(tmp_path: Path) -> None:
    with pytest.raises(NotJoinable, match="^no segments$"):
        remux_film(tmp_path / "x.mp4", [], fps=8, size=(W, H))
    anchor_only = _encoded(tmp_path, "b", 1, 8, chained=True)
    with pytest.raises(NotJoinable, match="segment b adds no frame"):
        remux_film(tmp_path / "x.mp4", [_encoded(tmp_path, "a", 9, 8), anchor_only], fps=8, size=(W, H))
    with pytest.raises(NotJoinable, match=r"segment a is 64×48, the film 128×96"):
        remux_film(tmp_path / "x.mp4", [_encoded(tmp_path, "a", 9, 8)], fps=8, size=(128, 96))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not an mp4 at all")
    with pytest.raises(NotJoinable, match="segment z's MP4 does not open"):
        remux_film(tmp_path / "x.mp4", [FilmPart(_frames(3), None, AUDIO_RATE, encoded=broken, name="z")],
                   fps=8, size=(W, H))
    short = _encoded(tmp_path, "u", 5, 8).encoded  # another take than the 9 frames the film is made of
    with pytest.raises(NotJoinable, match="segment 1's MP4 has 5 frames, its frames 9"):
        remux_film(tmp_path / "x.mp4", [_encoded(tmp_path, "a", 9, 8),
                                        FilmPart(_frames(9), None, AUDIO_RATE, encoded=short)],
                   fps=8, size=(W, H))


def _mp4(path: Path, codecs: tuple[str, ...], n: int = 3, *, fps: int = 8, first_pts: int = 0,
         size: tuple[int, int] = (W, H), options: dict | None = None) -> Path:
    """An MP4 with one video stream per codec (what another tool might have left as segment.mp4)."""
    with av.open(str(path), mode="w", format="mp4") as c:
        streams = []
        for codec in codecs:
            s = c.add_stream(codec, rate=fps)
            s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
            s.options = {"crf": "18", "preset": "medium", "forced-idr": "1", **(options or {})} \
                if codec == "libx264" else {}
            cc = s.codec_context
            cc.thread_type = "FRAME"
            cc.color_primaries = cc.color_trc = cc.colorspace = cc.color_range = 1  # BT.709, limited, as ours
            streams.append(s)
        for i, frame in enumerate(_frames(n)):
            for s in streams:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:size[1], :size[0]]), format="rgb24")
                vf = vf.reformat(format="yuv420p")
                vf.pts = first_pts + i
                c.mux(s.encode(vf))
        for s in streams:
            c.mux(s.encode())
    return path


@pytest.mark.parametrize("codecs,why", [(("libx264", "libx264"), "segment b's MP4 has 2 video streams"),
                                        (("mpeg4",), "segment b is mpeg4, not H.264")])
def test_a_segment_mp4_that_is_not_one_h264_stream_is_named_and_reencoded(tmp_path: Path, codecs: tuple,
                                                                           why: str) -> None:
    parts = [FilmPart(_frames(3), None, AUDIO_RATE, encoded=_mp4(tmp_path / "b.mp4", codecs), name="b"),
             _encoded(tmp_path, "c", 3, 8)]
    with pytest.raises(NotJoinable) as info:
        remux_film(tmp_path / "x.mp4", parts, fps=8, size=(W, H))
    assert str(info.value) == why
    n, reason = join_film(tmp_path / "film.mp4", parts, fps=8, size=(W, H))
    assert n == 6 and reason == why  # the reason as it is, not dressed as a muxer error


def test_a_film_of_one_segment_is_its_copy(tmp_path: Path) -> None:
    part = _encoded(tmp_path, "only", 9, 8)
    n, reason = join_film(tmp_path / "film.mp4", [part], fps=8, size=(W, H))
    assert (n, reason) == (9, None)
    assert _times(tmp_path / "film.mp4")[1] == pytest.approx([i / 8 for i in range(9)])


def test_a_chained_segment_of_two_frames_adds_one(tmp_path: Path) -> None:
    parts = [_encoded(tmp_path, "a", 9, 8), _encoded(tmp_path, "b", 2, 8, chained=True)]
    n, reason = join_film(tmp_path / "film.mp4", parts, fps=8, size=(W, H))
    assert (n, reason) == (10, None)


def test_a_segment_whose_timestamps_start_late_is_copied_into_place(tmp_path: Path) -> None:
    """Another muxer may start a stream at a later pts: the film shifts it to where it belongs."""
    late = FilmPart(_frames(5), None, AUDIO_RATE, encoded=_mp4(tmp_path / "late.mp4", ("libx264",), 5, first_pts=7,
                                                                ), name="late")
    parts = [_encoded(tmp_path, "a", 9, 8), late]
    n, reason = join_film(tmp_path / "film.mp4", parts, fps=8, size=(W, H))
    assert (n, reason) == (14, None)
    assert _times(tmp_path / "film.mp4")[1] == pytest.approx([i / 8 for i in range(14)])


def test_a_frame_rate_the_segments_time_base_cannot_hold_is_refused_by_name(tmp_path: Path) -> None:
    parts = [_encoded(tmp_path, "a", 6, 30)]
    with av.open(str(parts[0].encoded)) as c:
        tb = c.streams.video[0].time_base
    if (Fraction(1, 7) / tb).denominator == 1:  # pragma: no cover - another muxer's time base
        pytest.skip(f"time base {tb} holds 7 fps")
    with pytest.raises(NotJoinable) as info:
        remux_film(tmp_path / "x.mp4", parts, fps=7, size=(W, H))
    assert str(info.value) == f"a frame at 7 fps is not a whole number of {tb} ticks"


def test_an_mp4_with_more_frames_than_its_segment_is_refused_by_name(tmp_path: Path) -> None:
    longer = _encoded(tmp_path, "b", 10, 8).encoded
    parts = [_encoded(tmp_path, "a", 9, 8), FilmPart(_frames(9), None, AUDIO_RATE, encoded=longer, name="b")]
    with pytest.raises(NotJoinable) as info:
        remux_film(tmp_path / "x.mp4", parts, fps=8, size=(W, H))
    assert str(info.value) == "segment b's frame timestamps are not 9 frames at 8 fps"


def test_a_segment_of_another_size_or_other_x264_settings_is_named_with_what_differs(tmp_path: Path) -> None:
    small = FilmPart(_frames(3), None, AUDIO_RATE, name="c",
                     encoded=_mp4(tmp_path / "c.mp4", ("libx264",), 3, size=(32, 24)))
    with pytest.raises(NotJoinable) as info:
        remux_film(tmp_path / "x.mp4", [_encoded(tmp_path, "a", 3, 8), small], fps=8, size=(W, H))
    assert str(info.value) == "segment c's size differs from segment a's: (32, 24) vs (64, 48)"
    fast = FilmPart(_frames(3), None, AUDIO_RATE, name="d",
                    encoded=_mp4(tmp_path / "d.mp4", ("libx264",), 3, options={"preset": "ultrafast"}))
    with pytest.raises(NotJoinable) as info:
        remux_film(tmp_path / "x.mp4", [_encoded(tmp_path, "a", 3, 8), fast], fps=8, size=(W, H))
    assert str(info.value).startswith("segment d's ") and str(info.value).endswith("differs from segment a's")


def test_a_chained_segment_without_an_idr_after_its_anchor_says_so(tmp_path: Path) -> None:
    old = tmp_path / "b-old.mp4"
    encode_mp4(old, _frames(9), fps=8, size=(W, H))  # encoded before frame 1 was made an IDR
    parts = [_encoded(tmp_path, "a", 9, 8), FilmPart(_frames(9), None, AUDIO_RATE, skip_first=True, encoded=old,
                                                     name="b")]
    with pytest.raises(NotJoinable) as info:
        remux_film(tmp_path / "x.mp4", parts, fps=8, size=(W, H))
    assert str(info.value) == "segment b's first kept frame is not an IDR (encoded without a keyframe after the anchor)"


@pytest.mark.parametrize("level", [3.0, -3.0])
def test_audio_beyond_full_scale_is_clipped_to_it(tmp_path: Path, level: float) -> None:
    out = tmp_path / "loud.mp4"
    encode_mp4(out, _frames(8), fps=8, size=(W, H), audio=np.full((2, AUDIO_RATE), level, np.float32))
    with av.open(str(out)) as c:
        pcm = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    assert np.abs(pcm).max() < 1.3  # AAC rings a little past a clipped edge, never to 2 or 3
    assert np.median(pcm[:, AUDIO_RATE // 4: AUDIO_RATE // 2]) * np.sign(level) > 0.8


def test_a_segment_starts_playing_before_it_is_fully_read(tmp_path: Path) -> None:
    out = tmp_path / "seg.mp4"
    encode_mp4(out, _frames(3), fps=8, size=(W, H))
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: the index first


@pytest.mark.parametrize("shape", [(2, H, W + 2, 3), (2, H + 2, W, 3)])
def test_a_frame_of_the_wrong_width_or_height_is_refused_with_both_sizes(tmp_path: Path, shape: tuple) -> None:
    with pytest.raises(ValueError) as info:
        encode_mp4(tmp_path / "x.mp4", np.zeros(shape, np.uint8), fps=8, size=(W, H))
    assert str(info.value) == f"frame 0 is {shape[2]}×{shape[1]}, expected {W}×{H}"
