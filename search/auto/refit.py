"""The final training: a chosen config retrained on every labelled digit (training and validation rows).

The search trains proxies on the training rows for a few epochs so that they can be compared on
the validation rows; the submission deserves models trained on all the labelled digits, for as
many epochs as the budget kept for them. Each keeps its own recipe (optimizer, schedule,
augmentation): the schedules are set by the run's total steps, so a longer run is a proper one.
The time-fitted training itself (the first epoch timed, a restart at the epochs that fit) is the
train stage's, search.train.timed, which `digit-search train --budget` uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from search.auto.plan import MAX_REFIT_EPOCHS, MIN_REFIT_EPOCHS
from search.config import Deadline
from search.train.prepared import all_labelled
from search.train.timed import OffPace, fitting_epochs, train_in_time
from search.train.trainer import TrainingData
from spaces import Space

__all__ = ["OffPace", "Refitted", "all_labelled", "fitting_epochs", "refit"]


@dataclass(frozen=True)
class Refitted:
    """A model retrained on all labelled digits, or why it is not (then its proxy stands in)."""

    label: str  # study#trial
    epochs: int
    seconds: float
    state: dict[str, torch.Tensor] | None
    test_probs: np.ndarray | None  # (T, 10) float32
    problem: str | None = None


def refit(
    space: Space, params: dict[str, Any], seed: int, data: TrainingData, epochs: int, label: str, deadline: Deadline
) -> Refitted:
    """Retrain the config of `params` from scratch on `data` by `deadline`: `epochs` epochs, or as many
    as its first epoch's pace says fit; a run that still overruns gives up, saying so."""
    timed = train_in_time(
        space,
        space.candidate_from_params(params),
        seed,
        data,
        epochs,
        deadline,
        least=MIN_REFIT_EPOCHS,
        most=MAX_REFIT_EPOCHS,
    )
    if timed.result is None:
        return Refitted(label, timed.epochs, timed.seconds, None, None, timed.problem)
    state = {name: tensor.detach().cpu() for name, tensor in timed.result.model.state_dict().items()}
    return Refitted(label, timed.epochs, timed.seconds, state, timed.result.test_probs)
