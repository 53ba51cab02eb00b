"""Ensemble selection math on synthetic probabilities."""

import numpy as np
import pytest

from search.config import METHODS
from search.ensemble.selection import (
    TEMPERATURE_RANGE,
    accuracy,
    apply_temperature,
    apply_temperatures,
    average,
    best_single,
    blend,
    calibrate,
    fit_temperature,
    greedy,
    log_loss,
    select,
)

CLASSES = 10


def noisy_members(members: int, digits: int, seed: int, skill: np.ndarray | None = None):
    """Members that put `skill` extra logit on the true class, plus independent noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, digits)
    skill = np.linspace(0.5, 3.0, members) if skill is None else skill
    logits = rng.normal(0, 1.5, (members, digits, CLASSES))
    logits[:, np.arange(digits), labels] += skill[:, None]
    probs = np.exp(logits)
    return (probs / probs.sum(axis=2, keepdims=True)).astype(np.float32), labels


def test_log_loss_and_accuracy_by_hand():
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    labels = np.array([0, 0, 0])
    assert log_loss(probs, labels) == pytest.approx(-(np.log(0.5) + np.log(0.9) + np.log(0.2)) / 3)
    assert accuracy(probs, labels) == pytest.approx(2 / 3)  # argmax of a tie is the first class


def test_log_loss_stays_finite_when_a_member_is_certain_and_wrong():
    assert np.isfinite(log_loss(np.array([[0.0, 1.0]]), np.array([0])))


@pytest.mark.parametrize("method", METHODS)
def test_one_member_reproduces_that_member(method):
    probs, labels = noisy_members(1, 200, seed=1)
    selection = select(method, probs, labels)
    assert selection.weights.tolist() == [1.0]
    np.testing.assert_allclose(blend(probs, selection.weights), probs[0], rtol=1e-6)
    assert selection.accuracy == accuracy(probs[0], labels)
    assert selection.log_loss == pytest.approx(log_loss(probs[0], labels))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(5))
def test_weights_are_non_negative_and_sum_to_one(method, seed):
    probs, labels = noisy_members(7, 300, seed)
    weights = select(method, probs, labels).weights
    assert weights.shape == (7,)
    assert (weights >= 0).all()
    assert weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(20))
def test_greedy_is_never_worse_than_the_best_single_member(seed):
    rng = np.random.default_rng(100 + seed)
    members = int(rng.integers(2, 12))
    probs, labels = noisy_members(members, int(rng.integers(20, 400)), seed, skill=rng.uniform(0, 3, members))
    single_losses = [log_loss(p, labels) for p in probs]
    assert greedy(probs, labels).log_loss <= min(single_losses) + 1e-12


def test_greedy_beats_the_best_member_when_members_err_independently():
    probs, labels = noisy_members(6, 2000, seed=3, skill=np.full(6, 2.0))
    single = best_single(probs, labels)
    chosen = greedy(probs, labels)
    assert chosen.log_loss < single.log_loss - 0.05
    assert chosen.accuracy > single.accuracy
    assert len(chosen.members) > 1


def test_greedy_gives_no_weight_to_a_useless_member():
    probs, labels = noisy_members(3, 1000, seed=4, skill=np.array([2.5, 2.5, 0.0]))
    chosen = greedy(probs, labels)
    assert chosen.weights[2] == 0.0
    assert chosen.members.tolist()[0] in (0, 1)


def test_greedy_with_replacement_can_weight_a_member_more_than_once():
    probs, labels = noisy_members(3, 2000, seed=5, skill=np.array([3.5, 1.5, 1.5]))
    weights = greedy(probs, labels).weights
    assert weights[0] > weights[1] and weights[0] > weights[2]
    counts = weights * (1 / weights[weights > 0].min())
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)  # weights are counts / rounds


def test_greedy_with_one_round_is_the_lowest_loss_member():
    probs, labels = noisy_members(5, 300, seed=6)
    losses = [log_loss(p, labels) for p in probs]
    assert greedy(probs, labels, rounds=1).weights.tolist() == np.eye(5)[int(np.argmin(losses))].tolist()


def test_best_is_chosen_by_accuracy_then_log_loss():
    labels = np.array([0, 0, 0, 0])
    sure = np.tile([0.99, 0.01], (4, 1))
    unsure = np.tile([0.6, 0.4], (4, 1))
    wrong_once = sure.copy()
    wrong_once[0] = [0.4, 0.6]
    probs = np.stack([wrong_once, unsure, sure])
    assert best_single(probs, labels).weights.tolist() == [0.0, 0.0, 1.0]
    assert best_single(probs[:2], labels).weights.tolist() == [0.0, 1.0]


def test_average_is_the_uniform_soft_vote():
    probs, labels = noisy_members(4, 50, seed=7)
    chosen = average(probs, labels)
    np.testing.assert_allclose(chosen.weights, 0.25)
    assert chosen.log_loss == pytest.approx(log_loss(probs.mean(axis=0), labels))


def test_members_are_listed_heaviest_first():
    probs, labels = noisy_members(6, 2000, seed=8, skill=np.array([1.0, 3.0, 2.0, 2.5, 0.0, 2.0]))
    chosen = greedy(probs, labels)
    assert np.all(np.diff(chosen.weights[chosen.members]) <= 0)


def test_rows_that_do_not_sum_to_one_are_renormalised():
    probs, labels = noisy_members(2, 100, seed=9)
    np.testing.assert_allclose(greedy(probs * 3, labels).weights, greedy(probs, labels).weights)


@pytest.mark.parametrize(
    "probs, labels, message",
    [
        (np.ones((4, 10)), np.zeros(4, int), "members, digits, classes"),
        (np.ones((2, 4, 10)), np.zeros(3, int), "labels must be"),
        (np.ones((2, 4, 10)), np.full(4, 10), "labels must be in"),
        (-np.ones((2, 4, 10)), np.zeros(4, int), "non-negative"),
        (np.full((2, 4, 10), np.nan), np.zeros(4, int), "finite"),
    ],
)
def test_bad_input_is_refused(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        select("greedy", probs, labels)


def test_unknown_method_and_bad_rounds_are_refused():
    probs, labels = noisy_members(2, 10, seed=10)
    with pytest.raises(ValueError, match="method must be one of"):
        select("vote", probs, labels)
    with pytest.raises(ValueError, match="rounds"):
        greedy(probs, labels, rounds=0)


# --- temperature scaling -------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def calibrated_logits(digits: int, seed: int):
    """Logits z and labels drawn from softmax(z): a model whose temperature is exactly 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (digits, CLASSES))
    labels = (softmax(logits).cumsum(axis=1) > rng.random((digits, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(3))
def test_fit_temperature_recovers_a_known_temperature(temperature, seed):
    logits, labels = calibrated_logits(3000, seed)
    # softmax(z * T) is sharpened back to softmax(z) by dividing its log by T
    fitted = fit_temperature(softmax(logits * temperature).astype(np.float32), labels)
    assert fitted == pytest.approx(temperature, rel=0.1)


def test_the_fitted_temperature_lowers_log_loss_to_its_minimum():
    logits, labels = calibrated_logits(1000, seed=11)
    probs = softmax(logits * 0.4)
    fitted = fit_temperature(probs, labels)
    best = log_loss(apply_temperature(probs, fitted), labels)
    assert best < log_loss(probs, labels) - 0.05
    for nearby in (fitted * 0.95, fitted * 1.05):
        assert best <= log_loss(apply_temperature(probs, nearby), labels)


def test_fit_temperature_stays_in_its_range():
    labels = np.arange(50) % CLASSES
    always_right = np.eye(CLASSES)[labels] * 0.5 + 0.05
    always_wrong = np.eye(CLASSES)[(labels + 1) % CLASSES] * 0.5 + 0.05
    low, high = TEMPERATURE_RANGE
    assert fit_temperature(always_right, labels) == pytest.approx(low, rel=1e-3)
    assert fit_temperature(always_wrong, labels) == pytest.approx(high, rel=1e-3)


@pytest.mark.parametrize("temperature", [0.05, 0.3, 1.0, 3.0, 20.0])
def test_apply_temperature_keeps_the_predicted_class_and_sums_to_one(temperature):
    probs, _ = noisy_members(3, 500, seed=12)
    probs[0, :5] = 0.0  # certain rows must survive too
    probs[0, :5, 3] = 1.0
    scaled = apply_temperature(probs, temperature)
    assert scaled.shape == probs.shape and scaled.dtype == np.float64
    np.testing.assert_array_equal(scaled.argmax(axis=-1), probs.argmax(axis=-1))
    np.testing.assert_allclose(scaled.sum(axis=-1), 1.0, rtol=1e-12)


def test_temperature_one_is_the_identity():
    probs, _ = noisy_members(2, 300, seed=13)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, rtol=1e-6)
    np.testing.assert_allclose(apply_temperature(probs * 3, 1.0), probs, rtol=1e-6)  # renormalised


def test_lower_temperatures_sharpen_and_higher_ones_soften():
    probs, _ = noisy_members(1, 300, seed=14)
    top = probs[0].max(axis=1)
    assert (apply_temperature(probs[0], 0.5).max(axis=1) >= top).all()
    assert (apply_temperature(probs[0], 2.0).max(axis=1) <= top).all()


def test_calibrate_fits_each_member_on_its_own():
    logits, labels = calibrated_logits(2000, seed=15)
    probs = np.stack([softmax(logits * t) for t in (0.5, 1.0, 2.0)])
    temperatures = calibrate(probs, labels)
    np.testing.assert_allclose(temperatures, [0.5, 1.0, 2.0], rtol=0.1)
    for member, scaled, temperature in zip(probs, apply_temperatures(probs, temperatures), temperatures):
        np.testing.assert_allclose(scaled, apply_temperature(member, temperature))


def test_calibration_lets_greedy_combine_members_of_differing_confidence():
    probs, labels = noisy_members(6, 2000, seed=3, skill=np.full(6, 2.0))
    # as if trained with more or less label smoothing: each member under-confident to its own degree
    under = apply_temperatures(probs, np.array([1.0, 2.0, 3.0, 4.0, 1.5, 2.5]))
    raw = greedy(under, labels)
    calibrated = greedy(apply_temperatures(under, calibrate(under, labels)), labels)
    assert calibrated.log_loss < raw.log_loss - 0.1
    assert len(calibrated.members) > len(raw.members)


@pytest.mark.parametrize("temperature", [0.0, -1.0, np.nan, np.inf])
def test_bad_temperatures_are_refused(temperature):
    probs, _ = noisy_members(1, 10, seed=16)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(probs, temperature)


def test_bad_calibration_input_is_refused():
    probs, labels = noisy_members(2, 10, seed=17)
    with pytest.raises(ValueError, match="digits, classes"):
        fit_temperature(probs, labels)
    with pytest.raises(ValueError, match="labels must be"):
        fit_temperature(probs[0], labels[:5])
    with pytest.raises(ValueError, match="temperatures must be"):
        apply_temperatures(probs, np.ones(3))
