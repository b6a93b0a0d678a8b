"""Install the repository's Snakemake profiles where ``snakemake --profile NAME`` finds them.

Snakemake 9 resolves a profile name (not an existing path) by looking for a folder of that
name in the working directory, then in its user config folder (platformdirs'
``user_config_dir("snakemake", "snakemake")``: ``$XDG_CONFIG_HOME/snakemake``, else
``~/.config/snakemake`` on Linux), then in its site folder (``/etc/xdg/snakemake``). The
profiles live in the checkout under ``profiles/``, so only ``--profile profiles/slurm`` works
until one is installed into the user config folder, as a copy (the default: it survives the
checkout moving, and edits to it stay out of the repository) or as a link (follows updates of
the checkout).

A string value in a profile that names an existing file of the profile folder (such as
``slurm-partition-config: partitions.yaml``) is resolved by Snakemake against the folder the
profile is read from, so a copied profile keeps working as long as its files travel with it:
the whole folder is copied.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .atomic import temp_dir_beside
from .errors import ConfigError

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
# Snakemake applies profiles/default of the checkout by itself (its "workflow profile");
# installed as a named profile it would apply to every other workflow of the user.
WORKFLOW_PROFILE = "default"
_PROFILE_FILES = ("config.yaml", "profile.yaml")


def available_profiles(profiles_dir: str | Path = PROFILES_DIR) -> list[str]:
    """The installable profiles of the checkout: folders of ``profiles/`` holding a profile file."""
    profiles_dir = Path(profiles_dir)
    if not profiles_dir.is_dir():
        return []
    return sorted(
        p.name for p in profiles_dir.iterdir()
        if p.name != WORKFLOW_PROFILE and p.is_dir() and any((p / f).is_file() for f in _PROFILE_FILES)
    )


def snakemake_config_dir() -> Path:
    """The user config folder in which Snakemake looks up profile names (respects XDG_CONFIG_HOME)."""
    try:
        from platformdirs import user_config_dir
    except ImportError:  # it comes with snakemake, so only a package-only install lacks it
        raise ConfigError(
            "cannot tell where Snakemake looks for profiles (the platformdirs package, which comes with "
            "snakemake, is not installed); pass --dest"
        ) from None
    # The same call as snakemake.common.get_appdirs(): AppDirs("snakemake", "snakemake").
    return Path(user_config_dir("snakemake", "snakemake"))


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _is_installed(source: Path, target: Path, link: bool) -> bool:
    """Whether ``target`` already is what installing ``source`` would make it."""
    if link:
        return target.is_symlink() and target.resolve() == source.resolve()
    return target.is_dir() and not target.is_symlink() and _tree(target) == _tree(source)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def _checked_names(name: str, as_name: str | None, profiles_dir: Path) -> str:
    """The name to install ``name`` under (``as_name``, else its own), once ``name`` is an
    installable profile of ``profiles_dir`` and that name a plain folder name."""
    available = available_profiles(profiles_dir)
    if name == WORKFLOW_PROFILE:
        raise ConfigError(
            f"profiles/{name} is the workflow profile, which Snakemake applies by itself to runs of this "
            f"checkout; nothing to install (available: {', '.join(available)})"
        )
    if name not in available:
        found = ", ".join(available) if available else "none"
        raise ConfigError(f"no profile {name!r} in {profiles_dir}; available: {found}")
    as_name = as_name or name
    if not as_name or as_name in (".", "..") or "/" in as_name or os.sep in as_name:
        raise ConfigError(f"--name {as_name!r}: a profile name is a plain folder name, no path")
    return as_name


def _put_in_place(source: Path, target: Path, link: bool, existed: bool) -> None:
    """Make ``target`` a copy of (or a link to) ``source``, replacing what ``existed`` there."""
    # Built beside the target and renamed into place, so an interrupted install never leaves
    # a half-copied profile under the name Snakemake looks up.
    staging = temp_dir_beside(target)
    try:
        new = staging / target.name
        if link:
            new.symlink_to(source, target_is_directory=True)
        else:
            shutil.copytree(source, new, ignore=shutil.ignore_patterns("__pycache__"))
        old = staging / ".replaced"
        if existed:
            os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            if existed:
                os.replace(old, target)
            raise
        if existed:
            _remove(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install_profile(
    name: str = "slurm",
    dest: str | Path | None = None,
    *,
    link: bool = False,
    force: bool = False,
    as_name: str | None = None,
    profiles_dir: str | Path = PROFILES_DIR,
) -> tuple[Path, str]:
    """Copy (or link) ``profiles_dir/name`` to ``dest/as_name`` and return that path and what was
    done: ``"installed"``, ``"replaced"`` or ``"unchanged"`` (already installed, nothing written).

    ``dest`` defaults to Snakemake's user config folder. An existing, different profile of that
    name is replaced only with ``force``; until the new one is complete the old one stays.
    """
    profiles_dir = Path(profiles_dir)
    as_name = _checked_names(name, as_name, profiles_dir)
    source = (profiles_dir / name).resolve()
    dest = Path(dest).expanduser() if dest is not None else snakemake_config_dir()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--dest {dest}: not a folder")
    target = dest / as_name
    if dest.resolve() / as_name == source:
        raise ConfigError(f"{target} is the repository's profile itself; choose another --dest")
    existed = os.path.lexists(target)
    if existed and _is_installed(source, target, link):
        return target, "unchanged"
    if existed and not force:
        raise ConfigError(
            f"{target} already exists and differs from {source}; pass --force to replace it, "
            f"or --name to install under another name"
        )
    _put_in_place(source, target, link, existed)
    return target, "replaced" if existed else "installed"
