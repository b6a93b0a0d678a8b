"""Model plans: what one configured model is (architecture, weights, training, frames,
voting), resolved from a validated config without importing torch or any model.

The Snakefile resolves every configured model's plan on each invocation -- under Slurm, in
every job -- to name its jobs, inputs and resources; so this module imports only the settings,
the schema and the model registry (which reads the model modules without importing them).
Building the model a plan describes (:meth:`ModelPlan.build`) imports torch then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import model_entry_keys, section_defaults, validate_section
from ..errors import ConfigError
from ..models import FEATURE_KINDS, available_models, build_model, model_kind, refused_key, unknown_model_message
from .settings import TrainSettings, backbone_seed

if TYPE_CHECKING:
    from ..models.base import CTClassifier

#: Entry keys the plan resolves itself rather than handing to the model as they are written.
PLAN_KEYS = ("backbone",)
#: The backbone entry of a two-stage model (``backbone``) when the entry names none.
DEFAULT_BACKBONE = "convnext"
#: Entry keys that only shape a randomly initialised model (a checkpoint brings its own weights).
INIT_KEYS = ("config", "mean_filters")
#: ``pretrained`` value of an entry whose weights come from the pretrain stage.
PRETRAIN = "pretrain"


@dataclass
class ModelPlan:
    """Everything that defines one configured model: architecture, weights, training, frames, voting."""

    name: str
    architecture: str
    model: dict  # build_model settings: pretrained, config, num_frames, image_size, position_embeddings
    training: TrainSettings
    # Defaults: the schema's (see ichseq.config).
    frames: dict = field(default_factory=lambda: section_defaults("frames"))
    aggregation: dict = field(default_factory=lambda: section_defaults("aggregation"))
    # The weights come from the pretrain stage (``pretrained: pretrain``): ``model`` then builds
    # the model the stage trains, and ``with_weights`` gives the plan that loads its folder.
    pretrain: bool = False
    # A two-stage model (kind scan or context): the plan of the slice model whose backbone and
    # cached features it reads (the entry's ``backbone``).
    backbone: "ModelPlan | None" = None

    def as_dict(self) -> dict:
        d = {"name": self.name, "architecture": self.architecture, "model": self.model,
             "training": self.training.as_dict(), "frames": self.frames, "aggregation": self.aggregation}
        if self.pretrain:
            d["pretrain"] = True
        if self.backbone is not None:
            d["backbone"] = self.backbone.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelPlan":
        return cls(d["name"], d["architecture"], dict(d["model"]),
                   TrainSettings.from_dict(d["training"], where=f"models.{d['name']}.training"),
                   dict(d["frames"]), dict(d["aggregation"]), bool(d.get("pretrain", False)),
                   cls.from_dict(d["backbone"]) if d.get("backbone") else None)

    @property
    def weights_from(self) -> str | None:
        """The entry whose pretrain-stage folder this plan's weights come from (itself, or a
        two-stage model's backbone), or None."""
        if self.pretrain:
            return self.name
        return self.backbone.weights_from if self.backbone is not None else None

    @property
    def weights_source(self) -> str | None:
        """Where the weights come from, in words for tables: the pretrain stage, a hub id or
        folder, a two-stage model's backbone's; None = random initialisation."""
        if self.backbone is not None:
            return f"backbone {self.backbone.name}: {self.backbone.weights_source or 'random init'}"
        if self.pretrain:
            return "pretrain stage"
        return self.model.get("pretrained")

    @property
    def store_of(self) -> str:
        """The entry whose feature store this plan's head-mode runs read (a two-stage model:
        its backbone's; otherwise its own)."""
        return self.backbone.name if self.backbone is not None else self.name

    def with_weights(self, folder) -> "ModelPlan":
        """This plan with its weights loaded from ``folder`` (the pretrain stage's output),
        as from any local checkpoint; a two-stage model's backbone loads them."""
        if self.backbone is not None:
            return ModelPlan(self.name, self.architecture, dict(self.model), self.training, dict(self.frames),
                             dict(self.aggregation), backbone=self.backbone.with_weights(folder))
        model = {k: v for k, v in self.model.items() if k not in INIT_KEYS}
        return ModelPlan(self.name, self.architecture, {**model, "pretrained": str(folder)}, self.training,
                         dict(self.frames), dict(self.aggregation))

    def build_settings(self) -> dict:
        """``build_model``'s settings: the entry's, and a two-stage model's backbone spec (the
        backbone's own settings and seed, so it is the model its entry builds)."""
        if self.backbone is None:
            return self.model
        b = self.backbone
        return {**self.model, "backbone": {"name": b.name, "architecture": b.architecture, "settings": b.model,
                                           "seed": backbone_seed(b.training.seed, b.name)}}

    def build(self) -> "CTClassifier":
        """The model, its random parts drawn from the per-model backbone seed (global RNG untouched)."""
        # Imported here: torch and transformers take seconds to import, and the Snakefile reads
        # plans (model_plan) on every invocation -- every Slurm job's -- without building anything.
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(backbone_seed(self.training.seed, self.name))
            return build_model(self.architecture, self.build_settings(), entry=self.name)




