"""Loaded digits + their validation holdout, as tensors on the device a process trains on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search.data.digits import DigitData, Split, load_digits, stratified_split
from search.train.device import resolve_device
from search.train.trainer import TrainingData


@dataclass(frozen=True)
class PreparedData:
    digits: DigitData
    split: Split
    tensors: TrainingData

    def arrays(self) -> dict[str, np.ndarray]:
        """The five arrays TrainingData.from_numpy takes, by name (what Ray workers receive)."""
        return split_arrays(self.digits, self.split)

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


def all_labelled(prepared: PreparedData) -> TrainingData:
    """Training data of every labelled digit; the validation rows stay as the (no longer held-out) monitor."""
    digits, tensors = prepared.digits, prepared.tensors
    return TrainingData(
        train_images=torch.from_numpy(np.ascontiguousarray(digits.train_images)).unsqueeze(1).to(tensors.device),
        train_labels=torch.from_numpy(np.ascontiguousarray(digits.train_labels)).to(tensors.device),
        val_images=tensors.val_images,
        val_labels=tensors.val_labels,
        test_images=tensors.test_images,
    )


def split_arrays(digits: DigitData, split: Split) -> dict[str, np.ndarray]:
    images, labels = digits.train_images, digits.train_labels
    return {
        "train_images": images[split.train_index],
        "train_labels": labels[split.train_index],
        "val_images": images[split.val_index],
        "val_labels": labels[split.val_index],
        "test_images": digits.test_images,
    }


def prepare_data(
    data_dir: str | Path | None,
    *,
    limit: int | None,
    val_fraction: float,
    split_seed: int,
    device: str | torch.device,
) -> PreparedData:
    """Load (cached), limit, split, and move everything to `device` once per process."""
    return prepare_digits(
        load_digits(data_dir), limit=limit, val_fraction=val_fraction, split_seed=split_seed, device=device
    )


def prepare_digits(
    digits: DigitData,
    *,
    limit: int | None,
    val_fraction: float,
    split_seed: int,
    device: str | torch.device,
) -> PreparedData:
    """prepare_data for digits already loaded."""
    device = resolve_device(device)
    digits = digits.limited(limit)
    split = stratified_split(digits.train_labels, val_fraction, split_seed)
    return PreparedData(digits, split, TrainingData.from_numpy(**split_arrays(digits, split), device=device))
