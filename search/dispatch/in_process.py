"""One worker: this process trains each trial itself through study.optimize."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial

from search.config import TrialJob
from search.study.objective import TrialContext, enqueue_retry, make_objective
from search.study.progress import HideInterruptedTrial
from search.study.states import FINISHED
from search.study.trial_attrs import FAIL_REASON_ATTR, INTERRUPTED, RETRY_OF_ATTR
from search.train.allocator import keep_freed_memory
from search.train.device import set_threads
from search.train.trainer import TrainingData


def run_in_process(
    job: TrialJob,
    study: optuna.Study,
    data: TrainingData,
    target: int,
    timeout: float | None,
    on_trial: Callable[[optuna.Study, FrozenTrial], bool],
) -> None:
    """Train trials here until the study holds `target` finished ones (or `timeout` or on_trial says stop)."""
    set_threads(job.threads)
    keep_freed_memory()
    context = TrialContext.from_job(job, data)

    def stop_if_asked(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_trial(study, trial):
            study.stop()

    try:
        with HideInterruptedTrial():
            study.optimize(
                make_objective(context),
                timeout=timeout,
                catch=(Exception,),
                callbacks=[MaxTrialsCallback(target, states=FINISHED), stop_if_asked],
            )
    except KeyboardInterrupt:
        retry_interrupted(study)
        raise


def retry_interrupted(study: optuna.Study) -> None:
    """Enqueue the params of every trial Ctrl-C cut short that no trial retries yet, so the next run trains them first."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    for trial in trials:
        if trial.user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED and trial.number not in retried:
            enqueue_retry(study, trial)
