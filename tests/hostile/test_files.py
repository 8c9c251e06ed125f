"""Hostile storyboards, referenced files and videos through the real ``sulphur`` command.

Every case: a non-zero exit, one line on stderr naming the file (and ``:line:`` for a
TOML problem), no traceback, no hang past the time limit, every input byte-identical.
Issue 19 items 2 (special files), 7 (validation) and 10 (extend's errno messages).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from tests.hostile.conftest import assert_one_line, sulphur, tiny_clip

pytestmark = pytest.mark.timeout(60)

HEAD = '[project]\ntitle = "hostile"\nfps = 8\npreset = "no-such-preset"\nenhance = false\n'
SHOT = '\n[[segment]]\nid = "{id}"\nprompt = "a shot"\nframes = 9\n'


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` × ``height``: a decompression bomb's header, 60 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _good_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _with(project: str = "", segment: str = "", shots: int = 1) -> str:
    text = HEAD + project
    for i in range(shots):
        text += SHOT.format(id=f"s{i}") + (segment if i == shots - 1 else "")
    return text


#: name -> (storyboard text, the ``file:LINE:`` the message must name (0: no line), extra files)
STORYBOARDS: dict[str, tuple[str, int, dict[str, object]]] = {
    "fps-times-seconds-over-cap": (_with("", "seconds = 120\n").replace("fps = 8", "fps = 240")
                                   .replace("frames = 9\n", ""), 10, {}),
    "utf8-bom": ("\ufeff" + _with(), 1, {}),  # Windows editors write one; tomllib said "Invalid statement"
    "project-steps-zero": (_with("steps = 0\n"), 6, {}),
    "project-steps-negative": (_with("steps = -5\n"), 6, {}),
    "project-lora-nan": (_with("lora_strength = nan\n"), 6, {}),
    "segment-lora-nan": (_with("", "lora_strength = nan\n"), 11, {}),
    "segment-lora-inf": (_with("", "lora_strength = -inf\n", shots=2), 16, {}),
    "ram-budget-nan": (_with("ram_budget_gb = nan\n"), 6, {}),
    "ram-budget-inf": (_with("ram_budget_gb = inf\n"), 6, {}),
    "ram-budget-tiny": (_with("ram_budget_gb = 0.001\n"), 6, {}),
    "vram-budget-negative": (_with("vram_budget_gb = -8\n"), 6, {}),
    "seconds-nan": (_with("", "seconds = nan\n").replace("frames = 9\n", ""), 10, {}),
    "drift-strength-nan": (_with("drift_strength = nan\n"), 6, {}),
    "id-with-newline": (_with().replace('id = "s0"', 'id = "a\\n"'), 8, {}),
    "id-with-slash": (_with().replace('id = "s0"', 'id = "../../etc/x"'), 8, {}),
    "seed-negative": (_with("seed = -1\n"), 6, {}),
    "draft-size-huge": (_with("draft_size = [100000, 100000]\n"), 6, {}),
    "syntax-error-at-end": (_with() + 'prompt2 = "never closed', 11, {}),
    "unknown-key": (_with("", "colour = 3\n"), 11, {}),
    "duplicate-id": (_with(shots=2).replace('id = "s1"', 'id = "s0"'), 13, {}),
    "anchor-missing-in-shot-3": (_with("", 'anchor = "typo.png"\n', shots=3), 21, {}),
    "anchor-bomb": (_with("", 'anchor = "bomb.png"\n'), 11, {"bomb.png": _png_header(40000, 40000)}),
    "anchor-big-image": (_with("", 'anchor = "big.png"\n'), 11, {"big.png": _png_header(9000, 9000)}),
    "anchor-random-bytes": (_with("", 'anchor = "noise.png"\n'), 11, {"noise.png": os.urandom(4096)}),
    "anchor-empty": (_with("", 'anchor = "empty.png"\n'), 11, {"empty.png": b""}),
    "anchor-fifo": (_with("", 'anchor = "pipe.png"\n'), 11, {"pipe.png": "fifo"}),
    "anchor-directory": (_with("", 'anchor = "folder.png"\n'), 11, {"folder.png": "dir"}),
    "anchor-dev-zero": (_with("", 'anchor = { video = "/dev/zero" }\n'), 11, {}),
    "anchor-video-fifo": (_with("", 'anchor = "pipe.mp4"\n'), 11, {"pipe.mp4": "fifo"}),
    "drift-reference-bomb": (_with('drift_guard = "anchor"\ndrift_reference = "bomb.png"\n'), 7,
                             {"bomb.png": _png_header(40000, 40000), "ok.png": _good_png()}),
    "drift-reference-missing": (_with('drift_guard = "anchor"\ndrift_reference = "gone.png"\n'), 7, {}),
    "binary-garbage": (b"\x00\xff" * 100, 0, {}),  # type: ignore[dict-item]
    "not-utf8": (HEAD.encode() + b'\n[[segment]]\nid = "a"\nprompt = "\xff\xfe"\n', 0, {}),  # type: ignore[dict-item]
    "empty-file": ("", 0, {}),
    # an unknown preset named no place (it is resolved after parsing, with the job)
    "unknown-project-preset": (_with(), 4, {}),
    "unknown-shot-preset": (_with("", 'preset = "nope"\n', shots=2).replace('"no-such-preset"', '"tiny"'), 16, {}),
    # tomllib recurses per level: these were a RecursionError traceback (arrays; inline tables).
    "nested-arrays": (_with("x = " + "[" * 50000 + "]" * 50000 + "\n"), 6, {}),
    "nested-inline-tables": (_with("", "x = " + "{a=" * 5000 + "1" + "}" * 5000 + "\n"), 11, {}),
    "no-segments": (HEAD, 0, {}),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink() and ".sulphur" not in p.parts:
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def _make(folder: Path, extra: dict[str, object]) -> None:
    for name, content in extra.items():
        target = folder / name
        if content == "fifo":
            os.mkfifo(target)
        elif content == "dir":
            target.mkdir()
        else:
            target.write_bytes(content)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", list(STORYBOARDS), ids=list(STORYBOARDS))
def test_a_hostile_storyboard_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    text, line, extra = STORYBOARDS[case]
    story = tmp_path / "story.toml"
    story.write_bytes(text if isinstance(text, bytes) else text.encode())
    _make(tmp_path, extra)
    before = _snapshot(tmp_path)
    result = sulphur("render", "story.toml", cwd=tmp_path, timeout=30)
    message = assert_one_line(result, "story.toml")
    if line:
        assert f"story.toml:{line}:" in message, message
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "renders").exists() and not (tmp_path / ".sulphur" / "cache").exists()


def test_a_storyboard_saved_with_a_bom_says_so(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark read as "TOML syntax error: Invalid statement" at 1:1."""
    (tmp_path / "story.toml").write_text("\ufeff" + _with(), encoding="utf-8")
    message = assert_one_line(sulphur("render", "story.toml", cwd=tmp_path, timeout=30), "story.toml:1:1:")
    assert message.endswith("byte-order mark (BOM); save it as UTF-8 without BOM"), message


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero", "symlink-to-dev-zero", "oversized"])
def test_a_storyboard_that_is_not_a_file_is_refused_unopened(kind: str, tmp_path: Path) -> None:
    """Item 2: `sulphur render fifo.toml` hung until someone wrote to the FIFO."""
    story = tmp_path / "story.toml"
    if kind == "fifo":
        os.mkfifo(story)
    elif kind == "directory":
        story.mkdir()
    elif kind == "oversized":
        story.write_bytes(b"# " + b"x" * (17 << 20) + b"\n")
    else:
        story = Path("/dev/zero") if kind == "dev-zero" else story
        if kind == "symlink-to-dev-zero":
            story.symlink_to("/dev/zero")
    result = sulphur("render", str(story), cwd=tmp_path, timeout=30)
    assert_one_line(result, str(story))


