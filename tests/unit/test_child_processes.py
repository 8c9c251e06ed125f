"""A test that starts Sulphur in a child process imports the code under test.

Without this checkout first on the child's ``PYTHONPATH`` the child imports whatever
``pip install -e`` last pointed at: another checkout, or a folder that is gone. A mutation
run (which copies the tree) or a developer with two checkouts then gets false passes, and
a machine whose editable install moved gets false failures (both seen here).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTERS = {"run", "Popen", "check_output", "check_call", "call"}


def children_without_env(folder: Path) -> list[str]:
    """``file:line`` of each subprocess call that runs ``sys.executable`` on Sulphur's code
    and passes no ``env`` (the helpers pass ``checkout_env()``)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in STARTERS and node.args):
                continue
            argv = ast.unparse(node.args[0])
            if "sys.executable" in argv and ("pipeline" in argv or "sulphur" in argv) \
                    and not any(k.arg == "env" for k in node.keywords):
                found.append(f"{path.relative_to(folder.parent)}:{node.lineno}")
    return found


def test_every_child_process_of_the_tests_imports_this_checkout() -> None:
    assert not children_without_env(ROOT / "tests")


def test_the_check_finds_a_child_without_env(tmp_path: Path) -> None:
    pkg = tmp_path / "t"
    pkg.mkdir()
    (pkg / "a.py").write_text("import subprocess, sys\n"
                              "subprocess.run([sys.executable, '-m', 'pipeline.cli', 'render'])\n"
                              "subprocess.run([sys.executable, '-m', 'pipeline.cli'], env={})\n"
                              "subprocess.run(['ls'])\n")
    assert children_without_env(pkg) == ["t/a.py:2"]
