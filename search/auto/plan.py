"""How `auto` spends its budget, as pure functions of measured costs: no training, no I/O here.

The budget is split once, at the start: the final phase (ensemble, final training, report) is
reserved from measured costs, and the rest goes to the search. Every family runs its references
first, in half the search time; their epochs are sized so that they fit. Then the search runs in
rounds of successive halving over families: each round gives the families still in it equal slices
of the round's time, and the worse half (by what each adds to the greedy ensemble, then by its
best validation accuracy) leaves after the round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search.study.rungs import climb, ladder

# Share of the budget kept for the final training on all labelled digits, when it fits at all: one
# bn-cnn trained 12 epochs on all of Kaggle's digits scored 99.58% on the hidden labels, above a
# whole CPU hour of 6-epoch proxies (issue 13), so the final training gets a large share.
REFIT_SHARE = 0.4
# Share of the search time for the families' references, the strongest starting points.
REFERENCE_SHARE = 0.5
# Seconds kept for building the ensemble and writing the submission and report (stored
# probabilities only: measured at 5-20 s on Kaggle's files).
FINAL_SECONDS = 30.0
MAX_SEARCH_EPOCHS = 10
MIN_REFIT_EPOCHS = 3
MAX_REFIT_EPOCHS = 40  # the strongest public notebooks trained 30 to 45
MAX_REFIT_MODELS = 3
# A trial's recorded speed counts its training steps only, and each retraining epoch also validates:
# retraining is planned at this many times that pace (its first epoch then corrects the plan).
REFIT_TIME_SAFETY = 1.2


@dataclass(frozen=True)
class FamilyCost:
    """A family's measured training speed on this device: its slowest reference's, and how many references it has."""

    family: str
    images_per_second: float
    references: int = 1

    def epoch_seconds(self, images: int) -> float:
        return images / self.images_per_second

    def trial_seconds(self, epochs: int, images: int) -> float:
        """A trial that climbs every rung (as the references do) on `images` training digits."""
        return epochs * self.epoch_seconds(images) * climb(images)

    def first_rung_seconds(self, epochs: int, images: int) -> float:
        """The cheapest rung of such a trial: what a sampled config trains before it can be stopped."""
        return self.epoch_seconds(ladder(epochs, images)[0].images)


@dataclass(frozen=True)
class Plan:
    search_seconds: float
    refit_seconds: float  # 0: no final training
    final_seconds: float
    epochs: dict[str, int]  # family -> epochs of each search trial
    rounds: int
    refit_note: str  # why there is no final training, or how it was sized


def plan_budget(left: float, costs: list[FamilyCost], train_images: int, all_images: int, refit: bool) -> Plan:
    """Split the `left` seconds between search, final training and the final phase."""
    final = min(FINAL_SECONDS, 0.1 * left)
    # the final training retrains the members the ensemble picks; the fastest family's could at least run
    fastest_full_epoch = min(cost.epoch_seconds(all_images) for cost in costs)
    refit_seconds, note = 0.0, "no final training (--no-refit)"
    if refit:
        share = REFIT_SHARE * left
        if share >= MIN_REFIT_EPOCHS * REFIT_TIME_SAFETY * fastest_full_epoch:
            refit_seconds = share
            note = f"{share:.0f}s kept for training the chosen models on all {all_images:,} labelled digits"
        else:
            note = (
                f"no final training: {MIN_REFIT_EPOCHS} epochs on all {all_images:,} digits would take "
                f"{MIN_REFIT_EPOCHS * REFIT_TIME_SAFETY * fastest_full_epoch:.0f}s, more than the {share:.0f}s it could have"
            )
    search = max(0.0, left - final - refit_seconds)
    # each family's references share REFERENCE_SHARE of the search: that sets the epochs of its study,
    # so that its references fit, climbing every rung; sampled trials then train as long
    per_family = reference_seconds(search, len(costs))
    epochs = {
        cost.family: max(1, min(MAX_SEARCH_EPOCHS, math.floor(per_family / (cost.references * cost.trial_seconds(1, train_images)))))
        for cost in costs
    }
    return Plan(search, refit_seconds, final, epochs, rounds_for(len(costs)), note)


def reference_seconds(search_seconds: float, families: int) -> float:
    """Each family's part of the reference phase: REFERENCE_SHARE of the search, shared equally."""
    return REFERENCE_SHARE * search_seconds / max(1, families)


def round_share(left: float, rounds: int, round_number: int, families: int) -> float:
    """Each family's slice in round `round_number` (from 1): the rounds still to come share `left` equally."""
    return left / (rounds - round_number + 1) / families


def rounds_for(families: int) -> int:
    """Rounds of successive halving until one family is left: 4 -> 3 (4, 2, 1), 1 -> 1."""
    return 1 + math.ceil(math.log2(families)) if families > 1 else 1


def survivors(scores: dict[str, tuple[float, float]]) -> list[str]:
    """The better half of the families (at least one): scores are (share of the ensemble's weight, best accuracy)."""
    ranked = sorted(scores, key=lambda family: (-scores[family][0], -scores[family][1], family))
    return ranked[: max(1, math.ceil(len(ranked) / 2))]


def refit_epochs(seconds: float, epoch_seconds: list[float], least: int = MIN_REFIT_EPOCHS) -> int:
    """Epochs for each of the models to retrain so that all of them fit in `seconds` (0 if under `least`)."""
    total = REFIT_TIME_SAFETY * sum(epoch_seconds)
    if total <= 0:
        return 0
    epochs = min(MAX_REFIT_EPOCHS, math.floor(seconds / total))
    return epochs if epochs >= max(least, MIN_REFIT_EPOCHS) else 0


def choose_refit(weights: list[float], epoch_seconds: list[float], seconds: float, least: int = MIN_REFIT_EPOCHS) -> tuple[list[int], int]:
    """Which members (indices, heaviest first) to retrain and for how many epochs.

    A retraining shorter than `least` epochs (the search trained its proxies that long) would not
    be worth it, so members are dropped from the lightest until the rest each get that many; at
    most MAX_REFIT_MODELS are kept. ([], 0) when not even the heaviest fits.
    """
    order = sorted(range(len(weights)), key=lambda i: -weights[i])[:MAX_REFIT_MODELS]
    while order:
        epochs = refit_epochs(seconds, [epoch_seconds[i] for i in order], least)
        if epochs:
            return order, epochs
        order = order[:-1]
    return [], 0
