"""The command line's options. Defaults are read from the option records in search.config, never repeated here."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from importlib import metadata

from search.config import (
    AUTO_FAMILIES,
    CALIBRATIONS,
    DEFAULT_EPOCHS,
    METHODS,
    MIN_LIMIT_ROWS,
    PRUNERS,
    SAMPLERS,
    AutoSpec,
    DashboardSpec,
    EnsembleSpec,
    LeaderboardSpec,
    PredictSpec,
    ReportSpec,
    RunSpec,
    TrainSpec,
)

EXIT_USER_ERROR = 2
SPACE_HELP = "vit, cnn, resnet, stn, all, or path/to/space.py"
DEVICE_HELP = "auto, cpu, cuda or cuda:N"
SAMPLER_HELP = (
    "tpe: model the finished trials; random: the baseline; prior: mutate the best trials (the references first), "
    "a third uniform"
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what, where, what to do) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def default_of(spec: type, name: str) -> object:
    field = next(f for f in fields(spec) if f.name == name)
    return None if field.default is MISSING else field.default


class Options:
    """Adds the options of one command, each with the default its record defines, shown in the help."""

    def __init__(self, parser: argparse.ArgumentParser, spec: type) -> None:
        self.parser, self.spec = parser, spec

    def add(self, flag: str, help: str, *, dest: str | None = None, **kwargs) -> None:  # noqa: A002 - argparse's name
        dest = dest or flag.removeprefix("--").replace("-", "_")
        default = default_of(self.spec, dest)
        if default not in (None, False, ()) and kwargs.get("action") not in ("store_true", "store_false"):
            help = f"{help} (default: {default})"
        # None means "not given": the record's own default applies, so it is defined once
        self.parser.add_argument(flag, dest=dest, help=help, **{"default": None, **kwargs})

    def add_storage(self) -> None:
        self.add("--storage", "SQLAlchemy URL of the study database", metavar="URL")


def add_data_options(options: Options, *, epochs_help: str) -> None:
    options.add(
        "--data",
        "folder with Kaggle's train.csv and test.csv (plain or .gz); default: the embedded MNIST sample",
        dest="data_dir",
        metavar="DIR",
    )
    options.add(
        "--limit",
        f"keep only the first ROWS training rows, at least {MIN_LIMIT_ROWS} (smoke runs)",
        type=whole_number,
        metavar="ROWS",
    )
    options.add_storage()
    options.add("--device", DEVICE_HELP, metavar="NAME")
    options.add("--threads", "CPU threads for training (default: torch's)", type=whole_number, metavar="N")
    options.add(
        "--val-fraction",
        "validation holdout fraction, shared by every study on the same data",
        type=number,
        metavar="F",
    )
    options.add(
        "--split-seed",
        "seed of the validation split, shared by every study on the same data",
        type=whole_number,
        metavar="N",
    )
    options.add("--epochs", epochs_help, type=whole_number, metavar="N")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="digit-search", description="Search ViT and CNN spaces for handwritten digit recognition."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = Options(commands.add_parser("run", help="create or continue a pruned Optuna study over a space"), RunSpec)
    run.add("--space", f"{SPACE_HELP} (default: the space of the --study it continues)")
    run.add(
        "--trials",
        "the study ends holding N complete-or-pruned trials; the references are queued first",
        type=whole_number,
        metavar="N",
    )
    run.add("--study", "study name (default: the space's name)", metavar="NAME")
    run.add("--seed", "sampler seed; trial k trains with seed N + k", type=whole_number, metavar="N")
    run.add("--timeout", "stop starting new trials after this long", type=number, metavar="SECONDS")
    run.add(
        "--trial-timeout",
        "prune a trial once it has trained this long, mid-epoch if need be",
        type=number,
        metavar="SECONDS",
    )
    run.add(
        "--pruner",
        "rungs: screen each sampled config on complete trainings over 1/9, then 1/3 of the images before the full one; "
        f"hyperband, median: stop a trial between epochs (default: the study's; {PRUNERS[0]} for a new study)",
        choices=PRUNERS,
    )
    run.add("--sampler", SAMPLER_HELP, choices=SAMPLERS)
    run.add(
        "--no-reference", "don't enqueue the space's reference configs first", dest="reference", action="store_false"
    )
    run.add(
        "--artifacts",
        "artifact store: a directory shared by all nodes, or s3://bucket/prefix (default: beside a SQLite file, else studies/artifacts)",
        metavar="DIR_OR_URL",
    )
    run.add("--workers", "trials run side by side through Ray (1: in this process)", type=whole_number, metavar="N")
    run.add(
        "--gpus-per-trial",
        "GPUs per trial; 0.25 packs four trials on a GPU (default: all GPUs shared out, else 0)",
        type=number,
        metavar="F",
    )
    run.add(
        "--cpus-per-trial",
        "CPU threads per trial (default: the cluster's CPUs split between workers)",
        type=number,
        metavar="C",
    )
    run.add(
        "--address",
        "join a running Ray cluster: auto or ray://host:10001 (default: start a local runtime)",
        metavar="ADDR",
    )
    add_data_options(
        run, epochs_help=f"most epochs a trial trains (default: the study's budget; {DEFAULT_EPOCHS} for a new study)"
    )

    train = Options(commands.add_parser("train", help="train one config outside any study"), TrainSpec)
    train.add("--space", SPACE_HELP, required=True)
    source = train.parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference", metavar="REF", help="a named reference config of the space, e.g. bn-cnn")
    source.add_argument(
        "--trial", metavar="STUDY:NUMBER", help="a trial stored in --storage, e.g. cnn:12, retrained with its own seed"
    )
    train.add("--seed", "training seed (a --trial keeps its own)", type=whole_number, metavar="N")
    train.add("--json", "print one JSON line instead of progress", dest="as_json", action="store_true")
    train.add(
        "--all-digits",
        "train on every labelled digit, the validation rows too (their accuracy is then no longer held out)",
        action="store_true",
    )
    train.add(
        "--budget",
        "train as many epochs as fit in this wall-clock time (90s, 20m, 1h), timed by the first epoch; instead of --epochs",
        metavar="TIME",
    )
    train.add(
        "--out", "write a Kaggle submission of the test digits to FILE, its lineage beside it as .json", metavar="FILE"
    )
    add_data_options(
        train, epochs_help=f"epochs to train (default: a --trial's own; {DEFAULT_EPOCHS} for a --reference)"
    )

    ensemble = Options(
        commands.add_parser("ensemble", help="weight the top trials of several studies into a Kaggle submission"),
        EnsembleSpec,
    )
    ensemble.add("--studies", "comma-separated study names, e.g. vit,cnn,resnet,stn", required=True, metavar="A,B,...")
    ensemble.add("--top", "candidates per study, best validation accuracy first", type=whole_number, metavar="K")
    ensemble.add(
        "--method",
        "greedy selection on validation log-loss, uniform average, or the single best trial",
        choices=METHODS,
    )
    ensemble.add(
        "--calibration",
        "temperature: scale each member by one temperature fitted on validation; none: as stored",
        choices=CALIBRATIONS,
    )
    ensemble.add(
        "--tta", "average each member over one-pixel shifts of every image (validation and test)", action="store_true"
    )
    ensemble.add(
        "--data",
        "the --data the studies were run with (default: the embedded MNIST sample)",
        dest="data_dir",
        metavar="DIR",
    )
    ensemble.add(
        "--limit",
        "the --limit the studies were run with (tried from their row count when left out)",
        type=whole_number,
        metavar="ROWS",
    )
    ensemble.add_storage()
    ensemble.add(
        "--artifacts", "artifact store (default: beside a SQLite file, else studies/artifacts)", metavar="DIR_OR_URL"
    )
    ensemble.add("--out", "submission CSV; its lineage goes beside it as .json", metavar="FILE")
    ensemble.add("--save", "folder for the saved ensemble (default: a new one under studies/ensembles)", metavar="DIR")
    ensemble.add(
        "--space-file",
        "a family file a study was searched with (--space path/to/file.py); repeatable",
        dest="space_files",
        action="append",
        metavar="PATH",
    )
    ensemble.add("--device", f"{DEVICE_HELP}; used only to recompute probabilities", metavar="NAME")
    ensemble.add("--threads", "CPU threads (default: torch's)", type=whole_number, metavar="N")

    predict = Options(commands.add_parser("predict", help="classify digit images with a saved ensemble"), PredictSpec)
    predict.parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="PNG/JPEG files of one digit each (any size, either polarity), or CSV files of pixel rows",
    )
    predict.add("--ensemble", "a saved ensemble folder (default: the newest under studies/ensembles)", metavar="DIR")
    predict.add("--device", DEVICE_HELP, metavar="NAME")
    predict.add("--threads", "CPU threads (default: torch's)", type=whole_number, metavar="N")

    report = Options(
        commands.add_parser(
            "report", help="write an HTML report of studies and their latest ensemble, and the trials as CSV"
        ),
        ReportSpec,
    )
    report.add("--studies", "comma-separated study names (default: every study in the database)", metavar="A,B,...")
    report.add_storage()
    report.add("--out", "folder for report-<time>.html and trials-<time>.csv", metavar="DIR")
    report.add(
        "--ensemble",
        "the saved ensemble to show (default: the newest of these studies under studies/ensembles)",
        metavar="DIR",
    )
    report.add(
        "--artifacts", "artifact store (default: beside a SQLite file, else studies/artifacts)", metavar="DIR_OR_URL"
    )
    report.add(
        "--data",
        "the --data the studies were run with, for the ensemble's validation digits (default: the recorded folder, else the embedded sample)",
        dest="data_dir",
        metavar="DIR",
    )
    report.add("--gallery", "misclassified validation digits shown", type=whole_number, metavar="N")

    auto = Options(
        commands.add_parser("auto", help="from the data to the best submission within one wall-clock budget"), AutoSpec
    )
    auto.add("--budget", "wall-clock budget of the whole command: 90s, 20m, 1h, 1h30m", metavar="TIME")
    auto.add(
        "--data",
        "folder with Kaggle's train.csv and test.csv (plain or .gz); default: the embedded MNIST sample",
        dest="data_dir",
        metavar="DIR",
    )
    auto.add("--spaces", f"families to search, comma-separated, from {','.join(AUTO_FAMILIES)}", metavar="A,B,...")
    auto.add_storage()
    auto.add(
        "--study-prefix", "the studies are PREFIX + family (ordinary studies: resumable, browsable)", metavar="PREFIX"
    )
    auto.add(
        "--artifacts", "artifact store (default: beside a SQLite file, else studies/artifacts)", metavar="DIR_OR_URL"
    )
    auto.add("--out", "submission CSV; its lineage goes beside it as .json", metavar="FILE")
    auto.add("--save", "folder for the saved ensemble (default: a new one under studies/ensembles)", metavar="DIR")
    auto.add("--report", "folder for the HTML report", metavar="DIR")
    auto.add("--tta", "average each member over one-pixel shifts of every image", action="store_true")
    auto.add(
        "--no-search",
        "train the portfolio of references and retrain the best of them, without sampled trials",
        dest="search",
        action="store_false",
    )
    auto.add(
        "--no-refit",
        "submit the search's models as they are, without the final training on every labelled digit",
        dest="refit",
        action="store_false",
    )
    auto.add("--sampler", f"{SAMPLER_HELP} (for the search's sampled trials)", choices=SAMPLERS)
    auto.add("--seed", "sampler and training seed", type=whole_number, metavar="N")
    auto.add(
        "--limit",
        f"keep only the first ROWS training rows, at least {MIN_LIMIT_ROWS} (smoke runs)",
        type=whole_number,
        metavar="ROWS",
    )
    auto.add("--val-fraction", "validation holdout fraction", type=number, metavar="F")
    auto.add("--split-seed", "seed of the validation split", type=whole_number, metavar="N")
    auto.add("--device", DEVICE_HELP, metavar="NAME")
    auto.add("--threads", "CPU threads for training (default: torch's)", type=whole_number, metavar="N")
    auto.add("--workers", "trials run side by side through Ray (1: in this process)", type=whole_number, metavar="N")
    auto.add("--gpus-per-trial", "GPUs per trial; 0.25 packs four trials on a GPU", type=number, metavar="F")
    auto.add("--address", "join a running Ray cluster: auto or ray://host:10001", metavar="ADDR")

    leaderboard = Options(
        commands.add_parser("leaderboard", help="list the studies and their best trials in the terminal, best first"),
        LeaderboardSpec,
    )
    leaderboard.add(
        "--studies", "comma-separated study names (default: every study in the database)", metavar="A,B,..."
    )
    leaderboard.add_storage()
    leaderboard.add(
        "--json", "print one JSON document instead of the table, for scripts", dest="as_json", action="store_true"
    )

    dashboard = Options(
        commands.add_parser("dashboard", help="start optuna-dashboard on the study database, with trial artifacts"),
        DashboardSpec,
    )
    dashboard.add_storage()
    dashboard.add("--host", "address to listen on; 127.0.0.1 is this machine only", metavar="ADDRESS")
    dashboard.add("--port", "port to listen on", type=whole_number, metavar="N")
    dashboard.add(
        "--artifacts", "artifact store (default: beside a SQLite file, else studies/artifacts)", metavar="DIR_OR_URL"
    )
    dashboard.add(
        "--allow-writes",
        "let the dashboard change studies (notes, deletions); read-only without it",
        action="store_true",
    )
    return parser


def version() -> str:
    try:
        return metadata.version("digit-search")
    except metadata.PackageNotFoundError:
        return "unknown"
