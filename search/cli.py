"""The `digit-search` command line: parse options into specs, run them, turn user errors into one line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from search.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


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
    run.add_argument("--pruner", choices=("hyperband", "median", "none"), help="pruning on epochs (default hyperband)")
    run.add_argument("--no-reference", dest="reference", action="store_false", default=None, help="don't enqueue the space's reference configs first")
    run.add_argument("--artifacts", metavar="DIR", help="artifact store directory (default: beside a SQLite file, else studies/artifacts)")
    add_data_options(run)

    train = commands.add_parser("train", help="train one config outside any study")
    train.add_argument("--space", required=True, help="vit, cnn, resnet, stn, all, or path/to/space.py")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference", metavar="REF", help="a named reference config of the space, e.g. bn-cnn")
    source.add_argument("--trial", metavar="STUDY:NUMBER", help="a trial stored in --storage, e.g. cnn:12")
    train.add_argument("--json", dest="as_json", action="store_true", default=None, help="print one JSON line instead of progress")
    add_data_options(train)
    return parser


def spec_kwargs(args: argparse.Namespace, spec_type: type) -> dict:
    """Options the user gave; the rest fall back to the spec dataclass's defaults (one place)."""
    names = {field.name for field in fields(spec_type)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


def is_user_error(err: Exception) -> bool:
    from search.data import DataError
    from spaces import SpaceError

    return isinstance(err, (UserError, DataError, SpaceError))


def dispatch(args: argparse.Namespace) -> int:
    # Heavy imports (torch, optuna) only once the command line parsed, so --help is instant.
    if args.command == "run":
        from search.study import RunSpec, run_study

        summary = run_study(RunSpec(**spec_kwargs(args, RunSpec)))
        return 1 if summary.stopped_early else 0
    if args.command == "train":
        from search.standalone import TrainSpec, train_one

        train_one(TrainSpec(**spec_kwargs(args, TrainSpec)))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
