"""What the built-in model modules declare, read from their source without importing them.

A model module imports torch and transformers (seconds), yet the Snakefile checks every
configured model on each start -- under Slurm, in every job. So what a model class says about
itself to the config check is written as literals in its class body, and read here with
:mod:`ast`:

- ``kind = "slice"``: what one sample is (one of :data:`ichseq.models.KINDS`);
- ``entry_keys = {"pooling": {"enum": ["mean", "max"]}, "image_size": None, ...}``: the keys
  of its ``models:`` entry it reads, each with its JSON schema, or None for the definition
  shared by several models (``$defs.model_keys`` of the package schema); a schema given for a
  shared key narrows it (merged over the shared definition);
- ``refusal_hint = "..."``: what to tell a user who sets a key it does not read (default:
  remove it).

A class that does not state one inherits it from its base class, as Python would; bases are
followed by name within this package. A class registered from elsewhere (a plugin, a test) is
imported anyway, so its attributes are read directly.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError

#: The class-body literals read from the source.
DECLARED = ("kind", "entry_keys", "refusal_hint")


@dataclass
class ClassSource:
    """One class of a model module as its source states it."""

    module: str
    bases: list[str]
    declared: dict = field(default_factory=dict)  # DECLARED name -> literal value


def class_literals(node: ast.ClassDef) -> dict:
    """The :data:`DECLARED` names a class body assigns a literal to (``kind = "slice"``)."""
    found = {}
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        names = [t.id for t in targets if isinstance(t, ast.Name) and t.id in DECLARED]
        if names and getattr(stmt, "value", None) is not None:
            try:
                found[names[0]] = ast.literal_eval(stmt.value)
            except ValueError as exc:
                raise ModelError(f"{node.name}.{names[0]}: must be a literal (it is read without importing the "
                                 f"module): {exc}") from None
    return found


def registered_name(node: ast.ClassDef) -> str | None:
    """The argument of the class's ``@register("...")`` decorator, if it has one."""
    for deco in node.decorator_list:
        if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register" and deco.args
                and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
            return deco.args[0].value
    return None


def read_package(directory: Path, package: str) -> tuple[dict[str, ClassSource], dict[str, str]]:
    """Every class of the modules in ``directory`` (name -> source) and what they register
    (registry name -> class name)."""
    classes: dict[str, ClassSource] = {}
    registered: dict[str, str] = {}
    for path in sorted(directory.glob("*.py")):
        if path.name == "__init__.py":
            continue
        module = f"{package}.{path.stem}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            classes[node.name] = ClassSource(module, [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases],
                                             class_literals(node))
            name = registered_name(node)
            if name is None:
                continue
            if name in registered:
                raise ModelError(f"model name {name!r} is registered twice ({classes[registered[name]].module}, "
                                 f"{module})")
            registered[name] = node.name
    return classes, registered


def inherited(classes: dict[str, ClassSource], name: str, attribute: str):
    """``attribute`` of class ``name`` as Python would resolve it along the first bases found in
    this package (depth first, as single inheritance: the model classes have one model base);
    None when no class on the way states it."""
    seen = set()
    while name in classes and name not in seen:
        seen.add(name)
        source = classes[name]
        if attribute in source.declared:
            return source.declared[attribute]
        name = next((base for base in source.bases if base in classes), "")
    return None
