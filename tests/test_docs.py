"""The documentation site builds with ``mkdocs build --strict`` (a broken link or anchor fails),
its configuration reference lists every key of the schema, and the README stays short and
points at pages and pictures that exist."""

from __future__ import annotations

import copy
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ichseq.config import SCHEMA_RESOURCE, load_schema

ROOT = Path(__file__).resolve().parents[1]


def _hooks():
    spec = importlib.util.spec_from_file_location("ichseq_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()


def _text(page: Path) -> str:
    """A built page's text: tags dropped, entities decoded (``models.<name>.pooling``)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    return out


def test_the_site_builds_strict_with_every_page(site):
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_PermissiveLoader)["nav"]
    pages = re.findall(r"'([\w-]+)\.md'", str(nav))
    assert {p.stem for p in (ROOT / "docs").glob("*.md")} == set(pages), "every page is in the nav, once"
    for page in pages:
        built = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.is_file(), page


def test_the_built_reference_lists_every_key_of_the_schema(site):
    text = _text(site / "configuration" / "index.html")
    paths = hooks.schema_paths(load_schema())
    missing = [p for p in paths if p not in text]
    assert not missing, f"the configuration reference misses {missing}"
    # The open mappings and the lists of sections are walked into, not just named.
    assert any(p.startswith("models.<name>.") for p in paths)
    assert any("[]." in p for p in paths)
    assert {"dataset.synthetic.difficulty", "pretrain.training.lr", "threads.predict"} <= set(paths)


def _property_names(node) -> set[str]:
    """Every key defined under any ``properties`` anywhere in a schema document."""
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names |= set(value)
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


def test_every_key_named_in_the_schema_file_is_in_the_reference():
    # Independent of the walk: a key the walk would skip (under a $ref, anyOf, an open mapping
    # or a list's items) is still named in the file, and must end some path of the reference.
    raw = yaml.safe_load(Path(str(SCHEMA_RESOURCE)).read_text())
    leaves = {re.split(r"\.|\[\]\.", p)[-1] for p in hooks.schema_paths(load_schema())}
    assert not _property_names(raw) - leaves


def test_a_key_added_to_the_schema_is_in_the_reference_with_its_default_and_description():
    schema = copy.deepcopy(load_schema())
    schema["properties"]["splits"]["properties"]["folds_for_docs_test"] = {
        "type": "integer", "minimum": 2, "default": 5, "description": "a key only this test adds"}
    schema["$defs"]["model"]["properties"]["entry_key_for_docs_test"] = {
        "enum": ["left", "right"], "description": "an entry key only this test adds"}
    rendered = hooks.reference(schema)
    row = next(line for line in rendered.splitlines() if line.startswith("| `splits.folds_for_docs_test` |"))
    assert "| integer | `5` | ≥ 2 | a key only this test adds |" in row
    row = next(line for line in rendered.splitlines() if line.startswith("| `models.<name>.entry_key_for_docs_test` |"))
    assert "`left`, `right`" in row and "an entry key only this test adds" in row
    del schema["properties"]["threads"]
    assert "threads.predict" not in hooks.reference(schema)


def test_descriptions_cannot_break_the_tables():
    schema = {"properties": {"section": {"type": "object", "properties": {
        "key": {"type": "string", "default": "a|b", "description": "CQ500-CT-<n>.zip, gru | lstm, *not* [a link](x)"}}}}}
    row = next(line for line in hooks.reference(schema).splitlines() if line.startswith("| `section.key` |"))
    assert row.count(" | ") == 4 and "&lt;n&gt;" in row and "gru \\| lstm" in row and "\\*not\\*" in row
    assert "\\[a link]" in row
    import markdown

    cells = re.findall(r"<td>(.*?)</td>", markdown.markdown(hooks.reference(schema), extensions=["tables"]))
    assert cells[-5:] == ["<code>section.key</code>", "string", "<code>a|b</code>", "",
                          "CQ500-CT-&lt;n&gt;.zip, gru | lstm, *not* [a link](x)"]


def test_the_configuration_page_without_its_marker_fails_the_build():
    from mkdocs.exceptions import PluginError

    page = SimpleNamespace(file=SimpleNamespace(src_uri="configuration.md"))
    with pytest.raises(PluginError, match="schema-reference"):
        hooks.on_page_markdown("# Configuration\n", page, None, None)
    other = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    assert hooks.on_page_markdown("# Overview\n", other, None, None) == "# Overview\n"


def test_the_readme_is_short_and_its_links_and_picture_exist(site):
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert len(images) == 1 and (ROOT / images[0]).is_file()
    for target in re.findall(r"\]\(([^)#]+\.md)(#[^)]*)?\)", readme):
        path, anchor = target
        assert (ROOT / path).is_file(), path
        if anchor and path.startswith("docs/"):
            stem = Path(path).stem
            built = site / ("index.html" if stem == "index" else f"{stem}/index.html")
            assert f'id="{anchor[1:]}"' in built.read_text(), f"{path}{anchor}"


def test_the_docs_say_how_to_retake_the_screenshots():
    page = (ROOT / "docs" / "development.md").read_text()
    assert "workflow/tools/report_screenshots.py results/report.html docs/images" in page
    for image in (ROOT / "docs" / "images").glob("*.png"):
        assert image.name in page, f"docs/development.md does not say how {image.name} is made"
    script = (ROOT / "workflow" / "tools" / "report_screenshots.py").read_text()
    assert "docs/images" in script


class _PermissiveLoader(yaml.SafeLoader):
    """Reads mkdocs.yml, whose ``!relative`` tags are MkDocs' own."""


_PermissiveLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
