"""digit-search: hyperparameter and architecture search for handwritten digit recognition.

The Python API (see search.api) is loaded on first use, so `import search` stays light:

    import search
    search.run_study("cnn", trials=6, epochs=3)
    result = search.make_submission("cnn", out_path="submission.csv")
    ensemble = search.load_ensemble()
    labels = ensemble.predict(images)  # (N, 28, 28) uint8 -> (N,) digits
"""

from __future__ import annotations

import importlib

from search.errors import UserError

_API = (
    "EnsembleResult",
    "LoadedEnsemble",
    "Prediction",
    "ReportFiles",
    "RunSummary",
    "load_ensemble",
    "make_submission",
    "predict_files",
    "run_study",
    "serve_dashboard",
    "train_one",
    "write_report",
)
__all__ = ["UserError", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("search.api"), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
