"""`digit-search predict`: classify image files (or CSV pixel rows) with a saved ensemble."""

from __future__ import annotations

import sys
from typing import TextIO

from search.config import DEFAULT_ENSEMBLES, PredictSpec
from search.ensemble.saved import Prediction, latest_ensemble, load_ensemble
from search.train.device import resolve_device


def run_predict(spec: PredictSpec, out: TextIO | None = None) -> list[Prediction]:
    """Print `name<TAB>digit<TAB>probability` per input; all inputs are read before anything is printed."""
    out = out or sys.stdout  # looked up per call: tests and callers may swap sys.stdout
    directory = spec.ensemble or latest_ensemble(DEFAULT_ENSEMBLES)
    ensemble = load_ensemble(directory, resolve_device(spec.device, spec.threads))
    predictions = ensemble.predict_files(spec.images)
    for prediction in predictions:
        out.write(f"{prediction.name}\t{prediction.digit}\t{prediction.probability:.4f}\n")
    return predictions
