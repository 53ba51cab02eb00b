"""`digit-search run`: one pruned Optuna study over a space, resumable up to N finished trials."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config import RUNG_PRUNER, RunSpec, TrialJob
from search.dispatch.in_process import run_in_process
from search.errors import UserError
from search.study.artifacts import artifact_location, check_artifact_store, is_s3_url
from search.study.progress import Progress, RunningTrial, plural
from search.study.retries import config_of, reconcile_lost_trials, retry_interrupted
from search.study.rungs import MIN_RUNG_ROWS, ladder
from search.study.setup import (
    check_can_continue,
    check_study_name,
    enqueue_references,
    open_study,
    recorded_space,
    recorded_study,
    resolve_epochs,
    resolve_pruner,
    space_source,
    study_identity,
)
from search.study.states import FINISHED, count_states
from search.study.storage import (
    absolute_storage_url,
    check_sqlite_folder,
    open_existing_storage,
    open_storage,
    parse_storage_url,
    redacted,
)
from search.study.trial_attrs import FAIL_REASON_ATTR, RETRY_OF_ATTR, RUNG_ATTR, WRITE_FAULT_ATTR
from search.train.prepared import PreparedData, prepare_data
from search.train.trainer import EpochReport
from spaces import Space, load_space

MAX_FAILURES_IN_A_ROW = 5


@dataclass(frozen=True)
class RunSummary:
    study_name: str
    storage: str
    artifact_dir: str
    counts: dict[str, int]
    best_trial: int | None
    best_value: float | None
    stopped_early: str | None


class FailuresInARow:
    """Notices a study whose trials keep failing, so a run stops instead of looping forever towards N; a
    trial failed by a full disk or a read-only folder stops it at once, since every later one would too."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.reason: str | None = None

    def should_stop(self, trial: FrozenTrial) -> bool:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if trial.state == TrialState.FAIL and WRITE_FAULT_ATTR in trial.user_attrs:
            self.reason = f"trial {trial.number} failed: {trial.user_attrs[WRITE_FAULT_ATTR]}"
        elif self.in_a_row >= self.limit:
            self.reason = (
                f"{self.limit} trials failed in a row (last: {trial.user_attrs.get(FAIL_REASON_ATTR, 'unknown')})"
            )
        return self.reason is not None


def trial_job(
    spec: RunSpec,
    study_name: str,
    space_option: str,
    epochs: int,
    pruner: str,
    prepared: PreparedData,
    artifact_dir: str,
    trials_sharing_memory: int,
) -> TrialJob:
    """The run's one TrialJob, with paths made absolute for workers that start in another directory."""
    return TrialJob(
        storage=absolute_storage_url(spec.storage),
        study_name=study_name,
        space=space_source(space_option),
        epochs=epochs,
        base_seed=spec.seed,
        data_hash=prepared.digits.data_hash,
        split=prepared.split.fingerprint(),
        artifacts=artifact_dir if is_s3_url(artifact_dir) else str(Path(artifact_dir).resolve()),
        pruner=pruner,
        sampler=spec.sampler,
        threads=spec.threads,
        trial_timeout=spec.trial_timeout,
        deadline=spec.deadline,
        climb_references=spec.climb_references,
        trials_sharing_memory=trials_sharing_memory,
    )


@dataclass(frozen=True)
class CheckedRun:
    """A run's options checked against each other, the data and the study, with nothing written yet."""

    name: str
    space: Space
    space_option: str  # --space as given, or as the study recorded it
    epochs: int
    pruner: str
    prepared: PreparedData
    identity: dict[str, object]
    storage: optuna.storages.RDBStorage | None  # None: a SQLite file not created yet
    artifact_dir: str


