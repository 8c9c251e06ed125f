"""What a benchmark ran on: host, CPUs, RAM, GPUs (nvidia-smi) and package versions."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil


def machine(packages: Sequence[str]) -> dict[str, Any]:
    """Without importing the packages (nvidia-smi names the GPUs, metadata the versions)."""
    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
                            "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1)}
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, check=False)
        info["gpus"] = [line.strip() for line in q.stdout.splitlines() if line.strip()]
    for pkg in packages:
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


def print_report(report: dict[str, Any], out: Path | None) -> int:
    """Print a bench's JSON report, and write it to ``out`` when given; the exit status 0."""
    doc = json.dumps(report, indent=1)
    print(doc)
    if out:
        out.write_text(doc + "\n")
    return 0
