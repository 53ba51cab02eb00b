"""Time `digit-search report` on a large synthetic study (default 2,000 trials; the target is under 10 s).

    .venv/bin/python bench/report.py                 # 2,000 trials in one study
    .venv/bin/python bench/report.py --trials 500 --studies 4

The studies are written once into a temporary SQLite database (not timed): trials of the cnn and vit
families with conditional params, per-epoch validation accuracies, about half of them pruned and a
few failed, and the user attrs `run` records. Then the report is timed end to end (reading the
database, importances, figures, the page and the CSV) and by part. The trials table is
Optuna's trials_dataframe() of each study, which the bench times with its CSV text.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import random
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.config import ReportSpec
from search.report.build import csv_text, load_studies, run_report
from search.report.data import study_data, trial_points, trials_table
from search.report.page import Report, render_page

EPOCHS = 10
TRAIN = {
    "train.optimizer": CategoricalDistribution(["adamw", "sgd"]),
    "train.lr": FloatDistribution(1e-4, 1e-1, log=True),
    "train.weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "train.batch_size": CategoricalDistribution([64, 128, 256]),
    "train.label_smoothing": FloatDistribution(0.0, 0.2),
    "train.augment": FloatDistribution(0.0, 1.0),
}
FAMILIES = {
    "cnn": {
        "cnn.blocks": IntDistribution(2, 4),
        "cnn.width_0": IntDistribution(16, 128, log=True),
        "cnn.kernel": CategoricalDistribution([3, 5, 7]),
        "cnn.dropout": FloatDistribution(0.0, 0.5),
    },
    "vit": {
        "vit.depth": IntDistribution(2, 8),
        "vit.heads": CategoricalDistribution([2, 4, 8]),
        "vit.patch": CategoricalDistribution([4, 7, 14]),
        "vit.mlp_ratio": FloatDistribution(1.0, 4.0),
    },
}


def synthetic_trial(rng: random.Random, number: int, start: datetime.datetime) -> optuna.trial.FrozenTrial:
    """One trial as `digit-search run` would store it, its accuracy a noisy function of its params."""
    family = rng.choice(sorted(FAMILIES))
    distributions = {**FAMILIES[family], **TRAIN}
    if family == "cnn":
        distributions["cnn.width_1"] = IntDistribution(16, 256, log=True)  # conditional, as in the real space
    params = {name: _sample(rng, d) for name, d in distributions.items()}
    quality = 0.97 - 0.02 * abs(math.log10(params["train.lr"]) + 2.5) + rng.gauss(0, 0.01)
    state = rng.choices([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL], weights=[45, 50, 5])[0]
    epochs = EPOCHS if state == TrialState.COMPLETE else rng.randint(1, EPOCHS - 1)
    curve = {e: min(0.999, quality - 0.3 / (e + 1) + rng.gauss(0, 0.003)) for e in range(1, epochs + 1)}
    seconds = rng.uniform(20, 300) * epochs / EPOCHS
    attrs = {
        "family": family,
        "params": rng.randint(20_000, 3_000_000),
        "train_seconds": round(seconds, 2),
        "images_per_second": round(rng.uniform(2000, 9000), 1),
        "device": "cpu",
        "hostname": "bench",
        "pid": 1,
        "seed": number,
        "data_hash": "bench",
    }
    if state == TrialState.FAIL:
        attrs["fail_reason"] = "FloatingPointError: loss became nan"
        curve = {}
    trial = create_trial(
        state=state,
        value=curve[EPOCHS] if state == TrialState.COMPLETE else None,
        params=params,
        distributions=distributions,
        user_attrs=attrs,
        intermediate_values=curve,
    )
    # create_trial stamps "now" for both; the compute figure sums real durations
    trial.datetime_start = start + datetime.timedelta(seconds=number * 300)
    trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=seconds + 5)
    return trial


def _sample(rng: random.Random, distribution) -> object:
    if isinstance(distribution, CategoricalDistribution):
        return rng.choice(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return rng.randint(distribution.low, distribution.high)
    if distribution.log:
        return math.exp(rng.uniform(math.log(distribution.low), math.log(distribution.high)))
    return rng.uniform(distribution.low, distribution.high)


def build_database(url: str, studies: int, trials: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    start = datetime.datetime(2025, 1, 1)
    for index in range(studies):
        study = optuna.create_study(study_name=f"bench-{index}", storage=url, direction="maximize")
        study.set_user_attr("space", "all")
        study.set_user_attr("data_hash", "bench")
        study.add_trials([synthetic_trial(rng, number, start) for number in range(trials)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000, help="trials per study")
    parser.add_argument("--studies", type=int, default=1)
    parser.add_argument(
        "--database", metavar="PATH", help="keep the synthetic SQLite file here and reuse it when it exists"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        database = Path(args.database) if args.database else Path(tmp) / "studies.db"
        url = f"sqlite:///{database}"
        if database.exists():
            print(f"database: reusing {database}")
        else:
            started = time.perf_counter()
            build_database(url, args.studies, args.trials)
            print(
                f"database: {args.studies} x {args.trials} trials written in {time.perf_counter() - started:.1f}s (not timed)"
            )

        spec = ReportSpec(storage=url, out=str(Path(tmp) / "reports"), ensembles=str(Path(tmp) / "none"))
        parts = {}
        with _timed(parts, "read trials"):
            studies = load_studies(spec)
        with _timed(parts, "per-study data (importances included)"):
            data = [study_data(s.name, s.attrs, s.trials, s.direction) for s in studies]
        with _timed(parts, "trials table (trials_dataframe) and its CSV"):
            csv_text(trials_table({s.name: s.trials for s in studies}))
        with _timed(parts, "figures and page"):
            render_page(
                Report("now", url, data, trial_points({s.name: s.trials for s in studies}), {}, None, "", "t.csv")
            )
        for name, seconds in parts.items():
            print(f"  {name:40} {seconds:6.2f}s")

        with open(os.devnull, "w") as quiet:
            files = run_report(spec, out=quiet)
        print(
            f"digit-search report, end to end: {files.seconds:.2f}s for {args.studies * args.trials} trials (target < 10 s); page {files.page.stat().st_size / 1e6:.1f} MB"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


@contextlib.contextmanager
def _timed(parts: dict[str, float], name: str):
    started = time.perf_counter()
    yield
    parts[name] = time.perf_counter() - started


if __name__ == "__main__":
    main()
