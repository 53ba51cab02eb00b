"""What every model family module provides, and the reference-config record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spaces.training import TrainConfig


@dataclass(frozen=True)
class Reference:
    """A named, known-good configuration of one family, enqueued as a study's first trials."""

    name: str
    model: Any  # the family's frozen config dataclass
    train: TrainConfig = field(default_factory=TrainConfig)


# A family module (spaces/cnn.py, spaces/vit.py, ..., or a user's file given to --space) defines:
#   NAME: str                               the family name, also the Optuna param prefix
#   Config                                  a frozen dataclass type, validated in __post_init__
#   suggest(trial) -> Config                pure: only trial.suggest_* calls, no torch work
#   build(config) -> torch.nn.Module        maps (B, 1, 28, 28) float images to (B, 10) logits
#   params_of(config) -> dict[str, Any]     the Optuna params that make suggest() return config
#   REFERENCES: dict[str, Reference]        named reference configs (may be empty)
REQUIRED_ATTRIBUTES = ("NAME", "Config", "suggest", "build")
