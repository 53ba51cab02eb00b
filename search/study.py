"""`digit-search run`: one pruned Optuna study over a space, resumable up to N finished trials."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from search.artifacts import artifact_location, open_artifact_store
from search.device import set_threads
from search.errors import UserError
from search.objective import TrialContext, enqueue_retry, make_objective
from search.prepared import PreparedData, prepare_data
from search.progress import FINISHED, HideInterruptedTrial, Progress, count_states
from search.storage import DEFAULT_STORAGE, open_storage, parse_storage_url, redacted
from search.trial_attrs import FAIL_REASON_ATTR, INTERRUPTED
from spaces.training import DEFAULT_EPOCHS
from spaces import Space, load_space

PRUNERS = ("hyperband", "median", "none")
MAX_FAILURES_IN_A_ROW = 5
# Study attrs that must match for a run to continue a study.
IDENTITY_ATTRS = ("space", "data_hash", "split")


@dataclass(frozen=True)
class RunSpec:
    space: str
    trials: int = 20
    epochs: int = DEFAULT_EPOCHS
    data_dir: str | None = None
    storage: str = DEFAULT_STORAGE
    study: str | None = None
    seed: int = 0
    timeout: float | None = None
    trial_timeout: float | None = None
    limit: int | None = None
    pruner: str = "hyperband"
    reference: bool = True
    val_fraction: float = 0.1
    split_seed: int = 0
    device: str = "auto"
    threads: int | None = None
    artifacts: str | None = None
    workers: int = 1
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        for name in ("trials", "epochs"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 20:
            raise UserError(f"--limit must be at least 20 rows, got {self.limit}")
        for name in ("timeout", "trial_timeout"):
            seconds = getattr(self, name)
            if seconds is not None and not seconds > 0:  # NaN too
                raise UserError(f"--{name.replace('_', '-')} must be positive seconds, got {seconds}")
        if self.pruner not in PRUNERS:
            raise UserError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if not 0 < self.val_fraction <= 0.5:
            raise UserError(f"--val-fraction must be in (0, 0.5], got {self.val_fraction}")
        parse_storage_url(self.storage)  # a malformed URL fails before any data is loaded
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_trial is not None and self.cpus_per_trial <= 0:
            raise UserError(f"--cpus-per-trial must be positive, got {self.cpus_per_trial}")
        if self.gpus_per_trial is not None and not 0 <= self.gpus_per_trial:
            raise UserError(f"--gpus-per-trial must be 0 or more, got {self.gpus_per_trial}")
        if self.gpus_per_trial is not None and self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise UserError(f"--gpus-per-trial above 1 must be a whole number, got {self.gpus_per_trial}")


@dataclass(frozen=True)
class RunSummary:
    study_name: str
    storage: str
    artifact_dir: str
    counts: dict[str, int]
    best_trial: int | None
    best_value: float | None
    stopped_early: str | None


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # Multivariate TPE over conditional spaces (group) with constant liar for parallel workers.
    return optuna.samplers.TPESampler(seed=seed, group=True, constant_liar=True, n_startup_trials=10)


def study_identity(space: Space, prepared: PreparedData) -> dict[str, object]:
    return {"space": space.name, **prepared.study_attrs()}


def check_can_continue(storage: optuna.storages.BaseStorage, study_name: str, identity: dict[str, object]) -> None:
    """Refuse, before writing anything, to continue a study built on other data, split or space."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return
    recorded = storage.get_study_user_attrs(study_id)
    for key in IDENTITY_ATTRS:
        if key in recorded and recorded[key] != identity[key]:
            if key == "space":
                what = f"space {recorded[key]!r}, not {identity[key]!r}"
            else:
                what = (
                    f"data {str(recorded.get('data_hash'))[:12]} ({recorded.get('data_source')}, split {recorded.get('split')}), "
                    f"not {str(identity['data_hash'])[:12]} ({identity['data_source']}, split {identity['split']})"
                )
            raise UserError(
                f"study {study_name!r} was built on {what}; use --study NEW_NAME for a new study, "
                f"or the same --space/--data/--limit as before"
            )


def open_study(spec: RunSpec, storage: optuna.storages.BaseStorage, space: Space, prepared: PreparedData) -> optuna.Study:
    name = spec.study or space.name
    identity = study_identity(space, prepared)
    check_can_continue(storage, name, identity)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(spec.seed),
        pruner=make_pruner(spec.pruner, spec.epochs),
        load_if_exists=True,
    )
    for key, value in identity.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def enqueue_references(study: optuna.Study, space: Space) -> int:
    references = space.references()
    for _, params in references.values():
        study.enqueue_trial(params, skip_if_exists=True)
    return len(references)


