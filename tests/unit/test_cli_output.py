"""What ``sulphur render`` prints for each event (pipeline.cli.output.ProgressPrinter)."""

from __future__ import annotations

import io

import pytest

from pipeline.cli.output import ProgressPrinter
from pipeline.wire import protocol


def _printed(*events: protocol.Event) -> str:
    out = io.StringIO()
    printer = ProgressPrinter(out)
    for event in events:
        printer(event)
    return out.getvalue()


def test_debug_logs_stay_out_of_the_progress_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every render printed 'debug: text encoder: 1 prompts in 2.08 s' between its stages."""
    monkeypatch.delenv("SULPHUR_DEBUG", raising=False)
    text = _printed(protocol.Log(level="debug", message="text encoder: 1 prompts in 2.08 s"),
                    protocol.Log(level="warning", message="enhancer runs on the CPU"),
                    protocol.Log(level="info", message="film copied"))
    assert text == "warning: enhancer runs on the CPU\ninfo: film copied\n"


def test_sulphur_debug_shows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SULPHUR_DEBUG", "1")
    assert _printed(protocol.Log(level="debug", message="draft memory: x")) == "debug: draft memory: x\n"


def test_run_job_words_an_os_error_but_lets_a_broken_pipe_through(capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError outside any stage is one line; a reader that left (``| head``) is main()'s to end
    quietly, not an "error: Broken pipe"."""
    from pipeline.cli.output import run_job

    def read_only(cancel: object) -> None:
        raise OSError(30, "Read-only file system", "renders")

    def reader_left(cancel: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    assert run_job(read_only, json_events=False, emit=lambda e: None) == (1, None)
    assert capsys.readouterr().err == "error: renders: Read-only file system\n"
    with pytest.raises(BrokenPipeError):
        run_job(reader_left, json_events=False, emit=lambda e: None)
