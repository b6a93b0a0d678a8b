"""The environment files agree, and CI runs exactly the README's test command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{line!r} is not an exact pin"
        pins[req.name.lower().replace("_", "-")] = spec[0].version
    return pins


def requirements_pins() -> dict[str, str]:
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def test_environment_yml_pins_equal_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(re.fullmatch(r"python=3\.11(\.\*)?", d) for d in conda), conda
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == requirements_pins()


def test_torch_pinned_exactly_everywhere():
    assert requirements_pins()["torch"] == "2.13.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [Requirement(d) for d in project["dependencies"] if d.startswith("torch")]
    assert [str(r.specifier) for r in torch] == ["==2.13.0"]
    assert not any("torchvision" in line for line in (ROOT / "requirements.txt").read_text().splitlines())


def test_pyproject_ranges_admit_the_pins():
    pins = requirements_pins()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(pyproject["dependencies"])
    for extra in pyproject.get("optional-dependencies", {}).values():
        deps.extend(extra)
    for dep in deps:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a dependency but not pinned in requirements.txt"
        assert req.specifier.contains(Version(pins[name])), f"{dep} excludes the pinned {pins[name]}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [c for c in re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)]
    ci = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert len(ci) == 1
    assert any(ci[0] in block for block in commands), "the README must show .ci/run's command"


def test_a_plain_install_validates_configs_from_any_directory(tmp_path):
    # A non-editable install carries the schema as package data: built from the tracked
    # sources alone, installed into a folder of its own, used from a folder far from the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):  # what the build reads besides src/
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "wheel").glob("ichseq-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import json, sys, yaml; sys.path.insert(0, sys.argv[1]); import ichseq.config as c; "
        "config = c.validate_config(yaml.safe_load(open(sys.argv[2]))); "
        "print(json.dumps({'file': c.__file__, 'replicates': config['splits']['replicates'], "
        "'frames': c.section_defaults('frames')['policy']}))"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path / "site"), str(ROOT / "config.yaml")],
                          capture_output=True, text=True, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["file"]).is_relative_to(tmp_path / "site"), got  # not the checkout's editable copy
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert got["frames"] == schema["$defs"]["frames"]["properties"]["policy"]["default"]
    assert got["replicates"] == yaml.safe_load((ROOT / "config.yaml").read_text())["splits"]["replicates"]


@pytest.mark.slow  # three collections of the whole suite
def test_plain_pytest_is_the_fast_loop_and_ci_runs_every_test():
    def collected(*args: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return {line for line in proc.stdout.splitlines() if "::" in line}

    everything, fast = collected("--all"), collected()
    left_out = everything - fast
    # The end-to-end workflow runs and the Slurm cluster are left out of the fast loop, nothing else.
    assert any(t.startswith("tests/test_workflow.py::") for t in left_out)
    assert any(t.startswith("tests/test_slurm.py::") for t in left_out)
    assert fast <= everything and len(fast) > 10 * len(left_out)
    assert collected("-m", "slow") == left_out
    assert "--all" in (ROOT / ".ci" / "run").read_text()
