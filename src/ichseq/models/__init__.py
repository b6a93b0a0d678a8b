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

import copy
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError
from .catalogue import DECLARED, inherited, read_package

if TYPE_CHECKING:
    from .base import CTClassifier



#: Sample kinds (``CTClassifier.kind``): what one sample of a model is.
#: ``slice`` one slice; ``sequence`` a fixed number of a scan's frames; ``scan`` a whole scan of
#: any length (padding + a frame mask); ``context`` one slice with its neighbours.
KINDS = ("slice", "sequence", "scan", "context")
#: Kinds whose models read the cached per-slice features of another (slice) model's backbone:
#: the two-stage models, whose entry names that model as ``backbone``.
FEATURE_KINDS = ("scan", "context")


def _builtin() -> tuple[dict[str, str], dict[str, dict]]:
    classes, registered = read_package(Path(__file__).parent, __name__)
    modules = {name: classes[cls].module for name, cls in registered.items()}
    declared = {name: {attr: inherited(classes, cls, attr) for attr in DECLARED} for name, cls in registered.items()}
    return modules, declared


#: Built-in architectures: registry name -> the module of this package that registers it on
#: import; and -> what its class declares (kind, entry_keys, refusal_hint: read from the source,
#: like the names; see :mod:`ichseq.models.catalogue`).
BUILTIN, BUILTIN_DECLARED = _builtin()

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


def declared(name: str, attribute: str):
    """What architecture ``name``'s class declares as ``attribute`` (one of
    :data:`~ichseq.models.catalogue.DECLARED`), without importing a built-in module."""
    if name in REGISTRY:
        return getattr(REGISTRY[name], attribute, None)
    if name in BUILTIN_DECLARED:
        return BUILTIN_DECLARED[name][attribute]
    return getattr(model_class(name), attribute, None)


def model_kind(name: str) -> str:
    """The sample kind of architecture ``name`` (one of :data:`KINDS`), without importing a
    built-in module when its class states it (``kind = "..."`` in the class body)."""
    return declared(name, "kind") or model_class(name).kind


def entry_keys(name: str) -> dict[str, dict | None]:
    """The ``models:`` entry keys architecture ``name`` reads, each with its own JSON schema or
    None for the shared definition (``CTClassifier.entry_keys``); a copy."""
    return copy.deepcopy(dict(declared(name, "entry_keys") or {}))


def key_readers(key: str) -> list[str]:
    """The architectures whose entries take ``key``."""
    return [name for name in available_models() if key in entry_keys(name)]


def refused_key(name: str, entry: dict, where: str) -> str | None:
    """The one-line refusal of the first key of ``entry`` (of architecture ``name``, under
    ``models.<where>``) that another architecture reads but ``name`` does not, or None.
    A key set for the wrong model is refused, not silently ignored."""
    own = entry_keys(name)
    for key, value in entry.items():
        if value is None or key in own:
            continue
        readers = key_readers(key)
        if readers:
            hint = declared(name, "refusal_hint") or "remove it"
            plural = "s" if len(readers) > 1 else ""
            return f"models.{where}.{key}: applies only to architecture{plural} {', '.join(readers)}, not {name}; {hint}"
    return None


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
    refusal = refused_key(name, settings, key)
    if refusal:
        raise ModelError(refusal)
    return model_class(name).from_settings(settings, name=key)


def load_model(name: str, directory, settings: dict | None = None, entry: str | None = None) -> CTClassifier:
    """The model ``name`` saved in ``directory`` by its ``save`` (``settings``: its config entry)."""
    return model_class(name).load(directory, entry or name, settings or {})


def __getattr__(attr: str):
    # ``from ichseq.models import CTClassifier`` keeps working, but importing this
    # package alone (as config validation does) does not import torch.
    if attr in ("ID2LABEL", "Batch", "CTClassifier"):
        from . import base

        return getattr(base, attr)
    if attr == "HFClassifier":
        from . import hf

        return hf.HFClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = ["BUILTIN", "REGISTRY", "ID2LABEL", "Batch", "CTClassifier", "HFClassifier", "available_models",
           "build_model", "declared", "entry_keys", "key_readers", "model_kind", "refused_key", "KINDS", "FEATURE_KINDS", "load_model", "model_class", "register", "unknown_model_message"]
