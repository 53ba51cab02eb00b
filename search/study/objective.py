"""objective(trial): suggest a candidate, build it, train it with pruning, store its artifacts."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.artifacts._protocol import ArtifactStore

from search.config import TrialJob
from search.study.artifacts import open_artifact_store, store_trial_artifacts
from search.study.memory import check_fits
from search.study.trial_attrs import EPOCHS_ATTR, FAIL_REASON_ATTR, HOSTNAME_ATTR, INTERRUPTED, PID_ATTR, PRUNED_REASON_ATTR
from search.train.models import build_model, count_parameters
from search.train.trainer import EpochReport, OutOfTime, TrainingData, train
from spaces import Space, load_space


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
    trials_sharing_memory: int = 1  # trials that may run at once on this trial's device (see search.study.memory)
    on_epoch: Callable[[optuna.Trial, EpochReport], None] | None = None  # e.g. the live progress line

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
            trials_sharing_memory=job.trials_sharing_memory,
            on_epoch=on_epoch,
        )


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
            reason = f"over --trial-timeout {context.trial_timeout:g}s: {err}"
            trial.set_user_attr(PRUNED_REASON_ATTR, reason)
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON_ATTR, INTERRUPTED)
            raise
        except Exception as err:  # the trial fails alone; the reason is kept for the report
            trial.set_user_attr(FAIL_REASON_ATTR, f"{type(err).__name__}: {err}"[:500])
            raise

    return objective


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
    model = build_model(context.space, candidate, seed)
    trial.set_user_attr("params", count_parameters(model))
    # before the model reaches the device: a config too big for it fails alone, with both figures
    needed = check_fits(model, candidate.train.batch_size, device, context.trials_sharing_memory)
    if needed is not None:
        trial.set_user_attr("memory_mb", round(needed / 1e6, 1))
    model.to(device)

    def on_epoch(report: EpochReport) -> None:
        trial.set_user_attr("images_per_second", round(report.images_per_second, 1))
        trial.set_user_attr("train_seconds", round(report.seconds, 2))
        trial.report(report.val_accuracy, report.epoch)
        if context.on_epoch is not None:
            context.on_epoch(trial, report)
        # a trial that trained its whole budget completes: pruning it then would only throw its weights away
        if report.epoch < context.epochs and trial.should_prune():
            raise optuna.TrialPruned(f"val accuracy {report.val_accuracy:.4f} at epoch {report.epoch}")

    result = train(
        model, context.data, candidate.train, epochs=context.epochs, seed=seed, on_epoch=on_epoch,
        time_limit=context.trial_timeout,
    )
    metadata = {"family": candidate.family, "params": trial.params, "seed": seed, "data_hash": context.data_hash}
    store_trial_artifacts(trial, context.artifact_store, result.model, metadata, result.val_probs, result.test_probs)
    trial.set_user_attr("val_loss", round(result.val_loss, 6))
    return result.val_accuracy