def model_plan(config: dict, name: str) -> ModelPlan:
    """The plan of model ``name`` from a validated config: its entry under ``models`` over the
    global ``training`` / ``frames`` / ``aggregation`` sections. An entry without ``image_size``
    takes ``preprocess.image_size``, the size of the cached slices, so no batch is resized."""
    models = config.get("models") or {}
    if name not in models:
        raise ConfigError(f"models.{name}: no such model in the config (configured: {', '.join(models) or 'none'})")
    entry = models[name] or {}
    architecture = entry.get("architecture") or name
    if architecture not in available_models():
        raise ConfigError(unknown_model_message(architecture, name))
    refusal = refused_key(architecture, entry, name)
    if refusal:  # a key of another architecture: refused, not ignored (the config may come unvalidated)
        raise ConfigError(refusal)
    training = TrainSettings.from_dict({**config.get("training", {}), **(entry.get("training") or {})},
                                       where=f"models.{name}.training")
    # The schema's defaults under the global section under the entry's own (the config may
    # come unvalidated, from a test or a script).
    frames = validate_section({**config.get("frames", {}), **(entry.get("frames") or {})}, "frames",
                              f"models.{name}.frames")
    aggregation = validate_section({**config.get("aggregation", {}), **(entry.get("aggregation") or {})},
                                   "aggregation", f"models.{name}.aggregation")
    # An entry's image_size defaults to the cached slices' (written once, preprocess.image_size).
    cache_size = (config.get("preprocess") or {}).get("image_size")
    values = {**entry, "image_size": entry.get("image_size") if entry.get("image_size") is not None else cache_size}
    # The keys its class declares it reads (``entry_keys``), in the schema's order.
    model = {k: values[k] for k in model_entry_keys(architecture) if k not in PLAN_KEYS and values.get(k) is not None}
    # HU input windows are rendered from the cached slices, which span this window (also for the
    # windows a checkpoint folder brings: they must be rendered from this config's cache).
    window = (config.get("preprocess") or {}).get("window")
    if window:
        model["cache_window"] = {"level": window["level"], "width": window["width"]}
    elif "input_windows" in model:
        raise ConfigError(f"models.{name}.input_windows: needs preprocess.window (the cached slices' HU window)")
    backbone = _backbone_plan(config, name, entry, architecture)
    pretrain = model.get("pretrained") == PRETRAIN
    if backbone is not None:
        # Its input is the backbone's: the backbone entry's windows and size.
        model.pop("cache_window", None)
        model.pop("image_size", None)
    if pretrain:  # the pretrain stage builds it from ``config``; features load the stage's folder
        model.pop("pretrained")
    elif model.get("pretrained") is not None:
        # ``config`` only shapes a randomly initialised model; a checkpoint brings its own.
        for key in INIT_KEYS:
            model.pop(key, None)
    return ModelPlan(name, architecture, model, training, frames, aggregation, pretrain, backbone)


def _backbone_plan(config: dict, name: str, entry: dict, architecture: str) -> ModelPlan | None:
    """The plan of the slice model a two-stage entry reads (its ``backbone``, default
    :data:`DEFAULT_BACKBONE`); None for other models, which must not name one. Kinds are read
    from the model modules' source, so this imports no model."""
    if model_kind(architecture) not in FEATURE_KINDS:
        return None
    target = entry.get("backbone") or DEFAULT_BACKBONE
    models = config.get("models") or {}
    if target not in models:
        raise ConfigError(f"models.{name}.backbone: {target} is not a model of this config (configured: "
                          f"{', '.join(models)}); add its entry, or name a configured slice model")
    target_arch = (models[target] or {}).get("architecture") or target
    if target_arch not in available_models():
        raise ConfigError(unknown_model_message(target_arch, target))
    if model_kind(target_arch) != "slice":
        raise ConfigError(f"models.{name}.backbone: {target} is a {model_kind(target_arch)} model; a two-stage "
                          f"model reads per-slice features (name a slice model such as convnext)")
    plan = model_plan(config, target)
    if plan.model.get("num_frames"):
        raise ConfigError(f"models.{name}.backbone: {target} takes only num_frames slices per scan, so its "
                          f"feature store lacks slices {name} reads; remove models.{target}.num_frames or name "
                          f"another backbone")
    return plan


def protocol_caveats(plans) -> list[str]:
    """What the statistics of these models must say first: the choices that bias their test
    metrics (today: a kept epoch chosen on the test patients, the study's protocol)."""
    on_test = [plan.name for plan in plans if plan.training.checkpoint_selection == "test"]
    if not on_test:
        return []
    return [f"BIASED: the kept epoch of {', '.join(on_test)} was chosen on each replicate's test patients "
            "(training.checkpoint_selection: test, the study's protocol), so their test metrics are optimistically "
            "biased; compare them only to measure that bias."]


def pretrain_settings(config: dict, name: str) -> TrainSettings:
    """The pretraining settings of model ``name``: ``pretrain.training`` under its entry's ``pretrain``."""
    entry = config["models"][name] or {}
    values = {**(config.get("pretrain") or {}).get("training", {}), **(entry.get("pretrain") or {})}
    if values.get("device", "auto") == "auto":
        # Where a model trains is a property of the machine, not of the recipe: training.device
        # (cpu on a cluster without GPUs, say) holds for its pretraining too unless set here.
        values["device"] = {**config.get("training", {}), **(entry.get("training") or {})}.get("device", "auto")
    settings = TrainSettings.from_dict(values, where=f"models.{name}.pretrain")
    if settings.mode != "full":
        raise ConfigError(f"models.{name}.pretrain.mode: pretraining trains the whole model (full), got {settings.mode!r}")
    return settings
