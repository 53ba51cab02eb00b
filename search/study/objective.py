"""objective(trial): suggest a candidate, build it, train it with pruning, store its artifacts."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState
from torch import nn

from search.config import RUNG_PRUNER, Deadline, TrialJob
from search.errors import write_fault
from search.study.artifacts import open_artifact_store, store_trial_artifacts
from search.study.memory import check_fits
from search.study.optuna_internals import ArtifactStore
from search.study.rungs import Rung, RungData, ladder
from search.study.trial_attrs import (
    EPOCHS_ATTR,
    FAIL_REASON_ATTR,
    FORWARD_FLOPS_ATTR,
    HOSTNAME_ATTR,
    IMAGES_TRAINED_ATTR,
    INTERRUPTED,
    PID_ATTR,
    PRUNED_REASON_ATTR,
    REFERENCE_ATTR,
    RUNG_ATTR,
    WRITE_FAULT_ATTR,
)
from search.train.cost import Throughput, forward_flops
from search.train.models import build_model, count_parameters
from search.train.trainer import EpochReport, OutOfTime, TrainingData, TrainResult, train
from spaces import Space, load_space
from spaces.training import TrainConfig


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its params; built once per process, shared by all trials."""

    space: Space
    data: TrainingData
    data_hash: str
    epochs: int
    base_seed: int
    artifact_store: ArtifactStore
    trial_timeout: float | None = None  # seconds of training after which a trial is pruned, mid-epoch if need be
    deadline: Deadline | None = None  # no trial trains past it (the end of auto's phase)
    climb_references: bool = True  # False: a reference trains its full rung only (no sampled config needs its bar)
    trials_sharing_memory: int = 1  # trials that may run at once on this trial's device (see search.study.memory)
    on_epoch: Callable[[optuna.Trial, EpochReport], None] | None = None  # e.g. the live progress line
    rung_data: RungData | None = None  # set when the study prunes on rungs (search.study.rungs), not on epochs

    @classmethod
    def from_job(
        cls, job: TrialJob, data: TrainingData, on_epoch: Callable[[optuna.Trial, EpochReport], None] | None = None
    ) -> TrialContext:
        """The context the in-process loop and every Ray worker build from the run's one TrialJob."""
        return cls(
            space=load_space(job.space),
            data=data,
            data_hash=job.data_hash,
            epochs=job.epochs,
            base_seed=job.base_seed,
            artifact_store=open_artifact_store(job.artifacts),
            trial_timeout=job.trial_timeout,
            deadline=job.deadline,
            climb_references=job.climb_references,
            trials_sharing_memory=job.trials_sharing_memory,
            on_epoch=on_epoch,
            rung_data=RungData(data) if job.pruner == RUNG_PRUNER else None,
        )

    def rungs(self, reference: bool = False) -> tuple[Rung, ...]:
        """What a trial trains: the whole budget at once when pruning is on epochs, else its ladder of rungs
        (a reference's full rung alone when references don't climb)."""
        full = Rung(1, len(self.data.train_labels), self.epochs)
        if self.rung_data is None:
            return (full,)
        rungs = ladder(self.epochs, full.rows)
        return rungs[-1:] if reference and not self.climb_references else rungs

    def trial_deadline(self) -> Deadline | None:
        """For a trial that begins training now: the earlier of its --trial-timeout and the run's deadline (None: no limit)."""
        if self.trial_timeout is None:
            return self.deadline
        return Deadline.after(self.trial_timeout).earlier(self.deadline)

    def time_limit_text(self) -> str:
        """What bounds a trial's training, for a pruned trial's reason."""
        limits = [] if self.trial_timeout is None else [f"--trial-timeout {self.trial_timeout:g}s"]
        return " and ".join(limits + ([] if self.deadline is None else ["the run's end"]))


def make_objective(context: TrialContext):
    """The function handed to study.optimize; maximises validation accuracy.

    Whatever fails inside a trial (suggesting, building, training, storing its artifacts) fails
    that trial alone, with the reason in its `fail_reason` attr.
    """

    def objective(trial: optuna.Trial) -> float:
        try:
            return _train_trial(trial, context)
        except optuna.TrialPruned:
            raise
        except OutOfTime as err:
            reason = f"over {context.time_limit_text()}: {err}"
            trial.set_user_attr(PRUNED_REASON_ATTR, reason)
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON_ATTR, INTERRUPTED)
            raise
        except Exception as err:  # the trial fails alone; the reason is kept for the report
            trial.set_user_attr(FAIL_REASON_ATTR, f"{type(err).__name__}: {err}"[:500])
            fault = write_fault(err, {})
            if fault is not None:  # every later trial would train only to fail the same way
                trial.set_user_attr(WRITE_FAULT_ATTR, fault)
            raise

    return objective


def family_pace(trial: optuna.Trial, family: str, device: str) -> Throughput | None:
    """The pace of `family` on this device, from its finished trials' FLOPs and images/s (None: none yet)."""
    return Throughput.from_runs(
        (t.user_attrs[FORWARD_FLOPS_ATTR], t.user_attrs["images_per_second"])
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if t.user_attrs.get("family") == family
        and t.user_attrs.get("device") == device
        and FORWARD_FLOPS_ATTR in t.user_attrs
        and "images_per_second" in t.user_attrs
    )


