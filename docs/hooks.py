"""MkDocs hook: the configuration reference, generated from the package's schema at build time.

``docs/configuration.md`` holds the marker ``<!-- schema-reference -->``; this hook replaces it
with one section per top-level key of the configuration, each a table of every key below it
(path, type, default, allowed values, description), read from ``ichseq.config.load_schema()``:
the schema that validation uses, with the entry keys that the model classes declare merged in.
So the reference cannot drift from the schema: a key added there is on the page at the next
build, and a build without the marker fails.

``reference(schema)`` and ``schema_paths(schema)`` are plain functions, so tests can render any
schema without MkDocs.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import yaml
from mkdocs.exceptions import PluginError

from ichseq.config import SCHEMA_RESOURCE, load_schema
from ichseq.schema import resolve_ref as resolve

MARKER = "<!-- schema-reference -->"
PAGE = "configuration.md"
#: Defaults longer than this are shown as a YAML block under their section's table.
LONG_DEFAULT = 60
#: The path component that stands for any name of an open mapping (``models.<name>.pooling``).
ANY_NAME = "<name>"

_TYPE_WORDS = {"object": "mapping", "array": "list", "string": "string", "integer": "integer",
               "number": "number", "boolean": "boolean", "null": "null"}


def _branches(node: dict, root: dict) -> list[dict]:
    """The alternatives of an ``anyOf`` node, each resolved (a plain node is its only one)."""
    if "anyOf" in node:
        return [resolve(b, root) for b in node["anyOf"]]
    return [node]


def _section(node: dict, root: dict) -> dict | None:
    """The mapping (with ``properties``) a node is, or may be (``null`` or a section)."""
    for branch in _branches(resolve(node, root), root):
        if branch.get("properties"):
            return branch
    return None


def shared_section(path: str, node: dict, root: dict) -> str | None:
    """The top-level key whose section a node repeats, when the node is that section by
    reference with nothing of its own (``models.<name>.training`` is ``training``'s keys, as
    overrides): its keys are listed once, there, and the node's row points to them."""
    if "properties" in node:
        return None
    refs = {b.get("$ref") for b in ([node] + node.get("anyOf", []))} - {None}
    for key, top in root.get("properties", {}).items():
        if key != path and top.get("$ref") in refs:
            return key
    return None


def _children(path: str, node: dict, root: dict) -> list[tuple[str, dict]]:
    """(path suffix, schema) of what lies below a node: its properties, the entries of an open
    mapping whose values are sections (``models.<name>``) and the items of a list of sections."""
    if shared_section(path, node, root):
        return []
    node = resolve(node, root)
    out: list[tuple[str, dict]] = []
    section = _section(node, root)
    if section:
        out += [(f".{key}", sub) for key, sub in section["properties"].items()]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and _section(extra, root):
        out.append((f".{ANY_NAME}", extra))
    items = node.get("items")
    if isinstance(items, dict) and _section(items, root):
        out += [(f"[].{key}", sub) for key, sub in _section(items, root)["properties"].items()]
    return out


def schema_paths(schema: dict) -> list[str]:
    """Every configuration path the schema defines, in the schema's order."""
    def walk(path: str, node: dict) -> list[str]:
        return [path] + [p for suffix, sub in _children(path, node, schema) for p in walk(path + suffix, sub)]

    return [p for key, sub in schema["properties"].items() for p in walk(key, sub)]


def _type(node: dict, root: dict) -> str:
    words: list[str] = []
    for branch in _branches(resolve(node, root), root):
        types = branch.get("type")
        if types is None and "enum" in branch:
            types = sorted({_TYPE_WORDS["string"] if isinstance(v, str) else type(v).__name__ for v in branch["enum"]})
        types = types if isinstance(types, list) else [types] if types else []
        for t in types:
            word = _TYPE_WORDS.get(t, t)
            if t == "array" and isinstance(branch.get("items"), dict):
                inner = _type(branch["items"], root)
                word = f"list of {inner}" if inner else word
            if t == "object" and isinstance(branch.get("additionalProperties"), dict) and not _section(
                    branch["additionalProperties"], root):
                word = f"mapping of {_type(branch['additionalProperties'], root)}"
            if word not in words:
                words.append(word)
        if not types and branch.get("properties"):
            words.append("mapping")
    return " or ".join(words)