class FailuresInARow:
    """Notices a study whose trials keep failing, so a run stops instead of looping forever towards N."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.reason: str | None = None

    def should_stop(self, trial: optuna.trial.FrozenTrial) -> bool:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= self.limit:
            self.reason = f"{self.limit} trials failed in a row (last: {trial.user_attrs.get(FAIL_REASON_ATTR, 'unknown')})"
        return self.reason is not None


def run_study(spec: RunSpec, out: TextIO | None = None) -> RunSummary:
    """Create or continue the study until it holds spec.trials complete-or-pruned trials."""
    out = out or sys.stdout
    space = load_space(spec.space)
    parallel = spec.workers > 1 or spec.address is not None
    # the driver of a parallel run trains nothing: its copy of the data only feeds the object store
    prepared = prepare_data(spec.data_dir, limit=spec.limit, val_fraction=spec.val_fraction, split_seed=spec.split_seed, device="cpu" if parallel else spec.device)
    storage = open_storage(spec.storage)
    study = open_study(spec, storage, space, prepared)
    artifact_dir = artifact_location(spec.artifacts, spec.storage)
    optuna.storages.fail_stale_trials(study)
    if spec.reference:
        enqueue_references(study, space)

    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    where = "Ray workers" if parallel else f"device {prepared.tensors.device}"
    out.write(
        f"study {study.study_name!r} in {redacted(spec.storage)}: {finished}/{spec.trials} trials finished; "
        f"data {prepared.digits.source}, {len(prepared.split.train_index)} train / {len(prepared.split.val_index)} val rows; "
        f"{where}; {spec.epochs} epochs max\n"
    )
    failures = FailuresInARow(MAX_FAILURES_IN_A_ROW)
    progress = Progress(spec.trials, finished, out, spec.timeout)

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        progress(study, trial)
        return failures.should_stop(trial)

    if finished < spec.trials:
        if parallel:
            from search.dispatch import run_parallel  # Ray is imported only for parallel runs

            run_parallel(spec, study, storage, prepared, artifact_dir, on_trial, out)
        else:
            run_in_process(spec, study, space, prepared, artifact_dir, on_trial)
    summary = summarize(study, spec, artifact_dir, failures.reason)
    print_summary(summary, out)
    return summary


def run_in_process(spec: RunSpec, study: optuna.Study, space: Space, prepared: PreparedData, artifact_dir: str, on_trial) -> None:
    """One worker: this process trains each trial itself through study.optimize."""
    set_threads(spec.threads)
    context = TrialContext(
        space=space,
        data=prepared.tensors,
        data_hash=prepared.digits.data_hash,
        epochs=spec.epochs,
        base_seed=spec.seed,
        artifact_store=open_artifact_store(artifact_dir),
        trial_timeout=spec.trial_timeout,
    )

    def stop_if_asked(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial(study, trial):
            study.stop()

    try:
        with HideInterruptedTrial():
            study.optimize(
                make_objective(context),
                timeout=spec.timeout,
                catch=(Exception,),
                callbacks=[MaxTrialsCallback(spec.trials, states=FINISHED), stop_if_asked],
            )
    except KeyboardInterrupt:
        retry_interrupted(study)
        raise


def retry_interrupted(study: optuna.Study) -> None:
    """Enqueue the params of the trial Ctrl-C cut short, so the next run trains it again, as Ray runs do."""
    last = study.get_trials(deepcopy=False)[-1:]
    if last and last[0].user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED:
        enqueue_retry(study, last[0])


def summarize(study: optuna.Study, spec: RunSpec, artifact_dir: str, stopped_early: str | None) -> RunSummary:
    counts = count_states(study)
    try:
        best = study.best_trial
        best_trial, best_value = best.number, best.value
    except ValueError:
        best_trial, best_value = None, None
    return RunSummary(
        study_name=study.study_name,
        storage=spec.storage,
        artifact_dir=artifact_dir,
        counts={state.name.lower(): n for state, n in counts.items() if n},
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
    out.write(f"storage {redacted(summary.storage)}; artifacts in {summary.artifact_dir}\n")
    out.write(f"browse it: {dashboard_command(summary.storage, summary.artifact_dir)}\n")
