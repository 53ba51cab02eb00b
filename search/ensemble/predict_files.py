"""`digit-search predict`: classify image files (or CSV pixel rows) with a saved ensemble."""

from __future__ import annotations

import gzip
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from search.data.kaggle_csv import parse_test, parse_train, read_raw
from search.train.device import resolve_device
from search.data.digit_image import load_digit
from search.errors import UserError
from search.config import DEFAULT_ENSEMBLES, PredictSpec
from search.ensemble.saved import latest_ensemble, load_ensemble

CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass(frozen=True)
class Prediction:
    name: str  # the file, or file:row for a CSV row
    digit: int
    probability: float


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


def load_inputs(paths: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """Names and (N, 28, 28) uint8 MNIST-style images of every input; the first bad file raises."""
    names: list[str] = []
    images: list[np.ndarray] = []
    for path in paths:
        if is_pixel_csv(path):
            rows = read_pixel_rows(path)
            names.extend(f"{path}:{row}" for row in range(1, len(rows) + 1))
            images.extend(rows)
        else:
            names.append(path)
            images.append(load_digit(path))
    return names, np.stack(images)


def predict_images(spec: PredictSpec, out: TextIO | None = None) -> list[Prediction]:
    """Print `name<TAB>digit<TAB>probability` per input; all inputs are read before anything is printed."""
    out = out or sys.stdout  # looked up per call: tests and callers may swap sys.stdout
    names, images = load_inputs(spec.images)
    directory = Path(spec.ensemble) if spec.ensemble else latest_ensemble(DEFAULT_ENSEMBLES)
    device = resolve_device(spec.device, spec.threads)
    ensemble = load_ensemble(directory, device)
    tensor = torch.from_numpy(images).unsqueeze(1).to(device)  # (N, 1, 28, 28) uint8
    probs = ensemble.predict(tensor).cpu().numpy()
    predictions = [Prediction(name, int(p.argmax()), float(p.max())) for name, p in zip(names, probs)]
    for prediction in predictions:
        out.write(f"{prediction.name}\t{prediction.digit}\t{prediction.probability:.4f}\n")
    return predictions
