"""Issue 19 item 1: `sulphur edit --serve` against a real websocket client and the real server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.hostile.conftest import QUICK, ROOT, assert_one_line, sulphur

pytest.importorskip("textual_serve")
websockets_client = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import InvalidStatus  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def served(tmp_path: Path):  # noqa: ANN201
    """A running `sulphur edit story.toml --serve` and the URL it printed."""
    story = tmp_path / "story.toml"
    story.write_text(QUICK)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "edit", str(story), "--serve",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    url, seen = None, []
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
        seen.append(line)
        m = re.search(r"(http://\S+/\?token=(\S+))", line)
        if m:
            url = m.group(1)
    try:
        assert url, f"no URL with a token printed: {''.join(seen)}"
        yield story, port, url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _ws(port: int, query: str, origin: str | None):  # noqa: ANN202
    return websockets_client.connect(f"ws://127.0.0.1:{port}/ws?{query}width=80&height=24",
                                     origin=origin, open_timeout=15)


def test_the_page_needs_the_printed_token(served) -> None:  # noqa: ANN001
    story, port, url = served
    token = url.split("token=")[1]
    assert _status(f"http://127.0.0.1:{port}/") == 403
    assert _status(f"http://127.0.0.1:{port}/?token=wrong{token[5:]}") == 403
    assert _status(url) == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1.evil.example:{port}",
                                    "null", "http://127.0.0.1:1"])
def test_a_foreign_origin_cannot_open_the_editor(served, origin: str) -> None:  # noqa: ANN001
    """The attack of the issue: a page at evil.example opened the websocket, typed and saved."""
    story, port, url = served
    before = story.read_bytes()
    token = url.split("token=")[1]
    with pytest.raises(InvalidStatus) as info:
        with _ws(port, f"token={token}&", origin.format(port=port)) as ws:
            ws.send('["stdin", "a"]')
            ws.send('["stdin", "\\u0013"]')  # ctrl+s
            time.sleep(2)
    assert info.value.response.status_code == 403
    assert story.read_bytes() == before


def test_no_token_no_websocket_even_from_the_same_origin(served) -> None:  # noqa: ANN001
    story, port, _ = served
    with pytest.raises(InvalidStatus) as info:
        with _ws(port, "", f"http://127.0.0.1:{port}"):
            pass
    assert info.value.response.status_code == 403


def test_the_owner_with_the_token_gets_the_editor(served) -> None:  # noqa: ANN001
    story, port, url = served
    token = url.split("token=")[1]
    with _ws(port, f"token={token}&", f"http://127.0.0.1:{port}") as ws:
        assert ws.protocol.state.name == "OPEN"


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "story.toml").write_text(QUICK)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = sulphur("edit", "story.toml", "--serve", "--host", "127.0.0.1", "--port", str(port),
                         cwd=tmp_path, timeout=30)
    line = assert_one_line(result, f"127.0.0.1:{port}")
    assert "in use" in line and "token" not in result.stderr


@pytest.mark.parametrize("port", ["99999", "0", "abc", "-1"])
def test_a_bad_port_is_one_line(tmp_path: Path, port: str) -> None:
    (tmp_path / "story.toml").write_text(QUICK)
    result = sulphur("edit", "story.toml", "--serve", "--port", port, cwd=tmp_path, timeout=30)
    assert_one_line(result, "--port")


@pytest.mark.parametrize("bind, origin, host, ok", [
    ("127.0.0.1", "http://127.0.0.1:8000", "127.0.0.1:8000", True),
    ("127.0.0.1", "http://localhost:8000", "localhost:8000", True),
    ("127.0.0.1", None, "127.0.0.1:8000", True),                         # curl with the token
    ("127.0.0.1", "http://evil.example", "127.0.0.1:8000", False),
    ("127.0.0.1", "http://evil.example:8000", "evil.example:8000", False),  # DNS rebinding
    ("127.0.0.1", "http://localhost:9999", "localhost:8000", False),
    ("127.0.0.1", "file://", "localhost:8000", False),
    ("0.0.0.0", "http://10.0.0.5:8000", "10.0.0.5:8000", True),
    ("0.0.0.0", "http://evil.example", "10.0.0.5:8000", False),
])
def test_origin_rule(bind: str, origin: str | None, host: str, ok: bool) -> None:
    from pipeline.cli.serve import _host_names, origin_allowed

    assert origin_allowed(origin, host, _host_names(bind), 8000) is ok
