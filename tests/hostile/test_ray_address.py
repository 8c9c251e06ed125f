"""A bad ``--address`` for Ray is refused in one line: a malformed one gave a traceback
(``ValueError: Invalid address format``), one nothing answers at hung for minutes while Ray
printed its C++ log lines."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.hostile.conftest import assert_one_line, sulphur

pytest.importorskip("ray")

STORY = '[project]\ntitle = "t"\nseed = 1\n\n[[segment]]\nid = "a"\nprompt = "x"\nframes = 9\n'


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["closed-port", "ray-client", "malformed"])
def test_a_bad_ray_address_is_one_line_and_quick(tmp_path: Path, kind: str) -> None:
    port = _closed_port()
    address, says = {"closed-port": (f"127.0.0.1:{port}", f"nothing answers at 127.0.0.1:{port}"),
                     "ray-client": (f"ray://127.0.0.1:{port}", f"nothing answers at 127.0.0.1:{port}"),
                     "malformed": ("garbage", "expected auto, HOST:PORT or ray://HOST:PORT")}[kind]
    (tmp_path / "story.toml").write_text(STORY)
    for args in (("render", "story.toml", "--engine", "ray", "--address", address),
                 ("takes", "story.toml", "a", "--seeds", "2", "--address", address)):
        result = sulphur(*args, cwd=tmp_path, timeout=60)
        line = assert_one_line(result, f"--address {address}: cannot reach the Ray cluster")
        assert says in line, line
        assert not (tmp_path / "renders" / "story" / "segments").exists()  # nothing rendered
