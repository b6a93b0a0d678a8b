"""A rule's outputs as paths: what the workflow's scripts and the package's writers are given
(a rule's ``snakemake.output`` or a mapping), checked and with their folders created. Light (no
torch), so that the analysis and report writers can use it."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def output_paths(outputs, names, caller: str) -> dict[str, Path]:
    """``outputs`` (a rule's ``snakemake.output`` or a mapping) as paths by ``names``, their
    folders created; a missing name is a one-line ConfigError naming ``caller``."""
    try:
        paths = {key: Path(outputs[key]) for key in names}
    except (KeyError, IndexError, AttributeError) as exc:
        raise ConfigError(f"{caller}: outputs must name {', '.join(names)} (missing {exc})") from None
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    return paths
