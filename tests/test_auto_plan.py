"""The budget's parsing and the auto plan's arithmetic: pure functions, no training."""

import pytest

from search.auto.plan import (
    MAX_REFIT_MODELS,
    REFERENCE_SHARE,
    REFIT_SHARE,
    REFIT_TIME_SAFETY,
    MIN_REFIT_EPOCHS,
    FamilyCost,
    choose_refit,
    plan_budget,
    refit_epochs,
    rounds_for,
    survivors,
)
from search.config import parse_budget
from search.errors import UserError


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400), ("2m30s", 150), ("120", 120), (" 1H ", 3600)])
def test_budgets_parse(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "m", "30m1h", "1h1h", "-5m", "1.5.h", "59s"])
def test_bad_budgets_are_refused_naming_the_option(text):
    with pytest.raises(UserError) as err:
        parse_budget(text)
    assert err.value.cli_message.startswith("--budget")


def test_rounds_halve_the_families_down_to_one():
    assert [rounds_for(n) for n in (1, 2, 3, 4, 5, 8)] == [1, 2, 3, 3, 4, 4]


def test_survivors_keep_the_better_half_by_ensemble_share_then_accuracy():
    scores = {"cnn": (0.6, 0.995), "vit": (0.0, 0.990), "stn": (0.4, 0.992), "resnet": (0.0, 0.993)}
    assert survivors(scores) == ["cnn", "stn"]
    assert survivors({"vit": (0.0, 0.9)}) == ["vit"]
    assert survivors({"a": (0.0, 0.9), "b": (0.0, 0.95), "c": (0.0, 0.8)}) == ["b", "a"]


def test_the_plan_reserves_the_final_phase_and_sizes_search_epochs_so_the_references_fit():
    costs = [FamilyCost("cnn", 2000.0, references=3), FamilyCost("vit", 1000.0, references=2)]
    plan = plan_budget(3600, costs, train_images=37_800, all_images=42_000, refit=True)
    assert plan.refit_seconds == pytest.approx(REFIT_SHARE * 3600)
    assert plan.search_seconds + plan.refit_seconds + plan.final_seconds == pytest.approx(3600)
    assert plan.rounds == 2
    # each family's references fit in its part of the reference phase, and nearly fill it
    for cost in costs:
        references = cost.references * cost.trial_seconds(plan.epochs[cost.family], 37_800)
        share = REFERENCE_SHARE * plan.search_seconds / len(costs)
        assert share / 2 < references <= share


def test_a_trial_that_climbs_every_rung_costs_its_rungs_images():
    cost = FamilyCost("cnn", 1000.0)
    assert cost.trial_seconds(2, 37_800) == pytest.approx(2 * 37.8 * (4_200 + 12_600 + 37_800) / 37_800)
    assert cost.trial_seconds(1, 900) == pytest.approx(0.9)  # too few rows for a cheaper rung


def test_no_final_training_when_the_budget_cannot_hold_its_minimum():
    slow = [FamilyCost("resnet", 50.0), FamilyCost("vit", 40.0)]  # 840 s an epoch on 42,000 digits, or more
    plan = plan_budget(600, slow, train_images=37_800, all_images=42_000, refit=True)
    assert plan.refit_seconds == 0 and "no final training" in plan.refit_note
    assert plan.epochs["resnet"] == 1
    assert plan_budget(600, slow, 37_800, 42_000, refit=False).refit_note.endswith("(--no-refit)")


def test_refit_drops_the_lightest_members_until_the_rest_get_their_minimum_epochs():
    seconds = 100 * REFIT_TIME_SAFETY  # planned at the safety margin: as if 100 s at the recorded pace
    assert refit_epochs(seconds, [10.0, 10.0]) == 5
    assert refit_epochs(seconds / 2, [10.0, 10.0]) == 0  # 2 epochs each is under the minimum
    weights = [0.2, 0.5, 0.3, 0.1]
    assert choose_refit(weights, [10.0] * 4, seconds=seconds) == ([1, 2, 0], 3)  # 3 each is the minimum
    # proxies trained 4 epochs: three models would get 3 each, so the lightest of them goes
    assert choose_refit(weights, [10.0] * 4, seconds=seconds, least=4) == ([1, 2], 5)
    assert len(choose_refit(weights, [1.0] * 4, seconds=seconds * 10)[0]) == MAX_REFIT_MODELS
    assert choose_refit(weights, [100.0] * 4, seconds=seconds) == ([], 0)
