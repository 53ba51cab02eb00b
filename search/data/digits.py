"""Digit data: Kaggle's train.csv/test.csv or the embedded MNIST sample, as one DigitData.

Parsed Kaggle files are cached (search/data/cache.py) keyed by a hash of the files' bytes, so
a second load is hashing plus reading verified arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.config import DEFAULT_CACHE, IMAGE_SIDE
from search.data.cache import read_arrays, write_arrays
from search.data.embedded import EMBEDDED_DATA_HASH, EMBEDDED_SOURCE, embedded_arrays
from search.data.kaggle_csv import (
    KAGGLE_URL,
    DataError,
    find_csv,
    parse_test,
    parse_train,
    read_raw,
)
from search.data.split import Split, stratified_split

__all__ = ["EMBEDDED_SOURCE", "DataError", "DigitData", "Split", "load_digits", "stratified_split"]

CACHE_PARTS = ("train_images", "train_labels", "test_images")


@dataclass(frozen=True, eq=False)
class DigitData:
    """Labelled training digits and unlabelled test digits, with a hash identifying their source."""

    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64, values 0..9
    test_images: np.ndarray  # (M, 28, 28) uint8
    data_hash: str
    source: str

    def __post_init__(self) -> None:
        _check_arrays(self.train_images, self.train_labels, self.test_images)

    def limited(self, rows: int | None) -> DigitData:
        """The first `rows` training rows (test images unchanged); None returns self. The hash changes."""
        if rows is None:
            return self
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
            raise ValueError(f"rows must be a positive integer or None, got {rows!r}")
        rows = min(int(rows), len(self.train_labels))
        return DigitData(
            train_images=self.train_images[:rows],
            train_labels=self.train_labels[:rows],
            test_images=self.test_images,
            data_hash=_sha256_text(f"{self.data_hash}:limit={rows}"),
            source=self.source,
        )


def load_digits(data_dir: str | Path | None = None, *, cache_dir: str | Path | None = None) -> DigitData:
    """Load Kaggle's train.csv/test.csv (plain or .gz) from `data_dir`, or the embedded MNIST sample if None.

    Parsed Kaggle files are cached under `cache_dir` (default: studies/cache under the current
    directory); the embedded sample needs no cache. Raises DataError, with a one-line message,
    for missing or broken files.
    """
    if data_dir is None:
        return DigitData(*embedded_arrays(), data_hash=EMBEDDED_DATA_HASH, source=EMBEDDED_SOURCE)
    return _load_kaggle(Path(data_dir), Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE)


def _load_kaggle(directory: Path, cache_dir: Path) -> DigitData:
    train_path, test_path = _find_kaggle_files(directory)
    train_raw, test_raw = read_raw(train_path), read_raw(test_path)
    digest = hashlib.sha256(train_raw)
    digest.update(test_raw)
    data_hash = digest.hexdigest()

    cache_key = f"kaggle-{data_hash}"
    arrays = read_arrays(cache_dir, cache_key, CACHE_PARTS)
    if arrays is None or not _valid_arrays(arrays):
        train_images, train_labels = parse_train(train_path, train_raw)
        arrays = (train_images, train_labels, parse_test(test_path, test_raw))
        write_arrays(cache_dir, cache_key, CACHE_PARTS, arrays)
    return DigitData(*arrays, data_hash=data_hash, source=str(directory))


def _find_kaggle_files(directory: Path) -> tuple[Path, Path]:
    if not directory.exists():
        raise DataError(
            f"data directory {str(directory)!r} does not exist; pass the folder holding Kaggle's "
            f"train.csv and test.csv ({KAGGLE_URL}), or leave it out to use the embedded MNIST sample"
        )
    if not directory.is_dir():
        raise DataError(
            f"data directory {str(directory)!r} is not a directory; pass the folder holding "
            f"train.csv and test.csv, not a file"
        )
    found = {stem: find_csv(directory, stem) for stem in ("train", "test")}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        looked_for = ", ".join(f"{stem}.csv or {stem}.csv.gz" for stem in missing)
        raise DataError(
            f"{directory}: missing {looked_for}; download the files from Kaggle ({KAGGLE_URL}) into that folder"
        )
    return found["train"], found["test"]


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _valid_arrays(arrays: tuple[np.ndarray, ...]) -> bool:
    try:
        _check_arrays(*arrays)
    except ValueError:
        return False
    return True


def _check_arrays(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray) -> None:
    """Raise ValueError unless the arrays have the DigitData shapes and dtypes."""
    image_shape = (IMAGE_SIDE, IMAGE_SIDE)
    for name, images in (("train_images", train_images), ("test_images", test_images)):
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != image_shape:
            raise ValueError(f"{name} must be (N, 28, 28) uint8, got {images.shape} {images.dtype}")
    if train_labels.dtype != np.int64 or train_labels.shape != (len(train_images),):
        raise ValueError(
            f"train_labels must be ({len(train_images)},) int64, got {train_labels.shape} {train_labels.dtype}"
        )
    if train_labels.size and (train_labels.min() < 0 or train_labels.max() > 9):
        raise ValueError("train_labels must be in 0..9")
