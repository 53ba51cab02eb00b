"""The validation holdout: a stratified split of the labelled rows, reproducible per seed."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "stratified_split"]


@dataclass(frozen=True, eq=False)
class Split:
    """Training/validation row indices into DigitData.train_*, both sorted int64."""

    train_index: np.ndarray
    val_index: np.ndarray
    val_fraction: float
    seed: int

    def fingerprint(self) -> str:
        """Short hex hash of the validation rows, fraction and seed; identifies the split."""
        digest = hashlib.sha256(np.ascontiguousarray(self.val_index, dtype="<i8").tobytes())
        digest.update(f"{self.val_fraction!r}:{self.seed}".encode())
        return digest.hexdigest()[:16]


def stratified_split(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """Hold out about `val_fraction` of each class (at least one if it has 2+ examples), reproducibly per seed."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not 0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        held_out.append(rng.permutation(members)[: _validation_count(len(members), val_fraction)])
    is_val = np.zeros(labels.size, dtype=bool)
    is_val[np.concatenate(held_out)] = True
    return Split(
        train_index=np.flatnonzero(~is_val).astype(np.int64),
        val_index=np.flatnonzero(is_val).astype(np.int64),
        val_fraction=float(val_fraction),
        seed=int(seed),
    )


def _validation_count(class_size: int, val_fraction: float) -> int:
    if class_size < 2:
        return 0
    rounded = math.floor(class_size * val_fraction + 0.5)
    return min(class_size - 1, max(1, rounded))
