"""Loaded digits + their validation holdout, as tensors on the device a process trains on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from search.data import DigitData, Split, load_digits, stratified_split
from search.trainer import TrainingData


@dataclass(frozen=True)
class PreparedData:
    digits: DigitData
    split: Split
    tensors: TrainingData

    def study_attrs(self) -> dict[str, object]:
        """What a study records so it is never continued on other data or another split."""
        return {
            "data_hash": self.digits.data_hash,
            "data_source": self.digits.source,
            "split": self.split.fingerprint(),
            "val_fraction": self.split.val_fraction,
            "split_seed": self.split.seed,
            "train_rows": int(len(self.split.train_index)),
            "val_rows": int(len(self.split.val_index)),
            "test_rows": int(len(self.digits.test_images)),
        }


def prepare_data(
    data_dir: str | Path | None,
    *,
    limit: int | None,
    val_fraction: float,
    split_seed: int,
    device: torch.device,
) -> PreparedData:
    """Load (cached), limit, split, and move everything to `device` once per process."""
    digits = load_digits(data_dir).limited(limit)
    split = stratified_split(digits.train_labels, val_fraction, split_seed)
    tensors = TrainingData.from_numpy(
        digits.train_images[split.train_index],
        digits.train_labels[split.train_index],
        digits.train_images[split.val_index],
        digits.train_labels[split.val_index],
        digits.test_images,
        device,
    )
    return PreparedData(digits, split, tensors)
