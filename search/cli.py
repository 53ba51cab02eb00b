"""The `digit-search` command line: parse options into specs, run them, turn user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from dataclasses import fields

from search.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# command -> (module, its spec dataclass, the function that runs a spec); `run` exits 1 when stopped early
COMMANDS = {
    "run": ("search.study", "RunSpec", "run_study"),
    "train": ("search.standalone", "TrainSpec", "train_one"),
    "ensemble": ("search.ensemble_command", "EnsembleSpec", "run_ensemble"),
    "predict": ("search.predict", "PredictSpec", "predict_images"),
    "report": ("search.report_command", "ReportSpec", "run_report"),
    "dashboard": ("search.dashboard", "DashboardSpec", "serve_dashboard"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what, where, what to do) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", dest="data_dir", metavar="DIR", help="directory with Kaggle train.csv and test.csv (plain or .gz); default: the embedded MNIST sample")
    parser.add_argument("--limit", type=positive_int, metavar="ROWS", help="keep only the first ROWS training rows (smoke runs)")
    parser.add_argument("--epochs", type=positive_int, metavar="N", help="epochs per trial (most, when pruning)")
    parser.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of the study database (default sqlite:///studies/digit-search.db)")
    parser.add_argument("--seed", type=int, metavar="N", help="sampler and training seed")
    parser.add_argument("--device", metavar="NAME", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for training (default: torch's)")
    parser.add_argument("--val-fraction", type=float, metavar="F", help="validation holdout fraction (default 0.1)")
    parser.add_argument("--split-seed", type=int, metavar="N", help="seed of the validation split (default 0; shared by all studies)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="digit-search", description="Search ViT and CNN spaces for handwritten digit recognition.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = commands.add_parser("run", help="create or continue a pruned Optuna study over a space")
    run.add_argument("--space", required=True, help="vit, cnn, resnet, stn, all, or path/to/space.py")
    run.add_argument("--trials", type=positive_int, metavar="N", help="the study ends holding N complete-or-pruned trials (default 20)")
    run.add_argument("--study", metavar="NAME", help="study name (default: the space's name)")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting new trials after this long")
    run.add_argument("--trial-timeout", type=float, metavar="SECONDS", help="prune a trial once it has trained this long, mid-epoch if need be")
    run.add_argument("--pruner", choices=("hyperband", "median", "none"), help="pruning on epochs (default hyperband)")
    run.add_argument("--no-reference", dest="reference", action="store_false", default=None, help="don't enqueue the space's reference configs first")
    run.add_argument("--artifacts", metavar="DIR", help="artifact store directory shared by all nodes (default: beside a SQLite file, else studies/artifacts)")
    run.add_argument("--workers", type=positive_int, metavar="N", help="trials run side by side through Ray (default 1: in this process)")
    run.add_argument("--gpus-per-trial", type=float, metavar="F", help="GPUs per trial; 0.25 packs four trials on a GPU (default: all GPUs shared out, else 0)")
    run.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPU threads per trial (default: the cluster's CPUs split between workers)")
    run.add_argument("--address", metavar="ADDR", help="join a running Ray cluster: auto or ray://host:10001 (default: start a local runtime)")
    add_data_options(run)

    train = commands.add_parser("train", help="train one config outside any study")
    train.add_argument("--space", required=True, help="vit, cnn, resnet, stn, all, or path/to/space.py")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference", metavar="REF", help="a named reference config of the space, e.g. bn-cnn")
    source.add_argument("--trial", metavar="STUDY:NUMBER", help="a trial stored in --storage, e.g. cnn:12")
    train.add_argument("--json", dest="as_json", action="store_true", default=None, help="print one JSON line instead of progress")
    add_data_options(train)

    ensemble = commands.add_parser("ensemble", help="weight the top trials of several studies into a Kaggle submission")
    ensemble.add_argument("--studies", required=True, metavar="A,B,...", help="comma-separated study names, e.g. vit,cnn,resnet,stn")
    ensemble.add_argument("--top", type=positive_int, metavar="K", help="candidates per study, best validation accuracy first (default 10)")
    ensemble.add_argument("--method", choices=("greedy", "average", "best"), help="greedy selection on validation log-loss (default), uniform average, or the single best trial")
    ensemble.add_argument("--calibration", choices=("temperature", "none"), help="temperature: scale each member by one temperature fitted on validation before weighting (default); none: use the probabilities as stored")
    ensemble.add_argument("--tta", action="store_true", default=None, help="average each member over one-pixel shifts of every image (validation and test)")
    ensemble.add_argument("--data", dest="data_dir", metavar="DIR", help="the --data the studies were run with (default: the embedded MNIST sample)")
    ensemble.add_argument("--limit", type=positive_int, metavar="ROWS", help="the --limit the studies were run with (tried from their row count when left out)")
    ensemble.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of the study database (default sqlite:///studies/digit-search.db)")
    ensemble.add_argument("--artifacts", metavar="DIR", help="artifact store directory (default: beside a SQLite file, else studies/artifacts)")
    ensemble.add_argument("--out", metavar="FILE", help="submission CSV (default submission.csv); its lineage goes beside it as .json")
    ensemble.add_argument("--save", metavar="DIR", help="folder for the saved ensemble (default: a new one under studies/ensembles)")
    ensemble.add_argument("--space-file", dest="space_files", action="append", metavar="PATH", help="a family file a study was searched with (--space path/to/file.py); repeatable")
    ensemble.add_argument("--device", metavar="NAME", help="auto (default), cpu, cuda or cuda:N; used only to recompute probabilities")
    ensemble.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: torch's)")

    predict = commands.add_parser("predict", help="classify digit images with a saved ensemble")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files of one digit each (any size, either polarity), or CSV files of pixel rows")
    predict.add_argument("--ensemble", metavar="DIR", help="a saved ensemble folder (default: the newest under studies/ensembles)")
    predict.add_argument("--device", metavar="NAME", help="auto (default), cpu, cuda or cuda:N")
    predict.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: torch's)")

    report = commands.add_parser("report", help="write an HTML report of studies and their latest ensemble, and the trials as CSV")
    report.add_argument("--studies", metavar="A,B,...", help="comma-separated study names (default: every study in the database)")
    report.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of the study database (default sqlite:///studies/digit-search.db)")
    report.add_argument("--out", metavar="DIR", help="folder for report-<time>.html and trials-<time>.csv (default reports/)")
    report.add_argument("--ensemble", metavar="DIR", help="the saved ensemble to show (default: the newest of these studies under studies/ensembles)")
    report.add_argument("--artifacts", metavar="DIR", help="artifact store directory (default: beside a SQLite file, else studies/artifacts)")
    report.add_argument("--data", dest="data_dir", metavar="DIR", help="the --data the studies were run with, for the ensemble's validation digits (default: the recorded folder, else the embedded sample)")
    report.add_argument("--gallery", type=int, metavar="N", help="misclassified validation digits shown (default 60)")

    dashboard = commands.add_parser("dashboard", help="start optuna-dashboard on the study database, with trial artifacts")
    dashboard.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of the study database (default sqlite:///studies/digit-search.db)")
    dashboard.add_argument("--host", metavar="ADDRESS", help="address to listen on (default 127.0.0.1, this machine only)")
    dashboard.add_argument("--port", type=int, metavar="N", help="port to listen on (default 8080)")
    dashboard.add_argument("--artifacts", metavar="DIR", help="artifact store directory (default: beside a SQLite file, else studies/artifacts)")
    return parser


def spec_kwargs(args: argparse.Namespace, spec_type: type) -> dict:
    """Options the user gave; the rest fall back to the spec dataclass's defaults (one place)."""
    names = {field.name for field in fields(spec_type)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    listen_for_interrupts()
    try:
        return dispatch(args)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if not is_user_error(err):
            raise
        message = " ".join(str(err).split())
        print(f"digit-search {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


def listen_for_interrupts() -> None:
    """Make SIGINT raise KeyboardInterrupt even where it arrived ignored.

    A shell without job control starts `cmd &` with SIGINT ignored, and Python then never raises
    KeyboardInterrupt: `timeout --signal=INT` or a scheduler's SIGINT would be lost, and the kill
    that follows would leave trials RUNNING. Interrupted, we fail and re-enqueue them instead.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def is_user_error(err: Exception) -> bool:
    from search.data import DataError
    from spaces import SpaceError

    return isinstance(err, (UserError, DataError, SpaceError))


def dispatch(args: argparse.Namespace) -> int:
    # Heavy imports (torch, optuna) only once the command line parsed, so --help is instant.
    from search.progress import quiet_optuna

    quiet_optuna()
    module_name, spec_name, function_name = COMMANDS[args.command]
    module = importlib.import_module(module_name)
    spec_type = getattr(module, spec_name)
    outcome = getattr(module, function_name)(spec_type(**spec_kwargs(args, spec_type)))
    return 1 if getattr(outcome, "stopped_early", False) else 0


if __name__ == "__main__":
    sys.exit(main())
