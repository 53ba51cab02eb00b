"""Trials in parallel through Ray: one task per trial, each with its own CPU threads and GPU share.

The driver owns the count: it creates each trial (`study.ask`) before handing it to a worker and
never has more in flight than the trials still missing, so a study ends with exactly N finished
trials however many workers run. A trial whose worker or node dies is marked FAIL and enqueued
again with the same params, at most once (search.study.retries); a trial that raises fails alone.
The driver keeps the heartbeats of its trials fresh, so another run sharing the study never takes
a trial waiting for a worker for one whose run is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import optuna
import ray
import torch
from optuna.trial import FrozenTrial

from search.config import RUNG_PRUNER, RunSpec, TrialJob
from search.dispatch.ray_worker import run_trial
from search.errors import UserError
from search.study import optuna_internals as internals
from search.study.progress import Progress, RunningTrial
from search.study.retries import fail_cut_trial, reconcile_lost_trials, record_heartbeats, record_owner
from search.study.states import FINISHED
from search.study.storage import HEARTBEAT_SECONDS, parse_storage_url, retry_on_database_errors
from search.study.trial_attrs import INTERRUPTED
from search.train.prepared import PreparedData

WAIT_SECONDS = 1.0
LIVE_SECONDS = 2.0  # between reads of the running trials for the live line (terminal only)
ADDRESS_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Resources:
    workers: int
    cpus_per_trial: float
    gpus_per_trial: float
    nodes: int = 1
    trials_per_device: int = 1  # trials that may run at once on one machine's RAM, or on one GPU

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_trial))

    def describe(self, threads: int | None) -> str:
        return (
            f"Ray: {self.workers} workers on {self.nodes} node(s), each trial with "
            f"{threads or self.threads} CPU thread(s) and {self.gpus_per_trial:g} GPU"
        )


def check_reachable(address: str) -> None:
    """Refuse an address nothing listens at within seconds: ray.init would retry it for minutes."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_SECONDS).close()
    except OSError as err:
        raise UserError(
            f"--address {address!r}: nothing answers at {host}:{port} ({err.strerror or err}); start the cluster or check the address"
        ) from None


