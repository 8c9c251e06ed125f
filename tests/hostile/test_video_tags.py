"""A clip whose container tags are not UTF-8 (older cameras and Windows tools write Latin-1):
PyAV decodes tags strictly, so opening it raised ``UnicodeDecodeError`` as a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.project import storyboard as S
from pipeline.project.references import shot_file_problem
from tests.hostile.conftest import sulphur


def _latin1_tagged_clip(path: Path) -> Path:
    import av

    with av.open(str(path), mode="w", format="matroska") as c:
        c.metadata["title"] = "XXXXTITLE"
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 30, np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    data = path.read_bytes()
    assert b"XXXXTITLE" in data
    path.write_bytes(data.replace(b"XXXXTITLE", b"\xe9\xe9\xe9\xe9TITLE"))  # "éééé" in Latin-1
    return path


def test_a_clip_with_latin1_tags_is_a_usable_anchor_and_measurable(tmp_path: Path) -> None:
    clip = _latin1_tagged_clip(tmp_path / "old-camera.mkv")
    (tmp_path / "story.toml").write_text('[[segment]]\nid = "a"\nprompt = "x"\nframes = 9\n'
                                         'anchor = { video = "old-camera.mkv" }\n')
    sb = S.load(tmp_path / "story.toml")
    assert shot_file_problem(sb, sb.segments[0], "anchor") == ""
    result = sulphur("flicker", str(clip), cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
