"""The ``ichseq`` command line: help for every option, and the synthetic subcommand."""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from ichseq.cli import HANDLERS, build_parser, handler, main
from ichseq.data.synthetic import SyntheticSpec, generate_synthetic


def _parsers(parser: argparse.ArgumentParser, name: str = "ichseq"):
    """(command name, parser) of the top-level parser and of every subcommand, nested ones too."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _every_action():
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, parser, action


def test_every_command_has_a_description_and_a_line_in_its_parents_list():
    commands = list(_parsers(build_parser()))
    assert {name for name, _ in commands} >= {
        "ichseq synthetic", "ichseq download", "ichseq to-jpg", "ichseq to-dicom", "ichseq check", "ichseq stats", "ichseq profile install"
    }
    for name, parser in commands:
        assert parser.description, name
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {choice.dest: choice.help for choice in action._choices_actions}
                assert set(listed) == set(action.choices), name
                assert all(listed.values()), (name, listed)


def test_every_command_has_one_handler_that_imports():
    # The commands that run (a parser without subcommands of its own), by their args.command.
    runnable = {parser.get_default("command") or name.removeprefix("ichseq ")
                for name, parser in _parsers(build_parser())
                if name != "ichseq" and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)}
    assert runnable == set(HANDLERS)
    for command in HANDLERS:
        assert callable(handler(command)), command


def test_help_imports_no_command_module_nor_torch():
    # `ichseq --help` and the parser stay light: a command's module is imported when it runs.
    code = ("import sys\nfrom ichseq.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in sys.modules if m.startswith('ichseq.commands') or m in ('torch', 'pingouin', "
            "'matplotlib')))\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": src, "PATH": ""}).stdout
    assert out.strip() == "[]"


def test_every_option_and_positional_says_what_it_does_and_its_default():
    missing, no_default = [], []
    for name, parser, action in _every_action():
        label = f"{name} {'/'.join(action.option_strings) or action.dest}"
        if not (action.help or "").strip():
            missing.append(label)
            continue
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            continue  # nothing to state: unset unless given, or a flag
        text = parser._get_formatter()._get_help_string(action) % {"default": action.default}
        if "default" not in text or str(action.default) not in text:
            no_default.append(f"{label}: {text!r}")
    assert not missing, f"no help text: {missing}"
    assert not no_default, f"help does not state the default: {no_default}"


def test_help_output_shows_each_synthetic_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        main(["synthetic", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option, default in [("--patients", 75), ("--min-slices", 24), ("--max-slices", 57), ("--mimics", 4.0),
                            ("--generator", "anatomical"), ("--difficulty", "easy"), ("--slice-thickness", 5.0),
                            ("--kernel", "standard")]:
        assert option in out and f"(default: {default})" in out, option


def test_synthetic_defaults_are_the_spec_defaults():
    parser = dict(_parsers(build_parser()))["ichseq synthetic"]
    args = parser.parse_args(["dest"])
    option_of = {"n_patients": "patients", "n_positive": "positive", "image_size": "size", "seed": "seed",
                 "min_slices": "min_slices", "max_slices": "max_slices", "mimics_per_scan": "mimics",
                 "generator": "generator", "difficulty": "difficulty", "slice_thickness_mm": "slice_thickness",
                 "kernel": "kernel"}
    spec = SyntheticSpec()
    for field, option in option_of.items():
        assert getattr(args, option) == getattr(spec, field), field
        assert type(getattr(args, option)) is type(getattr(spec, field)), field
    exposed = set(option_of) | {"noise_hu"}  # the noise level stays the generator's own
    assert exposed == {f.name for f in dataclasses.fields(SyntheticSpec)}


def test_synthetic_command_writes_what_the_spec_asks_for(tmp_path, capsys):
    options = ["--patients", "5", "--positive", "2", "--size", "32", "--seed", "3",
               "--min-slices", "9", "--max-slices", "10", "--mimics", "0", "--generator", "cartoon"]
    assert main(["synthetic", str(tmp_path / "cli"), *options, "--workers", "2"]) == 0
    assert "0 single-slice mimics" in capsys.readouterr().out
    spec = SyntheticSpec(n_patients=5, n_positive=2, image_size=32, seed=3, min_slices=9, max_slices=10,
                         mimics_per_scan=0.0, generator="cartoon")
    generate_synthetic(tmp_path / "api", spec, log=lambda _msg: None)
    compared = filecmp.dircmp(tmp_path / "cli", tmp_path / "api")
    assert compared.left_list == compared.right_list
    for sub in [compared, *compared.subdirs.values()]:
        match, mismatch, errors = filecmp.cmpfiles(sub.left, sub.right, sub.common_files, shallow=False)
        assert not mismatch and not errors, (sub.left, mismatch, errors)


def test_synthetic_choices_shown_are_the_generators_vocabularies():
    from ichseq.data.synthetic import GENERATORS
    from ichseq.data.twin import DIFFICULTIES, KERNELS

    parser = dict(_parsers(build_parser()))["ichseq synthetic"]
    metavars = {action.dest: action.metavar for action in parser._actions}
    for dest, allowed in [("generator", GENERATORS), ("difficulty", DIFFICULTIES), ("kernel", KERNELS)]:
        assert metavars[dest] == "{" + ",".join(allowed) + "}", dest


def _captured_spec(monkeypatch, argv) -> SyntheticSpec:
    """The spec ``ichseq synthetic ARGV`` hands to generate_synthetic (nothing is generated)."""
    from ichseq.data import synthetic

    specs = []
    monkeypatch.setattr(synthetic, "generate_synthetic", lambda dest, spec, log=print, workers=1: specs.append(spec))
    assert main(["synthetic", *argv]) == 0
    (spec,) = specs
    return spec


def test_synthetic_command_passes_generator_difficulty_thickness_and_kernel(tmp_path, monkeypatch):
    spec = _captured_spec(monkeypatch, [str(tmp_path / "d"), "--patients", "4", "--positive", "2", "--generator",
                                        "cartoon", "--difficulty", "hard", "--slice-thickness", "0.625", "--kernel",
                                        "bone", "--min-slices", "200", "--max-slices", "260"])
    assert spec == SyntheticSpec(n_patients=4, n_positive=2, generator="cartoon", difficulty="hard",
                                 slice_thickness_mm=0.625, kernel="bone", min_slices=200, max_slices=260)
    # Left out, they are the anatomical twin's defaults.
    spec = _captured_spec(monkeypatch, [str(tmp_path / "e")])
    assert (spec.generator, spec.difficulty, spec.slice_thickness_mm, spec.kernel) == (
        "anatomical", "easy", 5.0, "standard")


def test_synthetic_command_with_cartoon_and_hard_writes_the_cartoon_twin(tmp_path, capsys):
    # The cartoon generator ignores difficulty, thickness and kernel: the files are the cartoon's.
    options = ["--patients", "4", "--positive", "2", "--size", "32", "--min-slices", "8", "--max-slices", "9"]
    assert main(["synthetic", str(tmp_path / "cli"), *options, "--generator", "cartoon", "--difficulty", "hard",
                 "--slice-thickness", "2", "--kernel", "bone"]) == 0
    assert "4 patients (2 with hemorrhage)" in capsys.readouterr().out
    spec = SyntheticSpec(n_patients=4, n_positive=2, image_size=32, min_slices=8, max_slices=9, generator="cartoon")
    generate_synthetic(tmp_path / "api", spec, log=lambda _msg: None)
    for name in ("hemorrhage_diagnosis_raw_ct.csv", "Patient_demographics.csv", "ct_scans/049.nii"):
        assert filecmp.cmp(tmp_path / "cli" / name, tmp_path / "api" / name, shallow=False), name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--min-slices", "4"], "need 8 <= min_slices <= max_slices (given: "),
        (["--min-slices", "20", "--max-slices", "10"], "min_slices 20, max_slices 10"),
        (["--positive", "9", "--patients", "4"], "n_positive must be between 0 and n_patients"),
        (["--mimics", "-1"], "mimics_per_scan must be >= 0"),
        (["--size", "16"], "image_size must be >= 32"),
        (["--generator", "voxel"], "generator must be one of anatomical, cartoon (given: "),
        (["--difficulty", "extreme"], "difficulty must be one of easy, moderate, hard (given: "),
        (["--kernel", "sharp"], "kernel must be one of standard, bone (given: "),
        (["--slice-thickness", "0.2"], "slice_thickness_mm must be between 0.5 and 10 (given: "),
        (["--slice-thickness", "12"], "slice_thickness_mm 12.0"),
    ],
)
def test_bad_synthetic_options_are_one_line_and_write_nothing(tmp_path, capsys, options, message):
    dest = tmp_path / "d"
    assert main(["synthetic", str(dest), "--patients", "4", "--positive", "2", "--generator", "cartoon", *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ichseq synthetic: ") and message in err, err
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_synthetic_into_a_folder_that_is_not_empty_is_one_line(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep")
    assert main(["synthetic", str(tmp_path / "d"), "--patients", "4", "--positive", "2", "--size", "32",
                 "--generator", "cartoon"]) == 1
    err = capsys.readouterr().err
    assert err == f"ichseq synthetic: {tmp_path / 'd'}: already exists and is not empty; remove it first\n"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("name", ["missing", "slice.png"])
def test_check_on_a_wrong_path_answers_for_the_command_line_not_the_config(tmp_path, capsys, name):
    (tmp_path / "slice.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["check", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / name) in err
    assert "dataset.local.path" not in err and "CT-ICH dataset folder or zip" in err