def check_run(spec: RunSpec) -> CheckedRun:
    """Every check `run` makes before it writes anything: the storage URL and its folder, the study name,
    the space and epoch budget against the study's, the data, and that the artifact store takes a file."""
    url = parse_storage_url(spec.storage)  # a malformed URL fails before any data is loaded
    check_sqlite_folder(url)
    if spec.space is None and spec.study is None:
        raise UserError("give --space to create a study, or --study NAME to continue one")
    space = None if spec.space is None else load_space(spec.space)
    name = spec.study or space.name
    check_study_name(name)
    storage = open_existing_storage(spec.storage)  # read only: a new SQLite file is created once all is checked
    recorded = recorded_study(storage, name)
    space_option = spec.space or recorded_space(recorded, name, redacted(url))
    space = space or load_space(space_option)
    epochs = resolve_epochs(spec.epochs, recorded, name)
    pruner = resolve_pruner(spec.pruner, recorded, name)
    # the driver of a parallel run trains nothing: its copy of the data only feeds the object store
    prepared = prepare_data(
        spec.data_dir,
        limit=spec.limit,
        val_fraction=spec.val_fraction,
        split_seed=spec.split_seed,
        device="cpu" if spec.parallel else spec.device,
    )
    identity = study_identity(space, prepared)
    if storage is not None:
        check_can_continue(storage, name, identity)
    artifact_dir = artifact_location(spec.artifacts, spec.storage)
    check_artifact_store(artifact_dir)
    return CheckedRun(name, space, space_option, epochs, pruner, prepared, identity, storage, artifact_dir)


def run_study(spec: RunSpec, out: TextIO | None = None) -> RunSummary:
    """Create or continue the study until it holds spec.trials complete-or-pruned trials.

    Everything is checked first (check_run, then for Ray the cluster and the shares asked of it),
    so a mistake leaves the study as it was: no study created, no reference queued.
    """
    out = out or sys.stdout
    run = check_run(spec)
    name, epochs, prepared = run.name, run.epochs, run.prepared
    failures = FailuresInARow(MAX_FAILURES_IN_A_ROW)
    with contextlib.ExitStack() as stack:
        resources = None
        if spec.parallel:
            from search.dispatch import ray_driver  # Ray is imported only for parallel runs

            resources = stack.enter_context(ray_driver.ray_cluster(spec))
        storage = run.storage or open_storage(spec.storage)
        study = open_study(
            name,
            storage,
            run.identity,
            seed=spec.seed,
            pruner=run.pruner,
            epochs=epochs,
            space_option=run.space_option,
            sampler=spec.sampler,
        )
        job = trial_job(
            spec,
            name,
            run.space_option,
            epochs,
            run.pruner,
            prepared,
            run.artifact_dir,
            resources.trials_per_device if resources else 1,
        )
        reconciled = reconcile_lost_trials(study, storage)
        retry_interrupted(study)
        if spec.reference:
            enqueue_references(study, run.space, spec.only_references)

        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        where = resources.describe(job.threads) if resources else f"device {prepared.tensors.device}"
        out.write(
            f"study {name!r} in {redacted(spec.storage)}: {describe_count(finished, spec.trials)}; "
            f"data {prepared.digits.source}, {len(prepared.split.train_index)} train / {len(prepared.split.val_index)} val rows; "
            f"{where}; {describe_pruning(run.pruner, epochs, len(prepared.split.train_index))}\n"
        )
        if reconciled:
            out.write(
                f"{describe_numbers(reconciled)} left running by a run that is gone: failed now, "
                f"their configs queued again unless their process died twice\n"
            )
        if finished < spec.trials:
            out.write(describe_queue(study, run.space, spec.trials - finished) + "\n")
        progress = Progress(spec.trials, finished, out, spec.timeout)

        def on_trial(study: optuna.Study, trial: FrozenTrial) -> bool:
            progress(study, trial)
            return failures.should_stop(trial)

        def on_epoch(trial: optuna.Trial, report: EpochReport) -> None:
            attrs = trial.user_attrs
            rows = attrs[RUNG_ATTR].split(" x ")[0] if RUNG_ATTR in attrs else None
            running = RunningTrial(
                trial.number,
                attrs.get("family", "?"),
                epochs,
                report.epoch,
                report.val_accuracy,
                report.images_per_second,
                rows,
            )
            progress.show_running([running])

        if finished < spec.trials:
            if resources is not None:
                ray_driver.run_parallel(
                    resources, job, study, storage, prepared, spec.trials, spec.timeout, on_trial, progress
                )
            else:
                run_in_process(
                    job,
                    study,
                    storage,
                    prepared.tensors,
                    spec.trials,
                    spec.timeout,
                    on_trial,
                    on_epoch if progress.live else None,
                )
    summary = summarize(study, spec, run.artifact_dir, failures.reason)
    print_summary(summary, out)
    return summary


