"""Model registry: one model = one small module here + one entry under ``models:`` in the config.

A module defines a ``SequenceClassifier`` subclass decorated with ``@register("<name>")`` and is
imported at the bottom of this file; ``build_model("<name>", settings)`` then builds it from the
config entry (``pretrained``, ``config``, ``num_frames``, ``image_size``).
"""

from __future__ import annotations

from ..errors import ModelError
from .base import ID2LABEL, SequenceClassifier

REGISTRY: dict[str, type[SequenceClassifier]] = {}


def register(name: str):
    """Class decorator: make ``cls`` buildable as ``build_model(name, ...)``."""

    def decorator(cls: type[SequenceClassifier]) -> type[SequenceClassifier]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ModelError(f"model name {name!r} is registered twice ({REGISTRY[name].__name__}, {cls.__name__})")
        REGISTRY[name] = cls
        return cls

    return decorator


def available_models() -> list[str]:
    return sorted(REGISTRY)


def build_model(name: str, settings: dict | None = None, entry: str | None = None) -> SequenceClassifier:
    """Build the registered model ``name`` from its config entry (None or {} = random init defaults).

    ``entry`` is the entry's name under ``models:`` when it differs from the architecture
    (e.g. ``vivit_first`` with ``architecture: vivit``); error messages name that key.
    """
    key = entry or name
    if name not in REGISTRY:
        where = f"models.{key}.architecture" if entry and entry != name else f"models.{key}"
        raise ModelError(f"{where}: unknown model {name!r}; available: {', '.join(available_models())}")
    settings = settings or {}
    if not isinstance(settings, dict):
        raise ModelError(f"models.{key}: expected a mapping of settings, got {type(settings).__name__}")
    return REGISTRY[name].from_settings(settings, name=key)


# Built-in models register themselves on import (kept last: they import ``register`` from here).
from . import convnext, vivit  # noqa: E402,F401

__all__ = ["REGISTRY", "ID2LABEL", "SequenceClassifier", "available_models", "build_model", "register"]
