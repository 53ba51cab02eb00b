"""digit-search: hyperparameter and architecture search for handwritten digit recognition.

The Python API (see search.api) is loaded on first use, so `import search` stays light:

    import search
    search.run_study("cnn", trials=6, epochs=3)
    ensemble = search.build_ensemble("cnn")    # weights chosen on validation; nothing written yet
    ensemble.save()
    ensemble.write_submission("submission.csv")
    labels = search.load_ensemble().predict(images)  # (N, 28, 28) uint8 -> (N,) digits
    search.run_auto(budget="20m", data_dir="~/kaggle/digit-recognizer")  # everything, in one budget
"""

from __future__ import annotations

import importlib

from search import api
from search.errors import UserError

# name -> the module that defines it; each loads on first use (search.api itself is light: records and names)
_API = {
    **dict.fromkeys(api.__all__, "search.api"),
    "AutoResult": "search.auto.run",
    "BuiltEnsemble": "search.ensemble.build",
    "EnsembleResult": "search.ensemble.build",
    "Leaderboard": "search.report.leaderboard",
    "LoadedEnsemble": "search.ensemble.saved",
    "Prediction": "search.ensemble.saved",
    "ReportFiles": "search.report.build",
    "RunSummary": "search.dispatch.run",
}
__all__ = ["UserError", *_API]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
