"""The Python API: what the command line does, callable from a notebook. `import search` loads this lazily.

Every function takes the options of its command as keyword arguments (their names and defaults
are the fields of the records in search.config) and prints what the command prints, to `log`
(default: standard output). Mistakes raise search.UserError naming the argument.
"""

from __future__ import annotations

from typing import TextIO

from search.config import DashboardSpec, EnsembleSpec, LeaderboardSpec, PredictSpec, ReportSpec, RunSpec, TrainSpec
from search.dispatch.run import RunSummary, run_study as _run_study
from search.ensemble.build import BuiltEnsemble, EnsembleResult, build_ensemble as _build_ensemble, run_ensemble
from search.ensemble.predict_files import run_predict
from search.ensemble.saved import LoadedEnsemble, Prediction, latest_ensemble, load_ensemble as _load_ensemble
from search.report.build import ReportFiles, run_report
from search.report.dashboard import serve_dashboard as _serve_dashboard
from search.report.leaderboard import Leaderboard, run_leaderboard
from search.study.progress import quiet_optuna
from search.study.train_one import train_one as _train_one
from search.train.device import resolve_device

__all__ = [
    "BuiltEnsemble",
    "EnsembleResult",
    "Leaderboard",
    "LoadedEnsemble",
    "Prediction",
    "ReportFiles",
    "RunSummary",
    "build_ensemble",
    "leaderboard",
    "load_ensemble",
    "make_submission",
    "predict_files",
    "quiet_optuna",
    "run_study",
    "serve_dashboard",
    "train_one",
    "write_report",
]


def run_study(space: str, *, log: TextIO | None = None, **options) -> RunSummary:
    """Create or continue a pruned study over `space` until it holds `trials` finished trials."""
    return _run_study(RunSpec(space=space, **options), log)


def train_one(space: str, *, log: TextIO | None = None, **options) -> dict:
    """Train one config of `space`: `reference="bn-cnn"` or a stored `trial="cnn:12"`; returns its figures."""
    return _train_one(TrainSpec(space=space, **options), log)


def build_ensemble(studies: str, *, log: TextIO | None = None, **options) -> BuiltEnsemble:
    """Weight the top trials of `studies` ("cnn,vit") on their validation digits; nothing is written.

    The result shows its figures (`val_accuracy`, `table()`), `save(directory=None)`s itself and
    `write_submission(path=None)`s the Kaggle file with its lineage; `out` and `save` are their defaults.
    """
    return _build_ensemble(EnsembleSpec(studies=studies, **options), log)


def make_submission(studies: str, *, log: TextIO | None = None, **options) -> EnsembleResult:
    """What `digit-search ensemble` does: build_ensemble, save it, write the submission and its lineage, print the table."""
    return run_ensemble(EnsembleSpec(studies=studies, **options), log)


def load_ensemble(directory: str | None = None, *, device: str = "auto") -> LoadedEnsemble:
    """A saved ensemble (default: the newest under studies/ensembles), ready to `predict` digits of arrays or files."""
    return _load_ensemble(directory if directory is not None else latest_ensemble(), resolve_device(device))


def predict_files(images: list[str] | tuple[str, ...], *, log: TextIO | None = None, **options) -> list[Prediction]:
    """Classify image files (PNG, JPEG) or CSV pixel rows with a saved ensemble; prints one line each."""
    return run_predict(PredictSpec(images=tuple(images), **options), log)


def write_report(*, log: TextIO | None = None, **options) -> ReportFiles:
    """Write the HTML report and the trials CSV of the studies (default: all) in `storage`."""
    return run_report(ReportSpec(**options), log)


def leaderboard(*, log: TextIO | None = None, **options) -> Leaderboard:
    """The studies (default: all) in `storage` and their best trials, best first; prints the table, or JSON with as_json=True."""
    return run_leaderboard(LeaderboardSpec(**options), log)


def serve_dashboard(*, log: TextIO | None = None, **options) -> None:
    """Serve optuna-dashboard on the study database until Ctrl-C."""
    return _serve_dashboard(DashboardSpec(**options), log)
