"""How should `auto` share its search time between families? A replay of recorded searches.

Reads one finished search per family, each run alone on the same data and split for at least the
replayed budget (the layout `bench/search_efficiency.py --out DIR --searchers rungs` writes), and
replays each way of sharing the search time over the families' recorded timelines: a family given
t seconds holds the trials it had completed t seconds after its first trial started. All strategies
replay the same trials, so they are compared on the same luck.

- equal: every family gets the same share (the old `bench/pipeline.sh`);
- halving: `auto`'s successive halving over families (search.auto.plan): references first, then
  rounds after which the worse half leaves, judged by its share of the greedy ensemble, then its best;
- bandit: the references' share first, then slices of the rest, each to the family whose last slice
  raised the ensemble's accuracy most (one not yet given a slice first);
- best-only: all the time after the references to the family with the best trial after them.

Each strategy's outcome is `auto`'s ensemble of the top ENSEMBLE_TOP completed trials per family
(each member's temperature fitted, then greedy selection), with its weights chosen on one half of the validation digits and scored on the other half (and
the other way round, averaged), so that it is not judged on the noise it was fitted to.

    .venv/bin/python bench/budget_sharing.py --data ../shared/data/digit-recognizer \\
        --runs /tmp/se/cnn /tmp/se/vit /tmp/se/stn --budget 900
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search.auto.plan import round_share, rounds_for, survivors  # noqa: E402
from search.auto.run import ENSEMBLE_TOP  # noqa: E402
from search.ensemble.candidates import load_matching_data, read_stored_probabilities  # noqa: E402
from search.ensemble.selection import Selection, accuracy, apply_temperatures, blend, calibrate, greedy  # noqa: E402
from search.study.artifacts import ARTIFACT_ATTR, open_artifact_store  # noqa: E402

BANDIT_SLICES_PER_FAMILY = 3


@dataclass(frozen=True)
class Finished:
    """A completed trial on its family's own clock."""

    family: str
    label: str
    seconds: float  # since the family's first trial started
    value: float
    val_probs: np.ndarray  # (V, 10)


REFERENCE_SHARE = 0.5  # the references' share of the search in the plan this replay was written for


def reference_seconds(search_seconds: float, families: int) -> float:
    """Each family's part of that plan's reference phase."""
    return REFERENCE_SHARE * search_seconds / max(1, families)


def fit(probs: np.ndarray, labels: np.ndarray) -> tuple[Selection, np.ndarray]:
    """`auto`'s ensemble of (M, V, 10) validation probabilities: the greedy selection over the members at
    their fitted temperatures, and the (M,) temperatures."""
    temperatures = calibrate(probs, labels)
    return greedy(apply_temperatures(probs, temperatures), labels), temperatures


