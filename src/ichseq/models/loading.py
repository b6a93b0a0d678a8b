"""Building helpers the model modules share: reading an entry's settings, a random
initialisation's config, and the preprocessing (normalisation, input windows, pooling) a
checkpoint brings. Free of transformers: seg_cls, which is not a Hugging Face model, uses them
too (a checkpoint's loading from a folder or the hub is in :mod:`ichseq.models.hf`)."""

from __future__ import annotations

from ..errors import ModelError
from .base import ID2LABEL, LABEL2ID, NUM_LABELS


def check_int(settings: dict, key: str, name: str, minimum: int = 1) -> int | None:
    """settings[key] as an int >= minimum, or None when absent."""
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"models.{name}.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_declared_choice(model_cls, key: str, value, name: str, title: str) -> None:
    """Refuse ``value`` of entry key ``key`` (None: unset) unless it is one of the choices
    ``model_cls.entry_keys`` declares for it: the same list the config check narrows the
    schema with, so a model built without the workflow refuses what the config would."""
    choices = model_cls.entry_keys[key]["enum"]
    if value is not None and value not in choices:
        raise ModelError(f"models.{name}.{key}: must be one of {', '.join(choices)} for {title}, got {value!r}")


def refuse_mean_filters_with_checkpoint(settings: dict, name: str) -> None:
    """``mean_filters`` shapes a random initialisation: with a checkpoint it would overwrite
    learnt filters, so it is an error, not silently ignored."""
    if settings.get("pretrained") is not None and settings.get("mean_filters"):
        raise ModelError(f"models.{name}.mean_filters: shapes a random initialisation only; "
                         f"remove it or set models.{name}.pretrained: null")


def random_config(config_cls, settings: dict, name: str, **overrides):
    """An HF config for random init: the entry's ``config`` overrides plus the binary labels."""
    extra = settings.get("config") or {}
    if not isinstance(extra, dict):
        raise ModelError(f"models.{name}.config: expected a mapping of {config_cls.__name__} fields")
    kwargs = {**extra, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return config_cls(**kwargs, num_labels=NUM_LABELS, id2label=ID2LABEL, label2id=LABEL2ID)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"models.{name}.config: invalid {config_cls.__name__} overrides ({exc})") from exc


def saved_pooling(settings: dict, preprocessor: dict | None, default):
    """The pooling of a model loaded from a checkpoint: the entry's when it sets one, else the
    one a folder saved by ichseq recorded (``preprocessor_config.json``: a model trained with max
    pooling must not come back with its family's default), else ``default``."""
    return settings.get("pooling") or (preprocessor or {}).get("pooling") or default


def input_settings(settings: dict, preprocessor: dict | None) -> tuple[list | None, dict | None]:
    """(input_windows, cache_window) of a model: the entry's windows, else the checkpoint's
    preprocessor_config.json's (a folder the pretrain stage wrote), else none; the cache window
    is the current one (``settings``, from preprocess.window) when known, else the checkpoint's."""
    preprocessor = preprocessor or {}
    windows = settings.get("input_windows") or preprocessor.get("input_windows")
    cache_window = settings.get("cache_window") or preprocessor.get("cache_window")
    return windows, (cache_window if windows else None)


def mean_std(
    preprocessor: dict | None, default_mean, default_std, name: str, rescale_factor: float = 1 / 255, offset: bool = False
) -> tuple[list, list]:
    """Per-channel mean/std to apply to pixels scaled to [0, 1], equivalent to the checkpoint's
    image processor.

    HF processors rescale uint8 pixels by ``rescale_factor`` (minus 1 when ``offset``, as
    ViViT's does: [-1, 1]) and then normalise with ``image_mean``/``image_std``. Both steps are
    affine, so they fold into one mean/std on [0, 1] pixels: with ``r = 255 * rescale_factor``,
    ``mean' = (mean + offset) / r`` and ``std' = std / r``. Values come from a saved
    preprocessor_config.json when there is one, else from the checkpoint family's defaults.
    """
    mean, std = list(default_mean), list(default_std)
    if preprocessor:
        mean = preprocessor.get("image_mean", mean)
        std = preprocessor.get("image_std", std)
        rescale_factor = float(preprocessor.get("rescale_factor", rescale_factor))
        offset = bool(preprocessor.get("offset", offset))
    mean = [float(mean)] * 3 if isinstance(mean, (int, float)) else [float(v) for v in mean]
    std = [float(std)] * 3 if isinstance(std, (int, float)) else [float(v) for v in std]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelError(f"models.{name}: preprocessor image_mean/image_std must be 3 values (std > 0), got {mean} / {std}")
    r = 255.0 * rescale_factor
    return [(m + float(offset)) / r for m in mean], [s_ / r for s_ in std]