def describe_pruning(pruner: str, epochs: int, rows: int) -> str:
    if pruner != RUNG_PRUNER:
        return f"up to {plural(epochs, 'epoch')} a trial, " + (
            "no pruning" if pruner == "none" else f"pruned by {pruner}"
        )
    rungs = ladder(epochs, rows)
    if len(rungs) == 1:
        return f"{plural(epochs, 'epoch')} a trial; too few rows to screen on rungs of at least {MIN_RUNG_ROWS:,}"
    cheap = ", then ".join(f"{r.rows:,}" for r in rungs[:-1])
    return (
        f"every config trains on {cheap}, then all {rungs[-1].rows:,} rows, {plural(epochs, 'epoch')} each; "
        "a sampled one goes on while in the best third"
    )


def describe_count(finished: int, target: int) -> str:
    if finished < target:
        return f"{finished} of {target} trials finished"
    return f"holds {plural(finished, 'finished trial')}, so --trials {target} is reached: nothing to run (raise --trials to go on)"


def describe_numbers(numbers: list[int]) -> str:
    return f"trial {numbers[0]}" if len(numbers) == 1 else f"trials {', '.join(map(str, numbers))}"


def describe_queue(study: optuna.Study, space: Space, to_run: int) -> str:
    """What runs first: the queued references and retries, then sampled trials, and how --trials cuts that."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not waiting:
        return f"{plural(to_run, 'sampled trial')} to run"
    retries = [t for t in waiting if RETRY_OF_ATTR in t.user_attrs]
    queued = [t for t in waiting if RETRY_OF_ATTR not in t.user_attrs]
    parts = []
    if retries:
        parts.append(
            f"{plural(len(retries), 'retry', 'retries')} of {describe_numbers([t.user_attrs[RETRY_OF_ATTR] for t in retries])}"
        )
    if queued:
        labels = [space.reference_name(config_of(t)) for t in queued]
        what = "reference" if all(labels) else "queued config"
        parts.append(
            f"{plural(len(queued), what)} ({', '.join(label or f'trial {t.number}' for label, t in zip(labels, queued))})"
        )
    first = f"queued first: {' and '.join(parts)}"
    if to_run < len(waiting):
        return f"{first}; --trials leaves room for {to_run} of them this run, the rest stay queued for a later one, sampled trials after them"
    if to_run == len(waiting):
        return f"{first}; they fill --trials, so sampled trials follow only if one fails (raise --trials for more)"
    return f"{first}, then {plural(to_run - len(waiting), 'sampled trial')}"


def summarize(study: optuna.Study, spec: RunSpec, artifact_dir: str, stopped_early: str | None) -> RunSummary:
    counts = count_states(study.get_trials(deepcopy=False))
    try:
        best = study.best_trial
        best_trial, best_value = best.number, best.value
    except ValueError:
        best_trial, best_value = None, None
    return RunSummary(
        study_name=study.study_name,
        storage=redacted(spec.storage),
        artifact_dir=artifact_dir,
        counts={state: n for state, n in counts.items() if n},
        best_trial=best_trial,
        best_value=best_value,
        stopped_early=stopped_early,
    )


def dashboard_command(storage: str, artifact_dir: str) -> str:
    script = Path(sys.executable).parent / "optuna-dashboard"
    program = str(script) if script.exists() else "optuna-dashboard"
    try:
        program = str(Path(program).relative_to(Path.cwd()))
    except ValueError:
        pass
    return f"{program} {redacted(storage)} --artifact-dir {artifact_dir}"


def print_summary(summary: RunSummary, out: TextIO) -> None:
    states = ", ".join(f"{n} {state}" for state, n in summary.counts.items()) or "no trials"
    out.write(f"\nstudy {summary.study_name!r}: {states}\n")
    if summary.stopped_early:
        out.write(f"stopped early: {summary.stopped_early}\n")
    if summary.best_trial is not None:
        out.write(f"best trial {summary.best_trial}: val accuracy {summary.best_value:.2%}\n")
    out.write(f"storage {summary.storage}; artifacts in {summary.artifact_dir}\n")
    out.write(f"browse it: {dashboard_command(summary.storage, summary.artifact_dir)}\n")
