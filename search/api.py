"""The Python API: what the command line does, callable from a notebook; the CLI calls these functions.

Every function takes the options of its command as keyword arguments (their names and defaults
are the fields of the records in search.config), checks them before anything is read or written,
and prints what the command prints, to `log` (default: standard output). Mistakes raise
search.UserError naming the argument.

Each function imports its own stage when it is called, not this module when it is loaded: a
command then loads only what it needs (`predict` no Optuna, `run` no plotly, `--help` nothing),
since torch, Optuna, Ray and plotly each take a second or more to import.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TextIO

from search.config import (
    AutoSpec,
    DashboardSpec,
    EnsembleSpec,
    LeaderboardSpec,
    PredictSpec,
    ReportSpec,
    RunSpec,
    TrainSpec,
)

if TYPE_CHECKING:
    from search.auto.run import AutoResult
    from search.dispatch.run import RunSummary
    from search.ensemble.build import BuiltEnsemble, EnsembleResult
    from search.ensemble.saved import LoadedEnsemble, Prediction
    from search.report.build import ReportFiles
    from search.report.leaderboard import Leaderboard

__all__ = [
    "build_ensemble",
    "leaderboard",
    "load_ensemble",
    "make_submission",
    "predict_files",
    "run_auto",
    "run_study",
    "serve_dashboard",
    "train_one",
    "write_report",
]


def _quiet_optuna() -> AbstractContextManager[None]:
    """For the calls that open studies: our own progress lines replace Optuna's log and warnings while
    the call runs; the caller's logging and warning filters come back after it."""
    from search.study.progress import optuna_quieted

    return optuna_quieted()


def run_auto(*, log: TextIO | None = None, **options) -> AutoResult:
    """From the data to the best submission within `budget` ("90s", "20m", "1h30m"): search, ensemble, final training."""
    spec = AutoSpec(**options)
    from search.auto.run import run_auto as run

    with _quiet_optuna():
        return run(spec, log)


def run_study(space: str | None = None, *, log: TextIO | None = None, **options) -> RunSummary:
    """Create or continue a pruned study over `space` (default: the `study`'s own) until it holds `trials` finished trials."""
    spec = RunSpec(space=space, **options)
    from search.dispatch.run import run_study as run

    with _quiet_optuna():
        return run(spec, log)


def train_one(space: str, *, log: TextIO | None = None, **options) -> dict:
    """Train one config of `space`: `reference="bn-cnn"` or a stored `trial="cnn:12"`; returns its figures.

    `all_digits=True` trains on the validation rows too; `budget="20m"` trains as many epochs as fit;
    `out="submission.csv"` writes the test digits' submission and its lineage (the path is checked first).
    """
    spec = TrainSpec(space=space, **options)
    from search.study.train_one import train_one as train

    submit = None
    if spec.out is not None:
        # the submission file belongs to the ensemble stage, after the study stage train_one lives in
        from search.ensemble.submission import check_out_path, utc_now, versions, write_submission

        out_path = check_out_path(spec.out)

        def write(labels, lineage):
            return write_submission(out_path, labels, {"created": utc_now(), **lineage, "versions": versions()})

        submit = write

    with _quiet_optuna():
        return train(spec, log, submit)


def build_ensemble(studies: str, *, log: TextIO | None = None, **options) -> BuiltEnsemble:
    """Weight the top trials of `studies` ("cnn,vit") on their validation digits; nothing is written.

    The result shows its figures (`val_accuracy`, `table()`), `save(directory=None)`s itself and
    `write_submission(path=None)`s the Kaggle file with its lineage; `out` and `save` are their defaults.
    """
    spec = EnsembleSpec(studies=studies, **options)
    from search.ensemble.build import build_ensemble as build

    with _quiet_optuna():
        return build(spec, log)


def make_submission(studies: str, *, log: TextIO | None = None, **options) -> EnsembleResult:
    """What `digit-search ensemble` does: build_ensemble, save it, write the submission and its lineage, print the table."""
    spec = EnsembleSpec(studies=studies, **options)
    from search.ensemble.build import run_ensemble

    with _quiet_optuna():
        return run_ensemble(spec, log)


def load_ensemble(directory: str | None = None, *, device: str = "auto") -> LoadedEnsemble:
    """A saved ensemble (default: the newest under studies/ensembles), ready to `predict` digits of arrays or files."""
    from search.ensemble.saved import latest_ensemble
    from search.ensemble.saved import load_ensemble as load
    from search.train.device import resolve_device

    return load(directory if directory is not None else latest_ensemble(), resolve_device(device))


def predict_files(images: list[str] | tuple[str, ...], *, log: TextIO | None = None, **options) -> list[Prediction]:
    """Classify image files (PNG, JPEG) or CSV pixel rows with a saved ensemble; prints one line each."""
    spec = PredictSpec(images=tuple(images), **options)
    from search.ensemble.predict_files import run_predict

    return run_predict(spec, log)


def write_report(*, log: TextIO | None = None, **options) -> ReportFiles:
    """Write the HTML report and the trials CSV of the studies (default: all) in `storage`."""
    spec = ReportSpec(**options)
    from search.report.build import run_report

    with _quiet_optuna():
        return run_report(spec, log)


def leaderboard(*, log: TextIO | None = None, **options) -> Leaderboard:
    """The studies (default: all) in `storage` and their best trials, best first; prints the table, or JSON with as_json=True."""
    spec = LeaderboardSpec(**options)
    from search.report.leaderboard import run_leaderboard

    with _quiet_optuna():
        return run_leaderboard(spec, log)


def serve_dashboard(*, log: TextIO | None = None, **options) -> None:
    """Serve optuna-dashboard on the study database until Ctrl-C."""
    spec = DashboardSpec(**options)
    from search.report.dashboard import serve_dashboard as serve

    with _quiet_optuna():
        return serve(spec, log)
