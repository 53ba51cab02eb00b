"""`digit-search run`: one pruned Optuna study over a space, resumable up to N finished trials."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config import RunSpec, TrialJob
from search.dispatch.in_process import retry_interrupted, run_in_process
from search.study.artifacts import artifact_location, is_s3_url
from search.study.progress import Progress
from search.study.states import FINISHED, count_states
from search.study.setup import enqueue_references, open_study, study_identity
from search.study.storage import absolute_storage_url, open_storage, parse_storage_url, redacted
from search.study.trial_attrs import FAIL_REASON_ATTR
from search.train.prepared import prepare_data
from spaces import load_space

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
    """Notices a study whose trials keep failing, so a run stops instead of looping forever towards N."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.reason: str | None = None

    def should_stop(self, trial: FrozenTrial) -> bool:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= self.limit:
            self.reason = f"{self.limit} trials failed in a row (last: {trial.user_attrs.get(FAIL_REASON_ATTR, 'unknown')})"
        return self.reason is not None


def trial_job(spec: RunSpec, study_name: str, data_hash: str, split: str, artifact_dir: str) -> TrialJob:
    """The run's one TrialJob, with paths made absolute for workers that start in another directory."""
    return TrialJob(
        storage=absolute_storage_url(spec.storage),
        study_name=study_name,
        space=str(Path(spec.space).resolve()) if spec.space.endswith(".py") else spec.space,
        epochs=spec.epochs,
        base_seed=spec.seed,
        data_hash=data_hash,
        split=split,
        artifacts=artifact_dir if is_s3_url(artifact_dir) else str(Path(artifact_dir).resolve()),
        pruner=spec.pruner,
        threads=spec.threads,
        trial_timeout=spec.trial_timeout,
    )


def run_study(spec: RunSpec, out: TextIO | None = None) -> RunSummary:
    """Create or continue the study until it holds spec.trials complete-or-pruned trials."""
    out = out or sys.stdout
    parse_storage_url(spec.storage)  # a malformed URL fails before any data is loaded
    space = load_space(spec.space)
    # the driver of a parallel run trains nothing: its copy of the data only feeds the object store
    prepared = prepare_data(spec.data_dir, limit=spec.limit, val_fraction=spec.val_fraction, split_seed=spec.split_seed, device="cpu" if spec.parallel else spec.device)
    storage = open_storage(spec.storage)
    study = open_study(
        spec.study or space.name, storage, study_identity(space, prepared), seed=spec.seed, pruner=spec.pruner, epochs=spec.epochs
    )
    artifact_dir = artifact_location(spec.artifacts, spec.storage)
    job = trial_job(spec, study.study_name, prepared.digits.data_hash, prepared.split.fingerprint(), artifact_dir)
    optuna.storages.fail_stale_trials(study)
    if spec.reference:
        enqueue_references(study, space)

    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    where = "Ray workers" if spec.parallel else f"device {prepared.tensors.device}"
    out.write(
        f"study {study.study_name!r} in {redacted(spec.storage)}: {finished}/{spec.trials} trials finished; "
        f"data {prepared.digits.source}, {len(prepared.split.train_index)} train / {len(prepared.split.val_index)} val rows; "
        f"{where}; {spec.epochs} epochs max\n"
    )
    failures = FailuresInARow(MAX_FAILURES_IN_A_ROW)
    progress = Progress(spec.trials, finished, out, spec.timeout)

    def on_trial(study: optuna.Study, trial: FrozenTrial) -> bool:
        progress(study, trial)
        return failures.should_stop(trial)

    if finished < spec.trials:
        retry_interrupted(study)
        if spec.parallel:
            from search.dispatch.ray_driver import run_parallel  # Ray is imported only for parallel runs

            run_parallel(spec, job, study, storage, prepared, on_trial, out)
        else:
            run_in_process(job, study, prepared.tensors, spec.trials, spec.timeout, on_trial)
    summary = summarize(study, spec, artifact_dir, failures.reason)
    print_summary(summary, out)
    return summary


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
