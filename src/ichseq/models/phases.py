"""The training phases of seg_cls (a model entry's ``phases``) and the entry keys only one
architecture reads.

Free of torch, so that the config check (read on every Snakemake start) and the model share
one definition: ``phases: {segmentation: S, classifier: C}`` means the first S epochs of a
training train the segmentation alone, the next C the classifier alone (the segmentation
network frozen), and every epoch left of the training's ``epochs`` trains both (joint).
"""

from __future__ import annotations

from ..errors import ConfigError, ModelError

#: The phases in the order they run.
PHASES = ("segmentation", "classifier", "joint")
#: Entry keys that only one architecture reads: key -> that architecture (registry name).
ARCHITECTURE_KEYS = {"phases": "seg_cls"}


def foreign_key(architecture: str, entry: dict, name: str) -> str | None:
    """The one-line refusal of an entry key of another architecture (``ARCHITECTURE_KEYS``)
    in ``entry`` (model ``name`` of ``architecture``), or None when there is none."""
    for key, owner in ARCHITECTURE_KEYS.items():
        if entry.get(key) is not None and architecture != owner:
            return f"models.{name}.{key}: applies only to architecture {owner}, not {architecture}; remove it"
    return None


def phase_settings(phases: dict | None, name: str) -> dict:
    """``phases`` checked against the schema (``$defs.phases``) with its defaults filled in;
    one-line ModelError naming ``models.<name>.phases.<key>``."""
    from ..config import validate_section  # here: ichseq.config imports this module

    if phases is not None and not isinstance(phases, dict):
        raise ModelError(f"models.{name}.phases: expected a mapping {{segmentation, classifier}}, got {phases!r}")
    try:
        return validate_section(phases or {}, "phases", f"models.{name}.phases")
    except ConfigError as exc:
        raise ModelError(str(exc)) from None


def phase_epochs(phases: dict, epochs: int, name: str, epochs_key: str = "training.epochs") -> tuple[int, int, int]:
    """(segmentation, classifier, joint) epochs of a training of ``epochs`` epochs (the key
    that sets them: ``epochs_key``); one-line ModelError when the phases do not fit in it."""
    segmentation, classifier = int(phases["segmentation"]), int(phases["classifier"])
    if segmentation + classifier > epochs or segmentation >= epochs:
        raise ModelError(
            f"models.{name}.phases: segmentation {segmentation} + classifier {classifier} epochs do not fit in the "
            f"{epochs} epochs of {epochs_key} (the classifier must train in at least one; the joint phase takes the "
            f"epochs left): lower them or raise {epochs_key}"
        )
    return segmentation, classifier, epochs - segmentation - classifier


def phase_of(epoch: int, segmentation: int, classifier: int) -> str:
    """The phase of 1-based ``epoch``."""
    if epoch <= segmentation:
        return "segmentation"
    return "classifier" if epoch <= segmentation + classifier else "joint"
