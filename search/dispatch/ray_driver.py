"""Trials in parallel through Ray: one task per trial, each with its own CPU threads and GPU share.

The driver owns the count: it creates each trial (`study.ask`) before handing it to a worker and
never has more in flight than the trials still missing, so a study ends with exactly N finished
trials however many workers run. A trial whose worker or node dies is marked FAIL and enqueued
again with the same params; a trial that raises fails alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import optuna
import ray
import torch
from optuna.trial import FrozenTrial, TrialState

from search.config import RunSpec, TrialJob
from search.dispatch.ray_worker import run_trial
from search.errors import UserError
from search.study.objective import enqueue_retry
from search.study.states import FINISHED
from search.study.storage import parse_storage_url, retry_on_database_errors
from search.study.trial_attrs import FAIL_REASON_ATTR, INTERRUPTED
from search.train.prepared import PreparedData

WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Resources:
    workers: int
    cpus_per_trial: float
    gpus_per_trial: float


def connect_ray(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local runtime sized to this machine; True if started here."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": True, "logging_level": "warning", "configure_logging": True}
    if address is None:
        # "local": a fresh runtime of our own, even where `ray start` left a cluster running
        ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), **quiet)
        return True
    try:
        ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise UserError(f"--address {address!r}: cannot join the Ray cluster ({reason}); start it with `ray start --head` or check the address") from None
    return False


def plan_resources(workers: int, cpus_per_trial: float | None, gpus_per_trial: float | None) -> Resources:
    """Fill the unset shares from what the cluster has: all GPUs used, CPUs split between workers."""
    cluster = ray.cluster_resources()
    cpus, gpus = cluster.get("CPU", 1), cluster.get("GPU", 0)
    if gpus_per_trial is None:
        gpus_per_trial = 0.0 if gpus == 0 else min(1.0, gpus / workers)
    if cpus_per_trial is None:
        cpus_per_trial = max(1, int(cpus // workers))
    if gpus_per_trial > gpus:
        raise UserError(f"--gpus-per-trial {gpus_per_trial} but the Ray cluster has {gpus:g} GPU(s); lower it or add GPUs")
    if cpus_per_trial > cpus:
        raise UserError(f"--cpus-per-trial {cpus_per_trial} but the Ray cluster has {cpus:g} CPU(s); lower it")
    return Resources(workers, cpus_per_trial, gpus_per_trial)


def cluster_node_count() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


class ParallelRun:
    """The driver loop: keep `workers` trials in flight until the study holds `target` finished trials."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        job: TrialJob,
        arrays: ray.ObjectRef,
        resources: Resources,
        target: int,
        timeout: float | None,
        on_trial: Callable[[optuna.Study, FrozenTrial], bool],
    ) -> None:
        self.study, self.storage, self.job, self.arrays = study, storage, job, arrays
        self.resources, self.target, self.timeout = resources, target, timeout
        self.on_trial = on_trial  # returns True to stop starting trials
        self.remote = ray.remote(max_retries=0)(run_trial).options(
            num_cpus=resources.cpus_per_trial, num_gpus=resources.gpus_per_trial
        )
        self.in_flight: dict[ray.ObjectRef, int] = {}  # task -> trial id

    def finished_count(self) -> int:
        return retry_on_database_errors(lambda: len(self.study.get_trials(deepcopy=False, states=FINISHED)))

    def run(self) -> None:
        started = time.monotonic()
        stopping = False
        try:
            while True:
                finished = self.finished_count()
                if self.timeout is not None and time.monotonic() - started > self.timeout:
                    stopping = True
                while not stopping and len(self.in_flight) < self.resources.workers and finished + len(self.in_flight) < self.target:
                    self.launch()
                if not self.in_flight:
                    return
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=WAIT_SECONDS)
                for ref in ready:
                    stopping = self.collect(ref) or stopping
        except KeyboardInterrupt:
            self.abandon_in_flight(f"{INTERRUPTED} on the driver")
            raise

    def launch(self) -> None:
        trial = retry_on_database_errors(self.study.ask)
        ref = self.remote.remote(self.job, trial._trial_id, trial.number, self.arrays)
        self.in_flight[ref] = trial._trial_id

    def collect(self, ref: ray.ObjectRef) -> bool:
        trial_id = self.in_flight.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as err:  # the worker process or its node died, or the task broke
            self.settle_lost_trial(trial_id, f"worker lost: {type(err).__name__}: {' '.join(str(err).split())[:300]}")
        frozen = retry_on_database_errors(lambda: self.storage.get_trial(trial_id))
        return self.on_trial(self.study, frozen)

    def settle_lost_trial(self, trial_id: int, reason: str) -> None:
        """Mark a trial whose worker vanished FAIL, and enqueue its params again so nothing is lost."""

        def settle() -> None:
            frozen = self.storage.get_trial(trial_id)
            if frozen.state != TrialState.RUNNING:
                return  # it reached the study before its worker went away
            self.storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
            self.study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            enqueue_retry(self.study, frozen)

        retry_on_database_errors(settle)

    def abandon_in_flight(self, reason: str) -> None:
        for ref, trial_id in list(self.in_flight.items()):
            ray.cancel(ref, force=True)
            self.settle_lost_trial(trial_id, reason)
        self.in_flight.clear()


def run_parallel(
    spec: RunSpec,
    job: TrialJob,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    prepared: PreparedData,
    on_trial: Callable[[optuna.Study, FrozenTrial], bool],
    out: TextIO,
) -> None:
    """Run the study's missing trials on Ray workers; shuts down only a runtime it started itself."""
    started_here = connect_ray(spec.address)
    try:
        if parse_storage_url(spec.storage).get_backend_name() == "sqlite" and cluster_node_count() > 1:
            raise UserError(
                "a SQLite file can't be shared by the nodes of a Ray cluster; "
                "use --storage postgresql://user@host/db (or mysql://...) reachable from every node"
            )
        resources = plan_resources(spec.workers, spec.cpus_per_trial, spec.gpus_per_trial)
        threads = job.threads or max(1, int(resources.cpus_per_trial))
        out.write(
            f"Ray: {resources.workers} workers on {cluster_node_count()} node(s), each trial with "
            f"{threads} CPU thread(s) and {resources.gpus_per_trial:g} GPU\n"
        )
        arrays = ray.put(prepared.arrays())
        ParallelRun(study, storage, job, arrays, resources, spec.trials, spec.timeout, on_trial).run()
    finally:
        if started_here:
            ray.shutdown()
