"""The worker's engine settings come from its environment, with a clear error when wrong."""

from __future__ import annotations

import pytest

from pipeline.render.engines import engine_setting, finishers_setting


def test_engine_defaults_to_the_local_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SULPHUR_ENGINE", raising=False)
    monkeypatch.delenv("SULPHUR_RAY_ADDRESS", raising=False)
    assert engine_setting() == ("local", None)
    monkeypatch.setenv("SULPHUR_ENGINE", " Ray ")
    monkeypatch.setenv("SULPHUR_RAY_ADDRESS", "auto")
    assert engine_setting() == ("ray", "auto")
    monkeypatch.setenv("SULPHUR_ENGINE", "dask")
    with pytest.raises(ValueError, match="SULPHUR_ENGINE='dask'"):
        engine_setting()


def test_finishers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SULPHUR_RAY_FINISHERS", raising=False)
    assert finishers_setting() is None  # the layout decides
    monkeypatch.setenv("SULPHUR_RAY_FINISHERS", "3")
    assert finishers_setting() == 3
    monkeypatch.setenv("SULPHUR_RAY_FINISHERS", "0")
    assert finishers_setting() == 0  # the draft actor finishes too
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv("SULPHUR_RAY_FINISHERS", bad)
        with pytest.raises(ValueError, match="SULPHUR_RAY_FINISHERS"):
            finishers_setting()
