"""The training phases of seg_cls (a model entry's ``phases``, a key seg_cls declares with its
schema in its class's ``entry_keys``).

Free of torch, so that the config check (read on every Snakemake start) and the model share
one definition: ``phases: {segmentation: S, classifier: C}`` means the first S epochs of a
training train the segmentation alone, the next C the classifier alone (the segmentation
network frozen), and every epoch left of the training's ``epochs`` trains both (joint).
"""

from __future__ import annotations

from ..errors import ConfigError, ModelError
from ..schema import check_values
from . import entry_keys

#: The architecture whose entries take ``phases``.
OWNER = "seg_cls"

#: The phases in the order they run.
PHASES = ("segmentation", "classifier", "joint")


def phase_settings(phases: dict | None, name: str) -> dict:
    """``phases`` checked against the schema seg_cls declares for it, with its defaults filled
    in; one-line ModelError naming ``models.<name>.phases.<key>``."""
    if phases is not None and not isinstance(phases, dict):
        raise ModelError(f"models.{name}.phases: expected a mapping {{segmentation, classifier}}, got {phases!r}")
    try:
        checked = check_values(phases or {}, entry_keys(OWNER)["phases"], f"models.{name}.phases")
    except ConfigError as exc:
        raise ModelError(str(exc)) from None
    return {"segmentation": checked["segmentation"], "classifier": checked["classifier"]}


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