# ------------------------------------------------------------------ videos




@pytest.mark.parametrize("kind", ["fifo", "empty", "random", "truncated", "directory", "dev-zero", "text"])
def test_extend_refuses_a_bad_clip_in_words(kind: str, tmp_path: Path) -> None:
    """Items 2 and 10: `sulphur extend` hung on a FIFO and printed bare errnos (error: 1094995529)."""
    clip = tmp_path / "clip.mp4"
    if kind == "fifo":
        os.mkfifo(clip)
    elif kind == "empty":
        clip.write_bytes(b"")
    elif kind == "random":
        clip.write_bytes(os.urandom(20000))
    elif kind == "truncated":
        tiny_clip(tmp_path / "full.mp4")
        clip.write_bytes((tmp_path / "full.mp4").read_bytes()[:600])
    elif kind == "directory":
        clip.mkdir()
    elif kind == "text":
        clip.write_text("not a video\n")
    else:
        clip = Path("/dev/zero")
    before = _snapshot(tmp_path)
    result = sulphur("extend", str(clip), "--prompt", "and then", cwd=tmp_path, timeout=30)
    message = assert_one_line(result, str(clip))
    assert not any(word.isdigit() and len(word) > 6 for word in message.replace(":", " ").split()), message
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------ takes.json


@pytest.mark.parametrize("content", ["garbage{", "[1, 2]", '{"takes": [1]}', '{"takes": {"5": {}}}',
                                     '{"takes": {"5": 7}}'], ids=["not-json", "list", "takes-list",
                                                                  "no-prompt", "take-not-table"])
