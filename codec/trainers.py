"""Recipes and the trainer each model config gets: the one registry from a [model] table to its trainer class.

Kept out of voxtok.train so that the trainers (voxtok.train_harmonic, train_lowrate, train_stacked), which
subclass voxtok.train.Trainer, are imported by this registry and never by the base they extend."""

from __future__ import annotations

from pathlib import Path

from voxtok.config import CodecConfig, HarmonicCodecConfig, LowRateConfig, StackedConfig, config_from_dict
from voxtok.errors import VoxtokError
from voxtok.recipe import read_recipe_tables
from voxtok.train import TrainConfig, Trainer
from voxtok.train_harmonic import HarmonicTrainer
from voxtok.train_lowrate import LowRateTrainer
from voxtok.train_stacked import StackedTrainer

# Most specific first: a StackedConfig and a LowRateConfig are HarmonicCodecConfigs too.
TRAINERS: tuple[tuple[type[CodecConfig], type[Trainer]], ...] = (
    (StackedConfig, StackedTrainer),
    (LowRateConfig, LowRateTrainer),
    (HarmonicCodecConfig, HarmonicTrainer),
    (CodecConfig, Trainer),
)


def load_recipe(path: str | Path) -> tuple[CodecConfig, TrainConfig]:
    """A TOML recipe -> (model config, train config); `architecture = "harmonic"` in [model] selects the v2
    codec and its regression training (voxtok.train_harmonic)."""
    recipe = read_recipe_tables(path)
    try:
        model_cfg = config_from_dict(recipe.get("model", {}))
    except (ValueError, TypeError) as exc:
        raise VoxtokError(f"{path}: bad [model] table ({exc})") from None
    config_class = trainer_class_for(model_cfg).config_class
    flat: dict = {}
    for table in ("data", "optim", "loss", "train"):
        flat.update(recipe.get(table, {}))
    if "terms" in recipe:  # auxiliary loss terms, one table each (voxtok.distill)
        flat["terms"] = recipe["terms"]
    known = config_class.__dataclass_fields__
    unknown = set(flat) - set(known)
    if unknown:
        raise VoxtokError(f"{path}: unknown recipe keys {sorted(unknown)}")
    if "betas" in flat:
        flat["betas"] = tuple(flat["betas"])
    return model_cfg, config_class(**flat)


def trainer_class_for(model_cfg: CodecConfig) -> type[Trainer]:
    """The trainer (and with it the recipe's train config) for a model config: the one place this is decided."""
    return next(trainer for config_type, trainer in TRAINERS if isinstance(model_cfg, config_type))
