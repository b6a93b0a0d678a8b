"""The data subpackage's import graph (issue 27.3): every module imports what it needs at its
top (only optional third-party libraries are imported where they are used), no module-level
import cycle, no private name of one module used in another, no function over 60 lines; and
the light modules stay light (a Snakemake job that reads the slice cache or writes the cohort
does not pay for torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "src" / "ichseq" / "data"
MODULES = sorted(p.stem for p in DATA.glob("*.py") if p.stem != "__init__")
#: Imported where they are used: optional (python-gdcm: only --compression writes need it).
OPTIONAL = {"gdcm"}


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _data_imports(path: Path) -> set[str]:
    """The ichseq.data modules ``path`` imports at module level (relative imports ``from .x``)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_imports_are_at_the_top_of_each_module_except_optional_ones():
    inside = []
    for path in DATA.glob("*.py"):
        for function in _functions(ast.parse(path.read_text())):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                inside += [f"{path.name}:{node.lineno} {name}" for name in names if name not in OPTIONAL]
    assert not inside, inside


def test_no_module_level_import_cycle_within_the_data_package():
    graph = {module: _data_imports(DATA / f"{module}.py") & set(MODULES) for module in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            assert state.get(other) != 1, " -> ".join(path + [other])
            if other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def test_no_private_name_of_another_data_module_is_imported():
    private = []
    for path in DATA.parent.rglob("*.py"):
        in_data = path.parent == DATA
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            # From a data module: ``from .x import`` inside the package, ``..data.x``/``ichseq.data.x`` outside it.
            if (in_data and node.level == 1) or "data" in (node.module or "").split("."):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not private, private


def test_no_function_of_the_data_package_is_over_60_lines():
    long = [f"{path.name}:{f.name} ({f.end_lineno - f.lineno + 1} lines)" for path in DATA.glob("*.py")
            for f in _functions(ast.parse(path.read_text())) if f.end_lineno - f.lineno + 1 > 60]
    assert not long, long


@pytest.mark.parametrize("module", ["cache", "cohort", "readers", "volumes", "dicom", "rsna", "cq500", "splits"])
def test_the_light_data_modules_do_not_import_torch(module):
    # Each on its own, in a fresh interpreter: its imports alone decide (and an import cycle
    # closed only by the order of imports would fail here for some module).
    code = f"import sys, ichseq.data.{module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
