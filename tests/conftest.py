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

