"""Model registry: one model = one small module here + one entry under ``models:`` in the config.

A module defines a ``CTClassifier`` subclass (``HFClassifier`` for a Hugging Face model; see
:mod:`ichseq.models.base` for the interface) decorated with ``@register("<name>")``;
``build_model("<name>", settings)`` then builds it from the config entry (``pretrained``,
``config``, ``num_frames``, ``image_size``, ...).

The registry is lazy: the built-in architectures are found by reading (not importing) the
modules of this package for ``@register("<name>")`` decorators, giving ``BUILTIN`` (name ->
module, like transformers' auto mappings); a module, which imports torch and transformers
(seconds), is imported only when one of its models is built. So the Snakefile can check every
configured architecture name on each invocation (``available_models``) for free, and adding a
model is adding its module: no list to edit. A model defined elsewhere (a plugin, a test)
registers itself with ``@register`` when its module is imported.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError

if TYPE_CHECKING:
    from .base import CTClassifier



#: Sample kinds (``CTClassifier.kind``): what one sample of a model is.
#: ``slice`` one slice; ``sequence`` a fixed number of a scan's frames; ``scan`` a whole scan of
#: any length (padding + a frame mask); ``context`` one slice with its neighbours.
KINDS = ("slice", "sequence", "scan", "context")
#: Kinds whose models read the cached per-slice features of another (slice) model's backbone:
#: the two-stage models, whose entry names that model as ``backbone``.
FEATURE_KINDS = ("scan", "context")


def _class_kind(node: ast.ClassDef) -> str | None:
    """The string constant a class body assigns to ``kind`` (``kind = "slice"``), if any."""
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        value = getattr(stmt, "value", None)
        if (any(getattr(t, "id", None) == "kind" for t in targets) and isinstance(value, ast.Constant)
                and isinstance(value.value, str)):
            return value.value
    return None


def _registered(path: Path) -> dict[str, str | None]:
    """What a module registers: the string argument of each ``@register("...")`` decorator ->
    the kind its class body declares (None when it inherits it)."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register" and deco.args
                        and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
                    found[deco.args[0].value] = _class_kind(node)
    return found


def _builtin() -> tuple[dict[str, str], dict[str, str | None]]:
    found: dict[str, str] = {}
    kinds: dict[str, str | None] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name in ("__init__.py", "base.py"):
            continue
        for name, kind in _registered(path).items():
            if name in found:
                raise ModelError(f"model name {name!r} is registered twice ({found[name]}, {__name__}.{path.stem})")
            found[name] = f"{__name__}.{path.stem}"
            kinds[name] = kind
    return found, kinds


#: Built-in architectures: registry name -> the module of this package that registers it on
#: import; and -> the sample kind its class declares (read from the source, like the names).
BUILTIN, _BUILTIN_KINDS = _builtin()

#: Architectures whose class is loaded: name -> class.
REGISTRY: dict[str, type[CTClassifier]] = {}


def register(name: str):
    """Class decorator: make ``cls`` buildable as ``build_model(name, ...)``."""

    def decorator(cls: type[CTClassifier]) -> type[CTClassifier]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ModelError(f"model name {name!r} is registered twice ({REGISTRY[name].__name__}, {cls.__name__})")
        REGISTRY[name] = cls
        return cls

    return decorator


def available_models() -> list[str]:
    """Every buildable architecture name, without importing any model module."""
    return sorted(set(BUILTIN) | set(REGISTRY))


def model_kind(name: str) -> str:
    """The sample kind of architecture ``name`` (one of :data:`KINDS`), without importing a
    built-in module when its class states it (``kind = "..."`` in the class body)."""
    if name in REGISTRY:
        return REGISTRY[name].kind
    if _BUILTIN_KINDS.get(name) is not None:
        return _BUILTIN_KINDS[name]
    return model_class(name).kind


def unknown_model_message(name: str, entry: str | None = None) -> str:
    """The one-line error for an architecture name that is not registered (``entry``: its key
    under ``models:``; the message names ``models.<entry>.architecture`` when they differ)."""
    key = entry or name
    where = f"models.{key}.architecture" if entry and entry != name else f"models.{key}"
    return f"{where}: unknown model {name!r}; available: {', '.join(available_models())}"


def model_class(name: str) -> type[CTClassifier]:
    """The class registered as ``name``, importing its built-in module on first use."""
    if name not in REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in REGISTRY:
        raise ModelError(unknown_model_message(name))
    return REGISTRY[name]


def build_model(name: str, settings: dict | None = None, entry: str | None = None) -> CTClassifier:
    """Build the registered model ``name`` from its config entry (None or {} = random init defaults).

    ``entry`` is the entry's name under ``models:`` when it differs from the architecture
    (e.g. ``vivit_first`` with ``architecture: vivit``); error messages name that key.
    """
    key = entry or name
    if name not in available_models():
        raise ModelError(unknown_model_message(name, entry))
    settings = settings or {}
    if not isinstance(settings, dict):
        raise ModelError(f"models.{key}: expected a mapping of settings, got {type(settings).__name__}")
    from .phases import foreign_key  # an entry key of another architecture: refused, not ignored

    foreign = foreign_key(name, settings, key)
    if foreign:
        raise ModelError(foreign)
    return model_class(name).from_settings(settings, name=key)


def load_model(name: str, directory, settings: dict | None = None, entry: str | None = None) -> CTClassifier:
    """The model ``name`` saved in ``directory`` by its ``save`` (``settings``: its config entry)."""
    return model_class(name).load(directory, entry or name, settings or {})


def __getattr__(attr: str):
    # ``from ichseq.models import CTClassifier`` keeps working, but importing this
    # package alone (as config validation does) does not import torch.
    if attr in ("ID2LABEL", "Batch", "CTClassifier", "HFClassifier"):
        from . import base

        return getattr(base, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = ["BUILTIN", "REGISTRY", "ID2LABEL", "Batch", "CTClassifier", "HFClassifier", "available_models",
           "build_model", "model_kind", "KINDS", "FEATURE_KINDS", "load_model", "model_class", "register", "unknown_model_message"]
