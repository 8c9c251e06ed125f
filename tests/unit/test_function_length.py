"""No function in ``pipeline/`` or ``sulphur_tui/`` is longer than 80 lines (the house rule in TEAM.md/STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 80


def long_functions(folder: Path, limit: int = LIMIT) -> list[str]:
    """``path:line name (N lines)`` of every function or method over ``limit`` lines, nested ones too."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_pipeline_or_the_tui_is_over_80_lines() -> None:
    assert not long_functions(ROOT / "pipeline") + long_functions(ROOT / "sulphur_tui")


def test_the_check_counts_every_line_of_a_method(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "fits.py").write_text("def f():\n" + "".join(f"    x{i} = {i}\n" for i in range(LIMIT - 1)))
    assert long_functions(pkg) == []  # exactly 80 lines
    (pkg / "long.py").write_text("class A:\n    def method(self):\n"
                                 + "".join(f"        x{i} = {i}\n" for i in range(LIMIT)))
    assert long_functions(pkg) == ["pkg/long.py:2 method (81 lines)"]
