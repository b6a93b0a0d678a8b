"""The package's import graph (issue 27.3), checked on the source of every module of
``src/ichseq``: imports at the top of each module, except the few optional or heavy
third-party libraries listed in LAZY with the reason; no module-level import cycle; no
private name of one module imported by another; no function over 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ichseq"
MODULES = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted(PACKAGE.rglob("*.py"))}
#: Imports allowed inside a function: (module, what it imports) -> why.
LAZY = {
    ("ichseq.analysis.figures", "autorank"): "imports pyplot; only the critical-difference diagram needs it",
    ("ichseq.analysis.ranking", "autorank"): "imports pyplot; only the ranking of three or more models needs it",
    ("ichseq.data.dicom", "gdcm"): "optional: only compressed DICOM writes need python-gdcm",
    ("ichseq.inference.saliency", "captum.attr"): "heavy; only Grad-CAM maps need it",
    ("ichseq.profiles", "platformdirs"): "optional, with its own error message",
    ("ichseq.training.ood", "sklearn.covariance"): "keeps the OOD reference numpy-only until it is fitted",
    ("ichseq.training.plan", "torch"): "the Snakefile reads plans on every start without building a model",
    ("ichseq.models", ".base"): "the registry is read on every Snakemake start; the contract imports torch",
    ("ichseq.models", ".hf"): "the registry is read on every Snakemake start; HFClassifier imports transformers",
}
MAX_LINES = 60


def trees():
    for module, path in MODULES.items():
        yield module, path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return ["." * node.level + (node.module or "") + ("" if node.module else alias.name) for alias in node.names]


def resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The package modules an ``import from`` at module level of ``module`` loads."""
    is_package = MODULES[module].name == "__init__.py"
    if node.level:
        parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = [base] if base in MODULES else []
    return found + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]


def test_imports_are_at_module_top_but_the_listed_lazy_ones():
    inside = set()
    for module, _, tree in trees():
        for function in functions(tree):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    inside |= {(module, name) for name in imported(node)}
    assert inside - set(LAZY) == set(), "imports inside functions: " + repr(sorted(inside - set(LAZY)))
    assert set(LAZY) - inside == set(), "LAZY lists imports that are no longer lazy: " + repr(sorted(set(LAZY) - inside))


def test_no_module_level_import_cycle():
    graph: dict[str, set[str]] = {}
    for module, _, tree in trees():
        edges = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # annotations only
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    edges |= set(resolve(module, stmt))
                elif isinstance(stmt, ast.Import):
                    edges |= {a.name for a in stmt.names if a.name in MODULES}
        # A package's own submodules are loaded after it: not an edge back to it.
        graph[module] = {m for m in edges if m != module}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            assert state.get(other) != 1, "import cycle: " + " -> ".join(path + [other])
            if other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_no_private_name_of_another_module_is_imported():
    private = [f"{module}: {name}" for module, _, tree in trees() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom)
               for name in (a.name for a in node.names) if name.startswith("_") and not name.startswith("__")]
    assert not private, private


def test_no_function_is_over_60_lines():
    long = [f"{module}.{f.name}: {f.end_lineno - f.lineno + 1} lines" for module, _, tree in trees()
            for f in functions(tree) if f.end_lineno - f.lineno + 1 > MAX_LINES]
    assert not long, long


def test_the_checks_see_a_cycle_a_lazy_import_and_a_long_function(tmp_path, monkeypatch):
    # The checks above are only as good as their reading of the source: feed them a bad package.
    package = tmp_path / "ichseq"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("from . import a\n\ndef f():\n    import json\n" + "    x = 1\n" * 61)
    modules = {".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
               for p in sorted(package.rglob("*.py"))}
    monkeypatch.setitem(globals(), "MODULES", modules)
    for check in (test_imports_are_at_module_top_but_the_listed_lazy_ones, test_no_module_level_import_cycle,
                  test_no_function_is_over_60_lines):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} passed on a bad package")