class Replay:
    """The families' recorded timelines, and the ensemble any allocation of seconds would have had."""

    def __init__(self, timelines: dict[str, list[Finished]], labels: np.ndarray) -> None:
        self.timelines = timelines
        self.labels = labels  # (V,)
        halves = np.random.default_rng(0).permutation(len(labels))
        self.halves = (np.sort(halves[: len(labels) // 2]), np.sort(halves[len(labels) // 2 :]))

    def held(self, seconds: dict[str, float]) -> list[Finished]:
        """The top ENSEMBLE_TOP trials of each family completed within its seconds."""
        chosen = []
        for family, trials in self.timelines.items():
            done = [t for t in trials if t.seconds <= seconds.get(family, 0.0)]
            chosen += sorted(done, key=lambda t: -t.value)[:ENSEMBLE_TOP]
        return chosen

    def ensemble(self, seconds: dict[str, float]) -> tuple[float, dict[str, float]]:
        """(greedy ensemble's validation accuracy, each family's share of its weight), fitted on all validation digits."""
        trials = self.held(seconds)
        if not trials:
            return 0.0, {}
        selection = fit(np.stack([t.val_probs for t in trials]), self.labels)[0]
        shares: dict[str, float] = {}
        for trial, weight in zip(trials, selection.weights, strict=True):
            shares[trial.family] = shares.get(trial.family, 0.0) + float(weight)
        return selection.accuracy, shares

    def held_out_accuracy(self, seconds: dict[str, float]) -> float:
        """Weights fitted on one half of the validation digits, scored on the other, both ways, averaged."""
        trials = self.held(seconds)
        if not trials:
            return 0.0
        probs = np.stack([t.val_probs for t in trials])  # (M, V, 10)
        scores = []
        for fitted, judged in (self.halves, self.halves[::-1]):
            selection, temperatures = fit(probs[:, fitted], self.labels[fitted])
            scores.append(
                accuracy(
                    blend(apply_temperatures(probs[:, judged], temperatures), selection.weights), self.labels[judged]
                )
            )
        return float(np.mean(scores))

    def best(self, family: str, seconds: float) -> float:
        return max((t.value for t in self.timelines[family] if t.seconds <= seconds), default=0.0)


def references_first(families: list[str], budget: float) -> dict[str, float]:
    """Every strategy but `equal` starts as `auto` does: each family gets its part of the reference phase."""
    return {family: reference_seconds(budget, len(families)) for family in families}


def equal(replay: Replay, budget: float) -> dict[str, float]:
    return {family: budget / len(replay.timelines) for family in replay.timelines}


def halving(replay: Replay, budget: float) -> dict[str, float]:
    """search.auto.search.search's schedule: references first, then rounds that keep the better half."""
    families = list(replay.timelines)
    given = references_first(families, budget)
    left = budget - sum(given.values())
    rounds = rounds_for(len(families))
    alive = families
    for round_number in range(1, rounds + 1):
        share = round_share(left, rounds, round_number, len(alive))
        for family in alive:
            given[family] += share
        left -= share * len(alive)
        _, shares = replay.ensemble(given)
        alive = survivors({f: (shares.get(f, 0.0), replay.best(f, given[f])) for f in alive})
    return given


def bandit(replay: Replay, budget: float) -> dict[str, float]:
    """References first; then each slice to the family whose last slice gained the ensemble most."""
    families = list(replay.timelines)
    given = references_first(families, budget)
    rest = budget - sum(given.values())
    slices = BANDIT_SLICES_PER_FAMILY * len(families)
    gains: dict[str, float] = {}
    current, _ = replay.ensemble(given)
    for _ in range(slices):
        untried = [f for f in families if f not in gains]
        family = untried[0] if untried else max(families, key=lambda f: (gains[f], -given[f]))
        given[family] += rest / slices
        after, _ = replay.ensemble(given)
        gains[family], current = after - current, after
    return given


def best_only(replay: Replay, budget: float) -> dict[str, float]:
    families = list(replay.timelines)
    given = references_first(families, budget)
    leader = max(families, key=lambda f: replay.best(f, given[f]))
    given[leader] += budget - sum(given.values())
    return given


STRATEGIES: dict[str, Callable[[Replay, float], dict[str, float]]] = {
    "equal": equal,
    "halving": halving,
    "bandit": bandit,
    "best-only": best_only,
}


def read_run(folder: Path, searcher: str, seed: int) -> tuple[str, list[Finished], float, optuna.Study]:
    """One family's search as bench/search_efficiency.py stored it under `folder`: its family, its completed
    trials, the seconds its run lasted on its own clock, and its study."""
    storage = f"sqlite:///{folder / f'{searcher}-{seed}.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    store = open_artifact_store(str(folder / f"artifacts-{searcher}-{seed}"))
    trials = study.get_trials(deepcopy=False)
    began = min(t.datetime_start for t in trials if t.datetime_start is not None)
    finished = []
    for trial in trials:
        if trial.state != TrialState.COMPLETE:
            continue
        probs = read_stored_probabilities(
            store, study.study_name, trial.number, trial.user_attrs.get(ARTIFACT_ATTR), "val_probs"
        )
        if probs is not None:
            seconds = (trial.datetime_complete - began).total_seconds()
            finished.append(
                Finished(trial.user_attrs["family"], f"{study.study_name}#{trial.number}", seconds, trial.value, probs)
            )
    family = study.user_attrs.get("space", folder.name)
    lasted = max((t.datetime_complete - began).total_seconds() for t in trials if t.datetime_complete is not None)
    return family, sorted(finished, key=lambda t: t.seconds), lasted, study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", nargs="+", type=Path, required=True, help="search_efficiency --out folders, one a family"
    )
    parser.add_argument(
        "--data", default=None, help="the Kaggle folder the searches ran on (default: the embedded sample)"
    )
    parser.add_argument(
        "--budget", type=float, nargs="+", required=True, help="search seconds to share, replayed in turn"
    )
    parser.add_argument("--searcher", default="rungs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device("cpu")
    timelines, lasted, identity = {}, {}, None
    for folder in args.runs:
        family, finished, lasted[family], study = read_run(folder, args.searcher, args.seed)
        timelines[family] = finished
        identity = identity or dict(study.user_attrs)
        print(
            f"{family}: {len(finished)} completed trials with probabilities in {lasted[family]:.0f}s; best {max(t.value for t in finished):.2%}"
        )
    prepared, _ = load_matching_data(args.data, None, identity, device)
    labels = prepared.tensors.val_labels.cpu().numpy()
    replay = Replay(timelines, labels)

    for budget in args.budget:
        print(
            f"\nsearch budget {budget:.0f}s shared by {len(timelines)} families (* more seconds than its recorded run lasted)"
        )
        print(f"{'strategy':<10} {'ensemble':>9} {'held-out':>9}  seconds given")
        for name, strategy in STRATEGIES.items():
            given = strategy(replay, budget)
            fitted, _ = replay.ensemble(given)
            held_out = replay.held_out_accuracy(given)
            split = ", ".join(
                f"{family} {seconds:.0f}{'*' if seconds > lasted[family] else ''}" for family, seconds in given.items()
            )
            print(f"{name:<10} {fitted:>9.2%} {held_out:>9.2%}  {split}")


if __name__ == "__main__":
    main()