def test_pick_refuses_a_damaged_takes_record_naming_it(content: str, tmp_path: Path) -> None:
    """`sulphur takes --pick` on a damaged takes.json was a JSONDecodeError/AttributeError/KeyError
    traceback; now one line naming the file, and the storyboard is not written."""
    (tmp_path / "story.toml").write_text(_with())
    manifest = tmp_path / "renders" / "story" / "takes" / "s0" / "takes.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(content)
    before = _snapshot(tmp_path)
    result = sulphur("takes", "story.toml", "s0", "--pick", "5", cwd=tmp_path, timeout=30)
    assert "not a takes record" in assert_one_line(result, "takes/s0/takes.json")
    assert _snapshot(tmp_path) == before


def test_pick_names_an_unknown_shot_as_such(tmp_path: Path) -> None:
    (tmp_path / "story.toml").write_text(_with())
    result = sulphur("takes", "story.toml", "nope", "--pick", "5", cwd=tmp_path, timeout=30)
    assert "no segment with id 'nope'" in assert_one_line(result, "story.toml")


@pytest.mark.parametrize("flag", [("--frames", "0"), ("--frames", "100000"), ("--steps", "0"), ("--steps", "500"),
                                  ("--seed", "-1")], ids=lambda f: f"{f[0]}={f[1]}")
def test_extend_refuses_a_number_flag_out_of_range_naming_the_flag(flag: tuple[str, str], tmp_path: Path) -> None:
    """The error named the storyboard extend writes beside the output (file:line:col of a file
    the user never made) and left it there; --steps 0 was taken as the preset's without a word."""
    tiny_clip(tmp_path / "clip.mp4")
    before = _snapshot(tmp_path)
    result = sulphur("extend", "clip.mp4", "--prompt", "and then", "--model", "tiny", *flag, cwd=tmp_path, timeout=30)
    assert f"{flag[0]} {flag[1]}: must be between" in assert_one_line(result, flag[0])
    assert _snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize("count", ["0", "-2"])
def test_takes_refuses_fewer_than_one_seed(count: str, tmp_path: Path) -> None:
    """``--seeds 0`` rendered one take without a word."""
    (tmp_path / "story.toml").write_text(_with())
    result = sulphur("takes", "story.toml", "s0", "--seeds", count, cwd=tmp_path, timeout=30)
    assert assert_one_line(result, "--seeds").endswith("must be between 1 and 16")
    assert not (tmp_path / "renders").exists()


def _sound_only_mp4(path: Path) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=48000)
        s.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 1024
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)


@pytest.mark.parametrize("clip", ["sound-only", "garbage"])
def test_a_video_anchor_with_no_picture_is_refused_before_any_shot(tmp_path: Path, clip: str) -> None:
    """``anchor = { video = "voice.mp4" }`` with no picture in it was an IndexError traceback,
    then a refusal that came only once the shots before it had rendered, with no line."""
    story = _with("", 'anchor = { video = "voice.mp4" }\n', shots=2).replace('"no-such-preset"', '"tiny"')
    (tmp_path / "story.toml").write_text(story)
    if clip == "sound-only":
        _sound_only_mp4(tmp_path / "voice.mp4")
    else:
        (tmp_path / "voice.mp4").write_bytes(b"not a video at all" * 64)
    result = sulphur("render", "story.toml", cwd=tmp_path, timeout=120)
    line = assert_one_line(result, "story.toml:")
    assert result.returncode == 2 and "segment[1].anchor: " in line and "voice.mp4: " in line, line
    assert ("no video stream" if clip == "sound-only" else "not a readable video") in line, line
    assert not (tmp_path / "renders" / "story" / "segments").exists()  # refused before the first shot


def test_render_refuses_a_negative_finisher_count(tmp_path: Path) -> None:
    """``--engine ray --finishers -3`` started Ray and rendered as if it said 0."""
    (tmp_path / "story.toml").write_text(_with())
    result = sulphur("render", "story.toml", "--engine", "ray", "--finishers", "-3", cwd=tmp_path, timeout=60)
    assert assert_one_line(result, "--finishers -3").endswith("must be 0 or more")
    assert not (tmp_path / "renders").exists()
