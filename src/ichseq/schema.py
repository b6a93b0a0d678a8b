"""Checking a value against a node of a JSON schema: one-line errors naming the key, and the
node's defaults filled in. Generic (no knowledge of ichseq's configuration), so the model
modules can check their own entry keys with it without importing :mod:`ichseq.config`."""

from __future__ import annotations

import copy

import jsonschema

from .errors import ConfigError

TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping",
              "boolean": "true or false", "array": "a list", "null": "null"}


def resolve_ref(node: dict, root: dict) -> dict:
    """``node`` with a local ``$ref`` ("#/$defs/name") merged in (the node's own keys win).

    ``properties`` merge key by key, so a node can give a referenced section other defaults
    (``pretrain.dataset.synthetic`` is the study's synthetic spec with its own dir and seed)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    merged = {**resolve_ref(target, root), **{k: v for k, v in node.items() if k not in ("$ref", "properties")}}
    if "properties" in node:
        base = merged.get("properties", {})
        merged["properties"] = {**base, **{k: {**base.get(k, {}), **v} for k, v in node["properties"].items()}}
    return merged


def fill_defaults(instance: dict, schema: dict, root: dict | None = None) -> None:
    # Only named properties get defaults: the entries of an open mapping (``models``) keep
    # exactly what the user wrote, so their overrides stay partial.
    root = root or schema
    for key, sub in schema.get("properties", {}).items():
        sub = resolve_ref(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            fill_defaults(instance[key], sub, root)


def describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "anyOf" and error.instance is not None and error.context:
        # "null or a section": say what is wrong inside the section, not "no schema matched".
        inner = [e for e in error.context if e.validator != "type" or e.validator_value != "null"]
        if inner:
            return describe(jsonschema.exceptions.best_match(inner))
    path = ".".join(str(p) for p in error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = f"{path}.{extra[0]}" if path else extra[0]
        return f"{key}: unknown key (allowed here: {', '.join(allowed)})"
    where = path or "(top level)"
    if v == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        want = " or ".join(TYPE_NAMES.get(t, t) for t in types)
        return f"{where}: expected {want}, got {error.instance!r}"
    if v == "enum":
        return f"{where}: must be one of {', '.join(map(str, error.validator_value))}, got {error.instance!r}"
    return f"{where}: {error.message}"


def first_error(values, node: dict) -> str | None:
    """The one-line message (:func:`describe`) of the error of ``values`` against schema
    ``node`` nearest the top (then by path, so the message does not depend on jsonschema's
    order), or None when ``values`` is valid."""
    validator = jsonschema.Draft202012Validator(node)
    errors = sorted(validator.iter_errors(values), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    return describe(errors[0]) if errors else None


def check_node(values, node: dict, where: str) -> None:
    """Raise a one-line ConfigError naming ``where.<key>`` when ``values`` breaks schema ``node``."""
    message = first_error(values, node)
    if message:
        raise ConfigError(f"{where}.{message}" if not message.startswith("(top level)") else f"{where}{message[11:]}")


def check_values(values: dict, node: dict, where: str, root: dict | None = None) -> dict:
    """``values`` checked against schema ``node`` (one-line ConfigError naming ``where.<key>``),
    with the node's defaults filled in; ``values`` is not changed."""
    check_node(values, node, where)
    values = copy.deepcopy(values)
    fill_defaults(values, node, root)
    return values