def connect_ray(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local runtime sized to this machine; True if started here."""
    if ray.is_initialized():
        return False
    if address is not None:
        check_reachable(address)
    quiet = {"include_dashboard": False, "log_to_driver": True, "logging_level": "warning", "configure_logging": True}
    if address is None:
        # "local": a fresh runtime of our own, even where `ray start` left a cluster running
        ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), **quiet)
        return True
    try:
        ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise UserError(
            f"--address {address!r}: cannot join the Ray cluster ({reason}); start it with `ray start --head` or check the address"
        ) from None
    return False


def plan_resources(workers: int, cpus_per_trial: float | None, gpus_per_trial: float | None) -> Resources:
    """Fill the unset shares from what the cluster has: all GPUs used, CPUs split between workers.

    A share no node can give is refused: Ray would wait for it forever.
    """
    cluster = ray.cluster_resources()
    cpus, gpus = cluster.get("CPU", 1), cluster.get("GPU", 0)
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    node_cpus = max((node.get("CPU", 0) for node in nodes), default=cpus)
    node_gpus = max((node.get("GPU", 0) for node in nodes), default=gpus)
    if gpus_per_trial is None:
        gpus_per_trial = 0.0 if gpus == 0 else min(1.0, gpus / workers)
    if cpus_per_trial is None:
        cpus_per_trial = max(1, int(cpus // workers))
    if gpus_per_trial > node_gpus:
        raise UserError(
            f"--gpus-per-trial {gpus_per_trial:g} but no node of the Ray cluster has more than {node_gpus:g} GPU(s); lower it or add GPUs"
        )
    if cpus_per_trial > node_cpus:
        raise UserError(
            f"--cpus-per-trial {cpus_per_trial:g} but no node of the Ray cluster has more than {node_cpus:g} CPU(s); lower it"
        )
    if gpus_per_trial > 0:
        per_device = max(1, int(1 / gpus_per_trial)) if gpus_per_trial < 1 else 1
    else:
        per_device = min(workers, max(1, int(node_cpus // cpus_per_trial)))
    return Resources(workers, cpus_per_trial, gpus_per_trial, max(1, len(nodes)), per_device)


def cluster_node_count() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


@contextlib.contextmanager
def ray_cluster(spec: RunSpec) -> Iterator[Resources]:
    """Join or start Ray and check that the run's shares fit it, before anything is written to the study;
    shuts down on leaving only a runtime it started itself."""
    started_here = connect_ray(spec.address)
    try:
        if parse_storage_url(spec.storage).get_backend_name() == "sqlite" and cluster_node_count() > 1:
            raise UserError(
                "a SQLite file can't be shared by the nodes of a Ray cluster; "
                "use --storage postgresql://user@host/db (or mysql://...) reachable from every node"
            )
        yield plan_resources(spec.workers, spec.cpus_per_trial, spec.gpus_per_trial)
    finally:
        if started_here:
            ray.shutdown()


class ParallelRun:
    """The driver loop: keep `workers` trials in flight until the study holds `target` finished trials."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.RDBStorage,
        job: TrialJob,
        arrays: ray.ObjectRef,
        resources: Resources,
        target: int,
        timeout: float | None,
        on_trial: Callable[[optuna.Study, FrozenTrial], bool],
        progress: Progress | None = None,
    ) -> None:
        self.study, self.storage, self.job, self.arrays = study, storage, job, arrays
        self.resources, self.target, self.timeout = resources, target, timeout
        self.on_trial = on_trial  # returns True to stop starting trials
        self.progress = progress
        self.remote = ray.remote(max_retries=0)(run_trial).options(
            num_cpus=resources.cpus_per_trial, num_gpus=resources.gpus_per_trial
        )
        self.in_flight: dict[ray.ObjectRef, int] = {}  # task -> trial id
        self.kept_alive = self.shown = time.monotonic()

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
                while (
                    not stopping
                    and len(self.in_flight) < self.resources.workers
                    and finished + len(self.in_flight) < self.target
                ):
                    self.launch()
                if not self.in_flight:
                    return
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=WAIT_SECONDS)
                for ref in ready:
                    stopping = self.collect(ref) or stopping
                self.keep_alive()
                self.show_running()
        except KeyboardInterrupt:
            self.abandon_in_flight(f"{INTERRUPTED} on the driver")
            raise

    def launch(self) -> None:
        trial = retry_on_database_errors(self.study.ask)
        # tied to this driver until its worker starts: a run that finds it RUNNING can tell whether we live
        trial_id = internals.trial_id(trial)
        retry_on_database_errors(lambda: record_owner(self.storage, trial_id))
        ref = self.remote.remote(self.job, trial_id, trial.number, self.arrays)
        self.in_flight[ref] = trial_id

    def keep_alive(self) -> None:
        """Every heartbeat interval: refresh the heartbeats of our trials (one may still wait for a worker,
        or its worker's heartbeat thread may have died with a database restart) and settle other runs' lost trials."""
        if time.monotonic() - self.kept_alive < HEARTBEAT_SECONDS:
            return
        self.kept_alive = time.monotonic()
        ours = list(self.in_flight.values())
        retry_on_database_errors(lambda: record_heartbeats(self.storage, ours))
        retry_on_database_errors(lambda: reconcile_lost_trials(self.study, self.storage, running_here=ours))

    def show_running(self) -> None:
        if self.progress is None or not self.progress.live or time.monotonic() - self.shown < LIVE_SECONDS:
            return
        self.shown = time.monotonic()
        trials = [
            retry_on_database_errors(lambda: self.storage.get_trial(trial_id))
            for trial_id in sorted(self.in_flight.values())
        ]
        self.progress.show_running(
            [RunningTrial.from_trial(trial, self.job.epochs, self.job.pruner == RUNG_PRUNER) for trial in trials]
        )

    def collect(self, ref: ray.ObjectRef) -> bool:
        trial_id = self.in_flight.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # the task itself raised, outside the objective: no retry
            self.settle(trial_id, f"worker failed: {_one_line(err)}", process_lost=False, retry=False)
        except ray.exceptions.RayError as err:  # the worker process or its node died (OOM kill, SIGKILL, node lost)
            self.settle(trial_id, f"worker lost: {type(err).__name__}: {_one_line(err)}", process_lost=True)
        frozen = retry_on_database_errors(lambda: self.storage.get_trial(trial_id))
        return self.on_trial(self.study, frozen)

    def settle(self, trial_id: int, reason: str, *, process_lost: bool, retry: bool = True) -> None:
        """Fail a trial whose worker is gone, and queue its params again within the bound (unless it reached the study)."""
        retry_on_database_errors(
            lambda: fail_cut_trial(self.study, self.storage, trial_id, reason, process_lost=process_lost, retry=retry)
        )

    def abandon_in_flight(self, reason: str) -> None:
        for ref, trial_id in list(self.in_flight.items()):
            ray.cancel(ref, force=True)
            self.settle(trial_id, reason, process_lost=False)
        self.in_flight.clear()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def run_parallel(
    resources: Resources,
    job: TrialJob,
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    prepared: PreparedData,
    target: int,
    timeout: float | None,
    on_trial: Callable[[optuna.Study, FrozenTrial], bool],
    progress: Progress | None = None,
) -> None:
    """Run the study's missing trials on the Ray workers of `resources` (see ray_cluster)."""
    arrays = ray.put(prepared.arrays())
    ParallelRun(study, storage, job, arrays, resources, target, timeout, on_trial, progress).run()
