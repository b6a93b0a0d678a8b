"""Exceptions whose message is a single actionable line.

Every error that bad input can cause is raised as one of these, with the offending file or
config key in the message, so a Snakemake log ends with one line a user can act on instead
of a traceback from deep inside numpy or nibabel.
"""

from __future__ import annotations


class IchseqError(Exception):
    """Base class: the message is one line naming the file or key and what to do."""

    def __init__(self, message: str):
        # Collapse accidental newlines: the contract is one line.
        super().__init__(" ".join(str(message).split()))


class ConfigError(IchseqError):
    """The configuration does not match the schema (unknown key, wrong type, bad value)."""


class DataError(IchseqError):
    """A dataset file is missing, corrupt, inconsistent or in an unknown layout."""


class DownloadError(IchseqError):
    """Fetching the dataset failed: credentials, access rights, network or checksum."""


class ModelError(IchseqError):
    """A model cannot be built: unknown name, bad settings, or weights that cannot be found."""
