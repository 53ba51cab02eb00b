"""What `predict` reads: image files of one digit each, or CSV files of pixel rows, as MNIST-style digits."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from search.data.digit_image import load_digit
from search.data.kaggle_csv import parse_test, parse_train, read_raw
from search.errors import UserError

CSV_SUFFIXES = (".csv", ".csv.gz")


def is_pixel_csv(path: str | Path) -> bool:
    return str(path).lower().endswith(CSV_SUFFIXES)


def read_pixel_rows(path: str | Path) -> np.ndarray:
    """(N, 28, 28) uint8 rows of a Kaggle-style CSV (`pixel0..pixel783`, optionally a leading `label`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    raw = read_raw(path)
    if _first_column(raw) == "label":  # train.csv's layout; the labels are ignored
        return parse_train(path, raw)[0]
    return parse_test(path, raw)


def _first_column(raw: bytes) -> str:
    try:
        head = gzip.GzipFile(fileobj=io.BytesIO(raw)).readline(100) if raw.startswith(b"\x1f\x8b") else raw[:100]
    except (OSError, EOFError):
        return ""  # the parser names the problem
    return head.decode("utf-8", "replace").removeprefix("\ufeff").split(",")[0].strip().strip('"')


def load_inputs(paths: list[str | Path] | tuple[str | Path, ...]) -> tuple[list[str], np.ndarray]:
    """Names and (N, 28, 28) uint8 MNIST-style images of every input; the first bad file raises."""
    names: list[str] = []
    images: list[np.ndarray] = []
    for path in map(str, paths):
        if is_pixel_csv(path):
            rows = read_pixel_rows(path)
            names.extend(f"{path}:{row}" for row in range(1, len(rows) + 1))
            images.extend(rows)
        else:
            names.append(path)
            images.append(load_digit(path))
    if not images:
        raise UserError("the inputs hold no digits; give image files (PNG, JPEG) or CSV files of pixel rows")
    return names, np.stack(images)
