"""One worker: this process trains each trial itself through study.optimize."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial

from search.config import TrialJob
from search.study.objective import TrialContext, make_objective
from search.study.progress import HideInterruptedTrial
from search.study.retries import reconcile_lost_trials, retry_interrupted
from search.study.states import FINISHED
from search.train.allocator import keep_freed_memory
from search.train.device import set_threads
from search.train.trainer import EpochReport, TrainingData


def run_in_process(
    job: TrialJob,
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    data: TrainingData,
    target: int,
    timeout: float | None,
    on_trial: Callable[[optuna.Study, FrozenTrial], bool],
    on_epoch: Callable[[optuna.Trial, EpochReport], None] | None = None,
) -> None:
    """Train trials here until the study holds `target` finished ones (or `timeout` or on_trial says stop)."""
    set_threads(job.threads)
    keep_freed_memory()
    context = TrialContext.from_job(job, data, on_epoch)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        # between trials none of this process's is running: settle those of runs that died meanwhile,
        # before Optuna's own stale check fails them without a reason or a retry
        reconcile_lost_trials(study, storage)
        if on_trial(study, trial):
            study.stop()

    try:
        with HideInterruptedTrial():
            study.optimize(
                make_objective(context),
                timeout=timeout,
                catch=(Exception,),
                callbacks=[MaxTrialsCallback(target, states=FINISHED), after_trial],
            )
    except KeyboardInterrupt:
        retry_interrupted(study)
        raise
