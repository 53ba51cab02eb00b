"""The training space shared by every family: optimizer, schedule, regularisation, augmentation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "plateau")
BATCH_SIZES = (64, 128, 256, 512)
# Peak lr per optimizer. Measured by bench/trainable.py (BENCHMARKS.md "Trainable search spaces"): a
# cnn without batch norm stayed at chance under Nesterov SGD (momentum 0.9) at lr 0.08 and 0.2, so
# SGD stops at 0.05; AdamW stops at 5e-3, just above bn-cnn's tuned 4e-3.
LR_RANGES = {"adamw": (3e-4, 5e-3), "sgd": (5e-3, 5e-2)}
# Decoupled decay is lr-independent shrinkage PER STEP: a 6-epoch trial on Kaggle's 37,800 digits at
# batch 64 takes ~3,500 steps, so 1e-2 could shrink weights by up to exp(-35) (before the schedule's
# multiplier), 1e-3 by at most exp(-3.5).
WEIGHT_DECAY_RANGE = (1e-6, 1e-3)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4  # decoupled: applied as lr-independent shrinkage per step
    batch_size: int = 128
    schedule: str = "onecycle"
    label_smoothing: float = 0.1
    rotation: float = 10.0  # max degrees either way
    shift: float = 0.1  # max fraction of the image size either way
    zoom: float = 0.1  # max relative scale change either way; never flips

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (0 <= self.rotation <= 45 and 0 <= self.shift <= 0.3 and 0 <= self.zoom <= 0.3):
            raise ValueError("augmentation out of range: rotation 0..45, shift 0..0.3, zoom 0..0.3")


def suggest(trial) -> TrainConfig:
    """Sample a TrainConfig; param names are `train.<field>` and must never be renamed."""
    optimizer = trial.suggest_categorical("train.optimizer", OPTIMIZERS)
    return TrainConfig(
        optimizer=optimizer,
        lr=trial.suggest_float(f"train.lr_{optimizer}", *LR_RANGES[optimizer], log=True),
        weight_decay=trial.suggest_float("train.weight_decay", *WEIGHT_DECAY_RANGE, log=True),
        batch_size=trial.suggest_categorical("train.batch_size", BATCH_SIZES),
        schedule=trial.suggest_categorical("train.schedule", SCHEDULES),
        label_smoothing=trial.suggest_float("train.label_smoothing", 0.0, 0.2),
        rotation=trial.suggest_float("train.rotation", 0.0, 20.0),
        shift=trial.suggest_float("train.shift", 0.0, 0.15),
        zoom=trial.suggest_float("train.zoom", 0.0, 0.15),
    )


def params_of(config: TrainConfig) -> dict[str, Any]:
    """The Optuna params that make suggest() return `config`."""
    values = asdict(config)
    params = {f"train.{name}": value for name, value in values.items() if name != "lr"}
    params[f"train.lr_{config.optimizer}"] = config.lr
    return params
