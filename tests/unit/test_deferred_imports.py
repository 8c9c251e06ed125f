"""An import inside a function says why it is deferred (issue 18's rule).

Either a comment on the import's line (or the line above it), or the module's
``# Deferred imports: <names> — <why>`` note after its top-level imports naming the
package (``torch``) or, for the project's own modules, the dotted module
(``pipeline.render.runner``). A stray function-level import, added only to dodge a
cycle or out of habit, fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.unit.test_import_graph import ROOT, modules

NOTE = re.compile(r"^# Deferred imports: (?P<body>.*(?:\n#   .*)*)", re.M)


def _declared(source: str) -> str:
    m = NOTE.search(source)
    return m.group("body").replace("\n#  ", "") if m else ""


def _name(node: ast.Import | ast.ImportFrom) -> str:
    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
    module = module or ""
    return module if module.startswith(("pipeline", "sulphur_tui")) else module.split(".")[0]


def _named(name: str, declared: str) -> bool:
    """``torch`` names torch; ``pipeline.cli.*`` names every module under pipeline.cli."""
    if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", declared):
        return True
    return any(name.startswith(prefix + ".") for prefix in re.findall(r"([\w.]+)\.\*", declared))


def unexplained(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line name`` of each function-level import with neither a comment nor a note."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    declared = _declared(source)
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Import | ast.ImportFrom) or getattr(node, "level", 0):
                continue
            own = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            name = _name(node)
            if not own and not _named(name, declared):
                found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return found


def test_every_function_level_import_says_why_it_is_deferred() -> None:
    missing = [m for path in modules().values() for m in unexplained(path)]
    assert not missing, "deferred without a reason:\n" + "\n".join(missing)


def test_the_rule_sees_an_unexplained_import_and_accepts_a_note(tmp_path: Path) -> None:
    bare = tmp_path / "bare.py"
    bare.write_text("def f():\n    import torch\n    return torch\n")
    assert unexplained(bare, tmp_path) == ["bare.py:2 torch"]
    noted = tmp_path / "noted.py"
    noted.write_text("import os\n\n# Deferred imports: torch — loads with the model\n\n"
                     "def f():\n    import torch.nn\n    from pipeline.render import runner\n")
    assert unexplained(noted, tmp_path) == ["noted.py:7 pipeline.render"]  # the note names torch, not the runner
    inline = tmp_path / "inline.py"
    inline.write_text("def f():\n    import torch  # deferred: only a render needs it\n")
    assert unexplained(inline, tmp_path) == []
    star = tmp_path / "star.py"
    star.write_text("# Deferred imports: pipeline.cli.* — each command loads its own module\n\n"
                    "def f():\n    from pipeline.cli import serve\n    from pipeline.cli.takes import main\n"
                    "    from pipeline.render.runner import render\n")
    assert unexplained(star, tmp_path) == ["star.py:6 pipeline.render.runner"]
