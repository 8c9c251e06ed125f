"""Shared fixtures: one SULPHUR_HOME per test session so tiny models are built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def sulphur_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = Path(os.environ.get("SULPHUR_TEST_HOME") or tmp_path_factory.mktemp("sulphur-home"))
    os.environ["SULPHUR_HOME"] = str(home)
    return home


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child ``python -m pipeline...``: the checkout whose ``pipeline``
    this test imported goes first on PYTHONPATH, so the child runs the code under test (a
    mutation run's mutants/ copy, a second checkout) and not what an editable install names."""
    import pipeline

    checkout = str(Path(pipeline.__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != checkout]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([checkout, *rest]), **extra}
