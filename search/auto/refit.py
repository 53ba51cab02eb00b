"""The final training: a chosen config retrained on every labelled digit (training and validation rows).

The search trains proxies on the training rows for a few epochs so that they can be compared on
the validation rows; the submission deserves models trained on all the labelled digits, for as
many epochs as the budget kept for them. Each keeps its own recipe (optimizer, schedule,
augmentation): the schedules are set by the run's total steps, so a longer run is a proper one.

A run cut off by its time limit would be lost whole (its schedule set for more steps), so the
first epoch is timed: when the run would not fit, or when it would leave room for half as many
epochs again, it starts again at the number of epochs that fits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from search.auto.plan import MIN_REFIT_EPOCHS
from search.train.models import build_model
from search.train.prepared import PreparedData
from search.train.trainer import EpochReport, OutOfTime, TrainingData, train
from spaces import Space

PACE_MARGIN = 1.1  # epochs after the first may run a little slower (a busier machine)


class OffPace(Exception):
    """The first epoch's time says another number of epochs fits the time limit."""

    def __init__(self, epoch_seconds: float) -> None:
        super().__init__(f"{epoch_seconds:.1f}s an epoch")
        self.epoch_seconds = epoch_seconds


def fitting_epochs(seconds: float, epoch_seconds: float) -> int:
    return math.floor(seconds / (epoch_seconds * PACE_MARGIN))


@dataclass(frozen=True)
class Refitted:
    """A model retrained on all labelled digits, or why it is not (then its proxy stands in)."""

    label: str  # study#trial
    epochs: int
    seconds: float
    state: dict[str, torch.Tensor] | None
    test_probs: np.ndarray | None  # (T, 10) float32
    problem: str | None = None


def all_labelled(prepared: PreparedData) -> TrainingData:
    """Training data of every labelled digit; the validation rows stay as the (no longer held-out) monitor."""
    digits, tensors = prepared.digits, prepared.tensors
    return TrainingData(
        train_images=torch.from_numpy(np.ascontiguousarray(digits.train_images)).unsqueeze(1).to(tensors.device),
        train_labels=torch.from_numpy(np.ascontiguousarray(digits.train_labels)).to(tensors.device),
        val_images=tensors.val_images,
        val_labels=tensors.val_labels,
        test_images=tensors.test_images,
    )


def refit(space: Space, params: dict[str, Any], seed: int, data: TrainingData, epochs: int, label: str, time_limit: float) -> Refitted:
    """Retrain the config of `params` from scratch on `data` within `time_limit` seconds: `epochs` epochs,
    or as many as its first epoch's pace says fit; a run that still overruns gives up, saying so."""
    started = time.monotonic()
    try:
        return _refit(space, params, seed, data, epochs, label, time_limit, check_pace=True)
    except OffPace as pace:
        left = time_limit - (time.monotonic() - started)
        fitting = fitting_epochs(left, pace.epoch_seconds)
        if fitting < MIN_REFIT_EPOCHS:
            return Refitted(label, 0, time.monotonic() - started, None, None, f"{pace} leaves time for {fitting} epochs, under {MIN_REFIT_EPOCHS}")
        return _refit(space, params, seed, data, fitting, label, left, check_pace=False)


def _refit(space: Space, params: dict[str, Any], seed: int, data: TrainingData, epochs: int, label: str, time_limit: float, check_pace: bool) -> Refitted:
    candidate = space.candidate_from_params(params)
    model = build_model(space, candidate, seed).to(data.device)

    def on_epoch(report: EpochReport) -> None:
        if not check_pace or report.epoch != 1:
            return
        fitting = fitting_epochs(time_limit - report.seconds, report.seconds)
        if report.seconds * epochs * PACE_MARGIN > time_limit or fitting >= 1.5 * epochs:
            raise OffPace(report.seconds)

    try:
        result = train(model, data, candidate.train, epochs=epochs, seed=seed, on_epoch=on_epoch, time_limit=time_limit)
    except OutOfTime as err:
        return Refitted(label, epochs, time_limit, None, None, f"out of its {time_limit:.0f}s: {err}")
    state = {name: tensor.detach().cpu() for name, tensor in result.model.state_dict().items()}
    return Refitted(label, epochs, result.train_seconds, state, result.test_probs)