def _value(value) -> str:
    """A value as it is written in config.yaml (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip().removesuffix("...").strip()


def _allowed(node: dict, root: dict) -> str:
    parts: list[str] = []
    for branch in _branches(resolve(node, root), root):
        if "enum" in branch:
            parts.append(", ".join(f"`{_value(v)}`" for v in branch["enum"]))
        low = [f"≥ {_value(branch['minimum'])}"] if "minimum" in branch else []
        low += [f"> {_value(branch['exclusiveMinimum'])}"] if "exclusiveMinimum" in branch else []
        high = [f"≤ {_value(branch['maximum'])}"] if "maximum" in branch else []
        high += [f"< {_value(branch['exclusiveMaximum'])}"] if "exclusiveMaximum" in branch else []
        if low or high:
            parts.append(" and ".join(low + high))
        if "pattern" in branch:
            parts.append(f"matches `{branch['pattern']}`")
        if "minLength" in branch:
            parts.append(f"at least {branch['minLength']} character(s)")
        if "minItems" in branch or "maxItems" in branch:
            parts.append(f"{branch.get('minItems', 0)} to {branch.get('maxItems', 'any number of')} items")
        if "minProperties" in branch:
            parts.append(f"at least {branch['minProperties']} entry")
        names = branch.get("propertyNames", {}).get("pattern")
        if names:
            parts.append(f"names match `{names}`")
        if branch.get("required"):
            parts.append("requires " + ", ".join(f"`{k}`" for k in branch["required"]))
    return "; ".join(parts)


def _cell(text: str) -> str:
    """Text for a table cell: one line, ``|`` escaped, and outside code spans the characters
    Markdown or HTML would read (``CQ500-CT-<n>.zip`` must not become a tag)."""
    pieces = re.sub(r"\s+", " ", text).strip().split("`")
    for i in range(0, len(pieces), 2):  # the text between code spans
        pieces[i] = html.escape(pieces[i], quote=False).replace("*", "\\*").replace("[", "\\[").replace("|", "\\|")
    return "`".join(pieces)


def _rows(path: str, node: dict, root: dict, long_defaults: list[tuple[str, object]]) -> list[str]:
    resolved = resolve(node, root)
    if "default" in resolved:
        text = _value(resolved["default"])
        if len(text) > LONG_DEFAULT:
            long_defaults.append((path, resolved["default"]))
            default = "the block below the table"
        else:
            default = f"`{text}`"
    else:
        default = "—"
    description = resolved.get("description", "")
    allowed = _allowed(node, root)
    shared = shared_section(path, node, root)
    if shared:
        allowed = f"the keys of [`{shared}`](#{shared}) {'(or `null`)' if 'anyOf' in node else ''}".strip()
        default = "—"
    row = f"| `{path}` | {_cell(_type(node, root))} | {_cell(default)} | {allowed if shared else _cell(allowed)} | {_cell(description)} |"
    rows = [row]
    for suffix, sub in _children(path, node, root):
        rows += _rows(path + suffix, sub, root, long_defaults)
    return rows


def reference(schema: dict, heading: str = "###") -> str:
    """The reference as Markdown: one section per top-level key, a table of every key in it."""
    parts = []
    for key, node in schema["properties"].items():
        long_defaults: list[tuple[str, object]] = []
        rows = _rows(key, node, schema, long_defaults)
        parts.append(f"{heading} `{key}`\n")
        description = resolve(node, schema).get("description")
        if description:
            parts.append(_cell(description).replace("\\|", "|") + "\n")
        parts.append("| key | type | default | allowed values | description |\n|---|---|---|---|---|")
        parts.append("\n".join(rows) + "\n")
        for path, value in long_defaults:
            block = yaml.safe_dump(value, default_flow_style=None, width=100, sort_keys=False)
            parts.append(f"Default of `{path}`:\n\n```yaml\n{block}```\n")
    return "\n".join(parts)


def load() -> dict:
    """The schema validation uses (the package's file, with the model classes' entry keys)."""
    return load_schema()


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE}: the marker {MARKER} is missing, so the configuration reference "
                          "would not be generated")
    return markdown.replace(MARKER, reference(load()))


def on_serve(server, config, builder):
    server.watch(str(Path(str(SCHEMA_RESOURCE))))
    return server
