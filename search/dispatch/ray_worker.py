"""What a Ray worker process does for one trial: rebuild its context once, run the trial, tell the study.

A worker keeps its data tensors, space and study handle between trials (Ray reuses worker
processes), so the data set crosses from the object store to the device once per process.
"""

from __future__ import annotations

import functools

import numpy as np
import optuna
import ray
import torch
from optuna.trial import TrialState

from search.config import TrialJob
from search.study.objective import TrialContext, make_objective
from search.study.optuna_internals import heartbeat_thread, study_storage
from search.study.progress import quiet_optuna
from search.study.setup import make_pruner, make_sampler
from search.study.storage import open_storage, retry_on_database_errors
from search.train.allocator import keep_freed_memory
from search.train.device import select_device, set_threads
from search.train.trainer import TrainingData


def assigned_gpu_ids() -> tuple[str, ...]:
    """The GPUs Ray gave this task (it also set CUDA_VISIBLE_DEVICES to them)."""
    try:
        return tuple(str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
    except Exception:  # not inside a Ray task
        return ()


def assigned_cpus() -> int:
    """The CPUs Ray gave this task, as a thread count (at least 1)."""
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


ARRAY_NAMES = ("train_images", "train_labels", "val_images", "val_labels", "test_images")
_tensors_by_key: dict[str, TrainingData] = {}


def tensors_for(data_key: str, arrays: dict[str, np.ndarray], device: torch.device) -> TrainingData:
    """The device tensors of the shared arrays, built on this process's first trial and kept."""
    data_key = f"{data_key}@{device}"
    if data_key not in _tensors_by_key:
        _tensors_by_key.clear()  # one data set per process
        # the object store hands out read-only views; the copy is made once per process
        _tensors_by_key[data_key] = TrainingData.from_numpy(*(np.array(arrays[name]) for name in ARRAY_NAMES), device)
    return _tensors_by_key[data_key]


@functools.lru_cache(maxsize=4)
def _storage(url: str) -> optuna.storages.BaseStorage:
    return open_storage(url)


def load_study_for_trial(job: TrialJob, trial_number: int) -> optuna.Study:
    """The study as this trial sees it, with a sampler seeded per trial so workers never draw alike."""
    study = optuna.load_study(
        study_name=job.study_name,
        storage=_storage(job.storage),
        sampler=make_sampler(job.base_seed + trial_number, job.sampler, job.pruner),
        pruner=make_pruner(job.pruner, job.epochs),
    )
    study.get_trials(deepcopy=False)  # fills the storage cache that Trial(study, id) relies on
    return study


def run_trial(job: TrialJob, trial_id: int, trial_number: int, arrays: dict[str, np.ndarray]) -> str:
    """Run the already-created trial `trial_id` to its end, record its state in the study, and return the state's name."""
    quiet_optuna()
    keep_freed_memory()
    set_threads(job.threads or assigned_cpus())
    gpu_ids = assigned_gpu_ids()
    # Ray narrowed CUDA_VISIBLE_DEVICES to this task's GPUs; a task given none trains on the CPU
    device = select_device("cuda" if gpu_ids and torch.cuda.is_available() else "cpu")
    study = load_study_for_trial(job, trial_number)
    context = TrialContext.from_job(job, tensors_for(f"{job.data_hash}:{job.split}", arrays, device))
    trial = optuna.trial.Trial(study, trial_id)
    trial.set_user_attr("ray_node", ray.get_runtime_context().get_node_id())
    if gpu_ids:
        trial.set_user_attr("gpu_ids", list(gpu_ids))
    objective = make_objective(context)
    with heartbeat_thread(trial_id, study_storage(study)):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state, values = TrialState.PRUNED, None
        except Exception:  # recorded by the objective as fail_reason; the study goes on
            state, values = TrialState.FAIL, None
        else:
            state, values = TrialState.COMPLETE, [value]
    retry_on_database_errors(lambda: study.tell(trial, values, state=state, skip_if_finished=True))
    return state.name
