"""Rungs: a sampled trial is screened on cheap, complete trainings before it earns the full one.

With `--pruner rungs` a trial trains up to RUNGS times, each time from a fresh model with a schedule
set by that rung's own length, so a config judged on a cheap rung is judged on a finished run, not
on the high-learning-rate middle of a longer one. Rung r (0 = cheapest) trains 1/REDUCTION^(RUNGS-1-r)
of the images of a full trial. After every rung but the last the trial reports its validation
accuracy at step REDUCTION^r, and Optuna's SuccessiveHalvingPruner (asynchronous successive halving)
keeps it only while it is in the best 1/REDUCTION of the trials that reached that rung.

A full trial costs the sum of its rungs, 1 + 1/3 + 1/9 of a plain one; most sampled trials stop at
rung 0, after 1/9. The references climb every rung too, never pruned: their accuracies at the cheap
rungs are the bar the first sampled configs must clear.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from search.train.trainer import TrainingData

REDUCTION = 3
RUNGS = 3
# Fewer rows than this (about 100 a class) would rank configs on noise: such a rung is skipped.
MIN_RUNG_ROWS = 1_000
# How a cheap rung saves: "rows" trains every epoch on a fixed subset of the rows, "epochs" trains
# fewer epochs on (nearly) all of them.
CUTS = ("rows", "epochs")
DEFAULT_CUT = "rows"
ROWS_SEED = 0  # one subset for the whole study, so every trial is screened on the same rows


@dataclass(frozen=True)
class Rung:
    step: int  # the step its accuracy is reported at: REDUCTION ** its index
    rows: int  # training rows it trains on
    epochs: int

    @property
    def images(self) -> int:
        return self.rows * self.epochs


def ladder(epochs: int, rows: int, cut: str = DEFAULT_CUT, min_rows: int = MIN_RUNG_ROWS) -> tuple[Rung, ...]:
    """The rungs of a trial whose full training is `epochs` epochs of `rows` rows, cheapest first.

    A rung under `min_rows` rows, or one no cheaper than the rung above it, is left out; the last
    rung is always the full training.
    """
    if cut not in CUTS:
        raise ValueError(f"cut must be one of {CUTS}, got {cut!r}")
    full = Rung(REDUCTION ** (RUNGS - 1), rows, epochs)
    rungs = [full]
    for index in range(RUNGS - 2, -1, -1):
        share = REDUCTION ** (RUNGS - 1 - index)  # 3, then 9
        if cut == "rows":
            rung_epochs, rung_rows = epochs, rows // share
        else:
            rung_epochs = max(1, round(epochs / share))
            rung_rows = min(rows, round(rows * epochs / share / rung_epochs))
        rung = Rung(REDUCTION**index, rung_rows, rung_epochs)
        if rung.rows >= min_rows and rung.images < rungs[0].images:
            rungs.insert(0, rung)
    return tuple(rungs)


def climb(rows: int) -> float:
    """The images of a trial that climbs every rung, over those of one full training on `rows` rows (1.44 with three rungs)."""
    return sum(rung.rows for rung in ladder(1, rows)) / rows


class RungData:
    """The study's training data and its fixed row subsets, built once per process and shared by its trials."""

    def __init__(self, data: TrainingData) -> None:
        self.full = data
        generator = torch.Generator().manual_seed(ROWS_SEED)
        self._order = torch.randperm(len(data.train_labels), generator=generator).to(data.device)
        self._subsets: dict[int, TrainingData] = {}

    def rows(self, count: int) -> TrainingData:
        """The first `count` rows of the study's fixed random order (all of them: the data itself)."""
        if count >= len(self.full.train_labels):
            return self.full
        if count not in self._subsets:
            index = self._order[:count]
            self._subsets[count] = TrainingData(
                self.full.train_images[index],
                self.full.train_labels[index],
                self.full.val_images,
                self.full.val_labels,
                self.full.test_images,
            )
        return self._subsets[count]
