"""A sampler that searches near what is known to be good, after PriorBand (Mallik et al., NeurIPS 2023).

Each sampled trial either explores (uniform draws, with probability `explore`) or mutates one of the
study's best completed trials. The references are queued first and complete first, so they are the
prior: until a sampled config beats them, the incumbents are the references themselves, and a config
near a reference is what is tried. A mutation keeps each parameter of its base with probability
1 - `mutation_rate` and otherwise moves it: a number by a normal step of `step` times its range (in
log space for a log parameter), clipped to the range; a choice to another of its values. A parameter
the base does not have (another family's branch of the space) is drawn uniformly.

The decision for a trial is drawn from the sampler's seed and the trial's number alone, so every
process that samples the trial's parameters (a Ray worker, say) makes the same one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from search.study.optuna_internals import study_id

EXPLORE = 1 / 3  # PriorBand's share of uniform draws
TOP = 3  # incumbents a mutation may start from
MUTATION_RATE = 0.5
STEP = 0.1  # a number's mutation step, as a share of its (log) range


class PriorSampler(optuna.samplers.BaseSampler):
    """Mutations of the study's best completed trials (the references first), and uniform draws for exploration."""

    def __init__(
        self,
        seed: int | None = None,
        *,
        explore: float = EXPLORE,
        top: int = TOP,
        mutation_rate: float = MUTATION_RATE,
        step: float = STEP,
    ) -> None:
        if not 0 <= explore <= 1 or not 0 <= mutation_rate <= 1:
            raise ValueError(f"explore and mutation_rate must be within [0, 1], got {explore} and {mutation_rate}")
        if top < 1 or not step > 0:
            raise ValueError(f"top must be at least 1 and step positive, got {top} and {step}")
        self.seed = 0 if seed is None else seed
        self.explore, self.top, self.mutation_rate, self.step = explore, top, mutation_rate, step
        self._uniform = optuna.samplers.RandomSampler(seed=seed)
        self._bases: dict[tuple[int, int], dict[str, Any] | None] = {}  # (study id, trial number) -> its base's params

    def reseed_rng(self) -> None:
        self._uniform.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        base = self._base(study, trial)
        if base is None or param_name not in base or not within(base[param_name], param_distribution):
            return self._uniform.sample_independent(study, trial, param_name, param_distribution)
        rng = self._rng(trial.number, param_name)
        if rng.random() >= self.mutation_rate:
            return base[param_name]
        return mutate(base[param_name], param_distribution, rng, self.step)

    def _base(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
        """The params this trial mutates, or None when it explores (decided once a trial)."""
        key = (study_id(study), trial.number)
        if key not in self._bases:
            rng = self._rng(trial.number, "")
            incumbents = best_trials(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), self.top)
            explores = rng.random() < self.explore or not incumbents
            self._bases[key] = None if explores else dict(incumbents[int(rng.integers(len(incumbents)))].params)
        return self._bases[key]

    def _rng(self, number: int, name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, number, *name.encode()])


def best_trials(trials: Sequence[FrozenTrial], top: int) -> list[FrozenTrial]:
    """The `top` completed trials of highest value (ties: the earlier first)."""
    scored = [t for t in trials if t.value is not None and math.isfinite(t.value)]
    return sorted(scored, key=lambda t: (-t.value, t.number))[:top]


def within(value: Any, distribution: BaseDistribution) -> bool:
    """Whether `value` is one `distribution` can take (a base from an older version of the space may not be)."""
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        return isinstance(value, (int, float)) and distribution.low <= value <= distribution.high
    return False


def mutate(value: Any, distribution: BaseDistribution, rng: np.random.Generator, step: float) -> Any:
    """A value near `value` within `distribution`: a normal step of `step` times its (log) range, or another choice."""
    if isinstance(distribution, CategoricalDistribution):
        others = [c for c in distribution.choices if c != value]
        return others[int(rng.integers(len(others)))] if others else value
    if not isinstance(distribution, (FloatDistribution, IntDistribution)):
        return value
    low, high = distribution.low, distribution.high
    if distribution.log:
        moved = math.exp(math.log(value) + rng.normal(0.0, step * (math.log(high) - math.log(low))))
    else:
        moved = value + rng.normal(0.0, step * (high - low))
    moved = min(high, max(low, moved))
    if distribution.step is not None:
        moved = low + round((moved - low) / distribution.step) * distribution.step
        moved = min(high, moved)
    return int(round(moved)) if isinstance(distribution, IntDistribution) else float(moved)
