"""Ensemble selection over stored class probabilities: greedy (Caruana et al., 2004), average, best.

Pure numpy, no I/O. Probabilities come as (M, N, 10): M members, N digits, 10 classes. Every
method returns a weight per member (non-negative, summing to one); the ensemble's prediction is
the weighted mean of the members' probabilities.

Members can first be calibrated by temperature scaling (Guo et al., 2017): one temperature per
member, fitted on the validation probabilities, sharpens an under-confident member (T < 1) or
softens an over-confident one (T > 1) without changing any of its predicted classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from search.config import METHODS

GREEDY_ROUNDS = 100
# Keeps log(0) finite for a member that was certain and wrong; float64 resolves it.
PROBABILITY_FLOOR = 1e-15
# Temperatures searched; beyond them a member is all but one-hot or all but uniform.
TEMPERATURE_RANGE = (0.05, 20.0)
# Width of the final log-temperature bracket: T to within 0.01%.
TEMPERATURE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Selection:
    """The outcome of one method on the validation data."""

    method: str
    weights: np.ndarray  # (M,) float64, >= 0, sums to one
    log_loss: float
    accuracy: float

    @property
    def members(self) -> np.ndarray:
        """Indices of the members with a non-zero weight, heaviest first."""
        used = np.flatnonzero(self.weights > 0)
        return used[np.argsort(-self.weights[used], kind="stable")]


def check_probabilities(probs: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """(M, N, C) probabilities as float64 with rows renormalised; ValueError on the wrong shape."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] < 1 or probs.shape[1] < 1 or probs.shape[2] < 2:
        raise ValueError(
            f"probabilities must be (members, digits, classes) with at least one of each, got {probs.shape}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    totals = probs.sum(axis=2, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("every row of probabilities must have a positive sum")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (probs.shape[1],):
            raise ValueError(f"labels must be ({probs.shape[1]},), got {labels.shape}")
        if labels.min() < 0 or labels.max() >= probs.shape[2]:
            raise ValueError(f"labels must be in 0..{probs.shape[2] - 1}")
    return probs / totals


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class; probs is (N, C)."""
    probs = np.asarray(probs, dtype=np.float64)
    true = probs[np.arange(len(labels)), labels] / probs.sum(axis=1)
    return float(-np.mean(np.log(np.maximum(true, PROBABILITY_FLOOR))))


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose most probable class is the label; probs is (N, C)."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))


def check_weights(weights: np.ndarray, members: int) -> np.ndarray:
    """(M,) weights as float64; ValueError unless finite, non-negative and not all zero."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (members,):
        raise ValueError(f"weights must be ({members},), got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be finite and non-negative with a positive sum")
    return weights


def blend(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the members' probabilities: (M, N, C) x (M,) -> (N, C)."""
    weights = check_weights(weights, len(probs))
    return np.tensordot(weights / weights.sum(), np.asarray(probs, dtype=np.float64), axes=1)


def calibrated_blend(probs: np.ndarray, weights: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Each member at its temperature, then their weighted mean: (M, N, C) x (M,) x (M,) -> (N, C) float64.

    This is how a saved ensemble predicts: the weights were chosen on calibrated members.
    """
    return blend(apply_temperatures(probs, temperatures), weights)


def score(method: str, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> Selection:
    """A Selection for given weights, with its validation log-loss and accuracy."""
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum()
    blended = blend(probs, weights)
    return Selection(method, weights, log_loss(blended, labels), accuracy(blended, labels))


def best_single(probs: np.ndarray, labels: np.ndarray) -> Selection:
    """The member with the highest accuracy (the search's objective), ties to the lower log-loss."""
    probs = check_probabilities(probs, labels)
    accuracies = np.array([accuracy(p, labels) for p in probs])
    losses = np.array([log_loss(p, labels) for p in probs])
    best = int(np.lexsort((losses, -accuracies))[0])
    return score("best", probs, labels, np.eye(len(probs))[best])


def average(probs: np.ndarray, labels: np.ndarray) -> Selection:
    """The uniform soft vote over all members."""
    probs = check_probabilities(probs, labels)
    return score("average", probs, labels, np.ones(len(probs)))


def greedy(probs: np.ndarray, labels: np.ndarray, rounds: int = GREEDY_ROUNDS) -> Selection:
    """Forward selection with replacement minimising validation log-loss (Caruana et al., 2004).

    Each round adds the member (again, if it helps most) whose inclusion gives the lowest log-loss
    of the running average; the weights are the counts of the best round seen, so the result is
    never worse than the best single member by log-loss.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    probs = check_probabilities(probs, labels)
    # Log-loss only looks at the true class, and an average of normalised rows stays normalised,
    # so each round needs only the (M, N) true-class probabilities.
    true = probs[:, np.arange(probs.shape[1]), labels]
    counts = np.zeros(len(probs), dtype=np.int64)
    running = np.zeros(probs.shape[1])
    best_loss, best_counts = np.inf, counts
    for size in range(1, rounds + 1):
        trial_means = (running + true) / size  # (M, N): the average if member m were added
        losses = -np.log(np.maximum(trial_means, PROBABILITY_FLOOR)).mean(axis=1)
        chosen = int(np.argmin(losses))
        counts = counts.copy()
        counts[chosen] += 1
        running += true[chosen]
        if losses[chosen] < best_loss - 1e-12:
            best_loss, best_counts = losses[chosen], counts
    return score("greedy", probs, labels, best_counts.astype(np.float64))


def select(method: str, probs: np.ndarray, labels: np.ndarray, rounds: int = GREEDY_ROUNDS) -> Selection:
    """Run one of METHODS by name."""
    if method == "greedy":
        return greedy(probs, labels, rounds)
    if method == "average":
        return average(probs, labels)
    if method == "best":
        return best_single(probs, labels)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in TEMPERATURE_RANGE minimising the log-loss of softmax(log(probs) / T); probs is (N, C).

    The log-loss is convex in 1/T, so it has one minimum along log T and a golden-section search
    over log T finds it.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (digits, classes), got {probs.shape}")
    log_probs = np.log(np.maximum(check_probabilities(probs[None], labels)[0], PROBABILITY_FLOOR))
    true_class = log_probs[np.arange(len(labels)), labels]

    def loss(log_temperature: float) -> float:
        temperature = np.exp(log_temperature)
        scaled = log_probs / temperature
        top = scaled.max(axis=1)
        log_normaliser = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float(np.mean(log_normaliser - true_class / temperature))

    return float(np.exp(golden_section_minimum(loss, *np.log(TEMPERATURE_RANGE), TEMPERATURE_TOLERANCE)))


def golden_section_minimum(function: Callable[[float], float], low: float, high: float, tolerance: float) -> float:
    """The x in [low, high] minimising a function with one minimum there, to within tolerance."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_value, right_value = function(left), function(right)
    while high - low > tolerance:
        if left_value <= right_value:
            high, right, right_value = right, left, left_value
            left = high - ratio * (high - low)
            left_value = function(left)
        else:
            low, left, left_value = left, right, right_value
            right = low + ratio * (high - low)
            right_value = function(right)
    return (low + high) / 2.0


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature) over the last axis, as float64 rows summing to one.

    T = 1 gives the rows back renormalised; no T changes a row's most probable class.
    """
    temperature = check_temperature(temperature)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=-1, keepdims=True)
    if temperature == 1.0:
        return probs
    scaled = np.log(np.maximum(probs, PROBABILITY_FLOOR)) / temperature
    exp = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def check_temperature(temperature: float) -> float:
    """The temperature as a float; ValueError unless it is finite and positive."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"a temperature must be a finite number above 0, got {temperature}")
    return float(temperature)


def calibrate(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One fitted temperature per member: (M, N, C) validation probabilities -> (M,)."""
    probs = check_probabilities(probs, labels)
    return np.array([fit_temperature(member, labels) for member in probs])


def apply_temperatures(probs: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Each member's probabilities at its own temperature: (M, N, C) x (M,) -> (M, N, C) float64."""
    temperatures = np.asarray(temperatures, dtype=np.float64)
    if temperatures.shape != (len(probs),):
        raise ValueError(f"temperatures must be ({len(probs)},), got {temperatures.shape}")
    return np.stack([apply_temperature(member, t) for member, t in zip(probs, temperatures)])