def check_can_finish(trial: optuna.Trial, pace: Throughput, flops: int, rung: Rung, seconds: float) -> None:
    """Prune, before it starts, a rung that `pace` says cannot end in `seconds`."""
    predicted = pace.seconds(flops, rung.images)
    if predicted > seconds:
        reason = f"predicted {predicted:.0f}s for {rung.rows} rows x {rung.epochs} epochs, over the {seconds:.0f}s left of its time"
        trial.set_user_attr(PRUNED_REASON_ATTR, reason)
        raise optuna.TrialPruned(reason)


def _train_trial(trial: optuna.Trial, context: TrialContext) -> float:
    seed = context.base_seed + trial.number
    device = context.data.device
    for key, value in {
        HOSTNAME_ATTR: socket.gethostname(),
        PID_ATTR: os.getpid(),
        "device": str(device),
        "seed": seed,
        "data_hash": context.data_hash,
        EPOCHS_ATTR: context.epochs,
    }.items():
        trial.set_user_attr(key, value)

    candidate = context.space.suggest(trial)
    trial.set_user_attr("family", candidate.family)
    reference = context.space.reference_name(trial.params)
    if reference is not None:
        trial.set_user_attr(REFERENCE_ATTR, reference)
    model = build_model(context.space, candidate, seed)
    trial.set_user_attr("params", count_parameters(model))
    flops = forward_flops(model)
    if flops is not None:
        trial.set_user_attr(FORWARD_FLOPS_ATTR, flops)
    # before the model reaches the device: a config too big for it fails alone, with both figures
    needed = check_fits(model, candidate.train.batch_size, device, context.trials_sharing_memory)
    if needed is not None:
        trial.set_user_attr("memory_mb", round(needed / 1e6, 1))

    # read once a trial: the study's other trials barely move the family's median pace meanwhile
    deadline = context.trial_deadline()
    pace = family_pace(trial, candidate.family, str(device)) if deadline is not None and flops is not None else None
    started = time.perf_counter()
    rungs = context.rungs(reference is not None)
    images = 0
    for index, rung in enumerate(rungs):
        if index:
            model = build_model(context.space, candidate, seed)  # every rung trains from the same fresh start
        if pace is not None:
            check_can_finish(trial, pace, flops, rung, deadline.left())
        if context.rung_data is not None:
            trial.set_user_attr(RUNG_ATTR, f"{rung.rows} rows x {rung.epochs} epochs")
        last = index == len(rungs) - 1
        result = _train_rung(
            trial, context, model.to(device), candidate.train, rung, seed, images, started, deadline, last
        )
        images += rung.images
        if context.rung_data is not None:
            trial.report(result.val_accuracy, rung.step)  # the last rung's too: the report draws every rung
            # a reference climbs every rung too, never pruned: asking the pruner records its accuracy at the
            # rung, the bar a sampled config must clear (else the first sampled config is promoted unopposed)
            if index < len(rungs) - 1 and trial.should_prune() and reference is None:
                raise optuna.TrialPruned(
                    f"val accuracy {result.val_accuracy:.4f} on {rung.rows} rows x {rung.epochs} epochs"
                )
    metadata = {"family": candidate.family, "params": trial.params, "seed": seed, "data_hash": context.data_hash}
    store_trial_artifacts(trial, context.artifact_store, result.model, metadata, result.val_probs, result.test_probs)
    trial.set_user_attr("val_loss", round(result.val_loss, 6))
    return result.val_accuracy


def _train_rung(
    trial: optuna.Trial,
    context: TrialContext,
    model: nn.Module,
    config: TrainConfig,
    rung: Rung,
    seed: int,
    images_before: int,
    started: float,
    deadline: Deadline | None,
    last: bool,
) -> TrainResult:
    """One complete training of `rung`; with an epoch pruner (no rung data) every epoch is reported and may end the trial.

    A rung is judged on its end alone: it validates only after its last epoch, and only the last rung,
    whose predictions are stored, predicts the test digits.
    """
    by_epoch = context.rung_data is None
    data = context.data if by_epoch else context.rung_data.rows(rung.rows)

    def on_epoch(report: EpochReport) -> None:
        trial.set_user_attr(IMAGES_TRAINED_ATTR, images_before + report.epoch * rung.rows)
        trial.set_user_attr("images_per_second", round(report.images_per_second, 1))
        trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
        if context.on_epoch is not None:
            context.on_epoch(trial, report)
        if by_epoch:
            trial.report(report.val_accuracy, report.epoch)
            # a trial that trained its whole budget completes: pruning it then would only throw its weights away
            if report.epoch < context.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"val accuracy {report.val_accuracy:.4f} at epoch {report.epoch}")

    return train(
        model,
        data,
        config,
        epochs=rung.epochs,
        seed=seed,
        on_epoch=on_epoch,
        deadline=deadline,
        validate_every_epoch=by_epoch,
        predict_test=last,
    )
