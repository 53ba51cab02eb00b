"""`digit-search`: parse the options into a record, call the Python API, turn user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from dataclasses import asdict, fields

from search.cli.parser import EXIT_USER_ERROR, build_parser
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
from search.errors import UserError, is_write_fault, write_fault

EXIT_INTERRUPTED = 130
# command -> (its option record, the search.api function that runs one); `run` exits 1 when stopped early
COMMANDS = {
    "run": (RunSpec, "run_study"),
    "train": (TrainSpec, "train_one"),
    "ensemble": (EnsembleSpec, "make_submission"),
    "predict": (PredictSpec, "predict_files"),
    "report": (ReportSpec, "write_report"),
    "leaderboard": (LeaderboardSpec, "leaderboard"),
    "auto": (AutoSpec, "run_auto"),
    "dashboard": (DashboardSpec, "serve_dashboard"),
}


def spec_kwargs(args: argparse.Namespace, spec_type: type) -> dict:
    """Options the user gave; the rest fall back to the record's defaults (one place)."""
    names = {field.name for field in fields(spec_type)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    listen_for_interrupts()
    quiet_write_faults_in_threads()
    try:
        return dispatch(args)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError as err:
        print(f"digit-search {args.command}: error: {err.cli_message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:
        # a full disk or a read-only folder, however deep in Optuna or SQLAlchemy it surfaced: one line, as a user error
        options = command_options(args)
        message = write_fault(err, options, database=database_file(options.get("storage")))
        if message is None:
            raise
        print(f"digit-search {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


def command_options(args: argparse.Namespace) -> dict:
    """The command's options with the record's defaults filled in (the default --storage, ...), for naming paths."""
    spec_type = COMMANDS[args.command][0]
    try:
        return {**vars(args), **asdict(spec_type(**spec_kwargs(args, spec_type)))}
    except Exception:  # UserError: refused before anything was written
        return vars(args)


def database_file(storage: object):
    """The SQLite file of --storage, which SQLite's own messages do not name; None for a server or no URL."""
    if not isinstance(storage, str):
        return None
    from search.study.storage import (  # on the error path only: SQLAlchemy is loaded by then
        parse_storage_url,
        sqlite_file,
    )

    try:
        return sqlite_file(parse_storage_url(storage))
    except UserError:
        return None


def quiet_write_faults_in_threads() -> None:
    """A background thread that meets a full disk (Optuna's heartbeat) would print a traceback; the main
    thread meets the same fault and says it in one line, so the thread's is not printed."""
    if getattr(threading.excepthook, "quiet_write_faults", False):
        return
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or not is_write_fault(args.exc_value):
            default(args)

    hook.quiet_write_faults = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def listen_for_interrupts() -> None:
    """Make SIGINT raise KeyboardInterrupt even where it arrived ignored.

    A shell without job control starts `cmd &` with SIGINT ignored, and Python then never raises
    KeyboardInterrupt: `timeout --signal=INT` or a scheduler's SIGINT would be lost, and the kill
    that follows would leave trials RUNNING. Interrupted, we fail and re-enqueue them instead.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def dispatch(args: argparse.Namespace) -> int:
    spec_type, function_name = COMMANDS[args.command]
    options = spec_kwargs(args, spec_type)
    spec_type(**options)  # a bad option is refused before anything heavy is imported
    # torch, Optuna and Ray load only now, so --help and a mistyped option answer at once
    api = importlib.import_module("search.api")
    outcome = getattr(api, function_name)(**options)
    if getattr(outcome, "interrupted", False):  # auto cut short: it wrote the best submission it had
        print(
            "\ninterrupted; the submission is the best of what was complete; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 1 if getattr(outcome, "stopped_early", False) else 0
