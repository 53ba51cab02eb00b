"""Ensemble selection math on synthetic probabilities."""

import numpy as np
import pytest

from search.ensemble import (
    METHODS,
    accuracy,
    average,
    best_single,
    blend,
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
