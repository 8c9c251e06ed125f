"""Hostile socket messages (a live worker) and model files (the real loaders).

Every socket case gets exactly one reply on a connection that stays usable, naming the
file when one was named; every model file is refused without running code from it.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import pytest

from pipeline.wire import protocol
from tests.hostile.conftest import Raw
from tests.special_files import make_special

pytestmark = pytest.mark.timeout(60)


def _submit(path: str, **extra: object) -> bytes:
    return protocol.encode(protocol.Submit(id="h", storyboard=path, **extra))


def _special(project: Path, kind: str) -> str:
    """A storyboard path inside the project that is not a regular file."""
    target = project / f"{kind}.toml"
    if not target.exists() and not target.is_symlink():
        make_special(target, kind)
    return str(target)


SOCKET_CASES = {
    "fifo": (lambda p: _submit(_special(p, "fifo")), "fifo.toml"),
    "directory": (lambda p: _submit(_special(p, "directory")), "directory.toml"),
    "symlink-to-dev-zero": (lambda p: _submit(_special(p, "devzero")), "/dev/zero"),
    "symlink-loop": (lambda p: _submit(_special(p, "loop")), "loop.toml"),
    "outside-the-project": (lambda p: _submit("/etc/passwd"), "/etc/passwd"),
    "missing": (lambda p: _submit(str(p / "nope.toml")), "nope.toml"),
    "unknown-segment": (lambda p: _submit(str(p / "story.toml"), mode="segments", segments=["zz"]), "zz"),
    "nul-in-path": (lambda p: b'{"type": "submit", "id": "h", "storyboard": "a\\u0000b.toml"}\n', ""),
    "huge-segment-list": (lambda p: _submit(str(p / "story.toml"), mode="segments",
                                            segments=[f"s{i}" for i in range(20000)]), ""),
    "nested": (lambda p: b'{"type": "submit", "id": "h", "storyboard": ' + b"[" * 30000 + b"]" * 30000
               + b"}\n", ""),
    "not-json": (lambda p: b"\xff\xfe\x00 submit it\n", ""),
    "wrong-types": (lambda p: b'{"type": "cancel", "id": "h", "job_id": {"a": 1}}\n', ""),
}


@pytest.mark.parametrize("case", list(SOCKET_CASES), ids=list(SOCKET_CASES))
def test_a_hostile_message_gets_one_reject(worker_project: Path, case: str) -> None:
    make, names = SOCKET_CASES[case]
    raw = Raw(worker_project)
    try:
        raw.sock.settimeout(20)
        raw.send(make(worker_project))
        reply = raw.reply()
        assert isinstance(reply, protocol.Reject), reply
        assert "\n" not in reply.error and "Traceback" not in reply.error
        assert names in reply.error, reply.error
        raw.send(protocol.encode(protocol.GetStatus(id="after")))
        assert isinstance(raw.reply(), protocol.StatusSnapshot)
    finally:
        raw.close()


# ------------------------------------------------------------------ model files


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a model file that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def _models(tmp_path: Path) -> dict[str, Path]:
    marker = tmp_path / "PWNED"
    out = {}
    out["pickle-payload.pth"] = tmp_path / "evil.pth"
    out["pickle-payload.pth"].write_bytes(pickle.dumps({"params_ema": _Payload(marker)}))
    out["random.pth"] = tmp_path / "random.pth"
    out["random.pth"].write_bytes(os.urandom(4096))
    out["empty.safetensors"] = tmp_path / "empty.safetensors"
    out["empty.safetensors"].write_bytes(b"")
    header = b'{"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}'
    out["truncated.safetensors"] = tmp_path / "truncated.safetensors"
    out["truncated.safetensors"].write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)
    out["huge-header.safetensors"] = tmp_path / "huge.safetensors"
    out["huge-header.safetensors"].write_bytes(struct.pack("<Q", 2**60) + b"{}")
    return out


@pytest.mark.parametrize("name", ["pickle-payload.pth", "random.pth", "empty.safetensors",
                                  "truncated.safetensors", "huge-header.safetensors"])
def test_a_hostile_upscaler_file_is_refused_and_runs_nothing(tmp_path: Path, name: str) -> None:
    from pipeline.models.esrgan import load_upscaler

    path = _models(tmp_path)[name]
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - each loader has its own error type; none may pass
        load_upscaler(path, device="cpu", dtype=__import__("torch").float32)
    assert not (tmp_path / "PWNED").exists(), "code from the model file ran"
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"GGUF", b"GGUF" + os.urandom(64), os.urandom(256)],
                         ids=["empty", "magic-only", "magic-then-noise", "noise"])
def test_a_hostile_gguf_is_refused(tmp_path: Path, content: bytes) -> None:
    from gguf import GGUFReader

    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(Exception):  # noqa: B017 - gguf raises ValueError/struct errors: any refusal
        GGUFReader(path)
    assert path.read_bytes() == content


def _fifo_enhancer(tmp_path: Path) -> dict[str, str]:
    """ltxv-0.9's three files through its $SULPHUR_… variables, the enhancer GGUF a FIFO."""
    (tmp_path / "ltxv").mkdir()
    (tmp_path / "esrgan.pth").write_bytes(b"\0" * 64)
    os.mkfifo(tmp_path / "llm.gguf")
    return {"SULPHUR_LTXV": str(tmp_path / "ltxv"), "SULPHUR_ENHANCER_GGUF": str(tmp_path / "llm.gguf"),
            "SULPHUR_ESRGAN": str(tmp_path / "esrgan.pth")}


def test_a_fifo_as_a_model_file_is_refused_before_any_stage(tmp_path: Path) -> None:
    """A render whose enhancer GGUF was a FIFO failed its enhance stage and then never exited
    (llama.cpp kept waiting on the pipe); ``models verify`` hung at once. Now each names the file."""
    from tests.hostile.conftest import assert_one_line, sulphur

    env = _fifo_enhancer(tmp_path)
    (tmp_path / "story.toml").write_text('[project]\npreset = "ltxv-0.9"\nfps = 8\n\n'
                                         '[[segment]]\nid = "a"\nprompt = "a shot"\nframes = 9\n')
    result = sulphur("render", "story.toml", cwd=tmp_path, timeout=30, env=env)
    message = assert_one_line(result, f"enhancer: {tmp_path / 'llm.gguf'}: is a FIFO (named pipe)")
    assert "started" not in result.stderr, message  # refused before the first stage
    verify = sulphur("models", "verify", "ltx23-distilled", cwd=tmp_path, timeout=30,
                     env={"SULPHUR_ENHANCER_GGUF": env["SULPHUR_ENHANCER_GGUF"]})
    line = next(x for x in (verify.stdout + verify.stderr).splitlines() if x.startswith("enhancer "))
    assert line.split()[1] == "FAIL" and line.endswith("llm.gguf: is a FIFO (named pipe), not a regular file")
