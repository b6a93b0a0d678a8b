"""The Hugging Face implementation of the model contract: :class:`HFClassifier` wraps a
transformers ``*ForXxxClassification`` model, whose own classifier is the head, and saves as a
``save_pretrained`` folder that loads back as any checkpoint does; :func:`load_pretrained`
loads such a checkpoint from a folder or the hub, with a one-line error that says how to
provide it offline."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants, try_to_load_from_cache
from transformers.utils import logging as hf_logging

from ..errors import ModelError
from .base import ID2LABEL, INPUT_KEYS, LABEL2ID, NUM_LABELS, PREPROCESSOR_FILE, CTClassifier

# "org/name" or "name": what a hub id looks like (as opposed to a filesystem path).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


class HFClassifier(CTClassifier):
    """A CTClassifier around a Hugging Face ``*ForXxxClassification`` model (``self.hf_model``):
    the classifier is the HF model's own, so ``head(features(x))`` is the HF model's
    ``forward(pixel_values=x).logits``, and a saved model is a ``save_pretrained`` folder that
    loads as any checkpoint does (``pretrained: <folder>``)."""

    hf_model: torch.nn.Module

    def __init__(self, hf_model: torch.nn.Module, image_size: int, mean, std, name: str | None = None):
        super().__init__(image_size, mean, std, name=name)
        self.hf_model = hf_model

    @property
    def classifier(self) -> torch.nn.Module:
        return self.hf_model.classifier

    @property
    def head_init_std(self) -> float:
        """The HF config's ``initializer_range``, as transformers initialises a new head."""
        return float(getattr(self.hf_model.config, "initializer_range", 0.02))

    def set_mean_filters_(self, embed: torch.nn.Module, channel: int, count: int, scale: float) -> "HFClassifier":
        """Make the first ``count`` filters of ``embed`` (the patch / tubelet embedding: a Conv2d
        or Conv3d over the normalised pixels) box filters: ``scale`` times the mean of input
        channel ``channel`` (its window's value in [0, 1]) over the patch, 0 where that window
        is black; the other filters stay as they are. ``mean_filters`` of the video models."""
        name = self.entry
        if not 0 <= int(channel) < embed.in_channels or not 1 <= int(count) <= embed.out_channels:
            raise ModelError(f"models.{name}.mean_filters: channel must be 0-{embed.in_channels - 1} and count "
                             f"1-{embed.out_channels}, got channel {channel}, count {count}")
        # The conv sees pixel_values = (v - mean) / std; scale * mean(v) is then
        # sum(pixel_values) * scale * std / n + scale * mean.
        n = embed.weight[0, 0].numel()
        m, s = float(self.pixel_mean[channel]), float(self.pixel_std[channel])
        with torch.no_grad():
            embed.weight[:count].zero_()
            embed.weight[:count, channel] = float(scale) * s / n
            embed.bias[:count] = float(scale) * m
        return self

    def save(self, directory: str | Path, settings: dict | None = None) -> None:
        """``save_pretrained`` (weights and config.json) plus ``preprocessor_config.json`` with the
        normalisation ``prepare`` applies, so the folder loads as ``pretrained: <folder>`` with the
        same preprocessing."""
        hf_logging.disable_progress_bar()  # "Writing model shards" bars would clutter the job log
        self.hf_model.save_pretrained(directory)
        (Path(directory) / PREPROCESSOR_FILE).write_text(json.dumps(self.preprocessor_settings(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, name: str, settings: dict | None = None) -> "CTClassifier":
        """A folder written by ``save``, loaded as a checkpoint (its config gives the geometry;
        ``settings`` the entry's frames, size, input windows and pooling, which the HF config does
        not hold: without ``pooling`` a model trained with max pooling would load with its default)."""
        keep = {k: v for k, v in (settings or {}).items() if k in ("num_frames", "image_size", "pooling", *INPUT_KEYS)}
        return cls.from_settings({**keep, "pretrained": str(directory)}, name=name)


def hub_offline() -> bool:
    # Read the environment now, not at huggingface_hub import time, so a caller (or a test)
    # that sets HF_HUB_OFFLINE later is honoured.
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.upper() in TRUE_VALUES or constants.HF_HUB_OFFLINE


def hub_cache_dir() -> str:
    # Same precedence as huggingface_hub, but evaluated per call (its constants are frozen at import).
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


def checkpoint_source(pretrained: Any, key: str) -> tuple[str, dict[str, Any]]:
    """Where a checkpoint ``pretrained`` (the value of ``key``) loads from: ``(source,
    from_pretrained keywords)``, no keywords for a local folder; a hub id offline with a cold
    cache is refused at once, without the retries transformers would make."""
    if not isinstance(pretrained, (str, os.PathLike)) or not str(pretrained):
        raise ModelError(f"{key}: expected null, a local folder or a Hugging Face hub id, got {pretrained!r}")
    source = str(pretrained)
    local = Path(source).expanduser()
    if local.is_dir():
        return str(local), {}
    if not HUB_ID.match(source) or source.startswith((".", "~")):
        raise ModelError(f"{key}: {source!r} is neither an existing folder nor a Hugging Face hub id")
    cache_dir = hub_cache_dir()
    cached_config = try_to_load_from_cache(source, "config.json", cache_dir=cache_dir)
    offline = hub_offline()
    if offline and not isinstance(cached_config, str):
        raise ModelError(
            f"{key}: cannot load {source!r} (offline and not in the Hugging Face cache {cache_dir}); "
            f"download it on a connected machine (huggingface-cli download {source}) and set HF_HOME, "
            f"or point {key} at the saved folder"
        )
    return source, {"cache_dir": cache_dir, "local_files_only": offline}


def checkpoint_preprocessor(source: str, hub: dict[str, Any], filename: str, key: str) -> dict | None:
    """The checkpoint's preprocessor config (``filename``), if it has one: in its folder, or for
    a hub id (``hub``: its keywords) in the cache, where loading the model may have fetched it."""
    if hub:
        found = try_to_load_from_cache(source, filename, cache_dir=hub["cache_dir"])
        path = found if isinstance(found, str) else None
    else:
        path = Path(source) / filename
        path = str(path) if path.is_file() else None
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{key}: unreadable {path} ({exc})") from exc


def load_pretrained(hf_cls, pretrained: Any, name: str, filename_for_mean_std: str = "preprocessor_config.json"):
    """Load ``hf_cls`` from a local folder or hub id with a fresh 2-class head.

    Returns ``(model, preprocessor_dict | None)``. Every failure is a one-line ModelError that
    says how to provide the weights; offline with a cold cache fails at once, without retries.
    """
    key = f"models.{name}.pretrained"
    source, hub = checkpoint_source(pretrained, key)
    # A "Loading weights" bar per model would clutter job logs and `ichseq predict` (ten replicates).
    hf_logging.disable_progress_bar()
    try:
        model = hf_cls.from_pretrained(
            source,
            num_labels=NUM_LABELS,
            id2label=ID2LABEL,
            label2id=LABEL2ID,
            # The checkpoint's head (e.g. 400 Kinetics classes) is replaced by a fresh 2-class one.
            ignore_mismatched_sizes=True,
            # Checkpoints may be stored in half precision; training and feature caching use float32.
            dtype=torch.float32,
            **hub,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{key}: cannot load {source!r} ({first}); download it on a connected machine "
            f"(huggingface-cli download {source}) and set HF_HOME, or point {key} at the saved folder"
        ) from exc
    return model, checkpoint_preprocessor(source, hub, filename_for_mean_std, key)
