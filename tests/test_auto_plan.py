"""The budget's parsing and the auto plan's arithmetic: pure functions, no training."""

import math

import pytest

from search.auto.plan import (
    FIRST_CONFIG_SHARE,
    MAX_PROXY_EPOCHS,
    MAX_REFIT_EPOCHS,
    MAX_REFIT_MODELS,
    MIN_PROXY_EPOCHS,
    MIN_REFIT_EPOCHS,
    MIN_RUNG_STEPS,
    PORTFOLIO_SHARE,
    REFIT_TIME_SAFETY,
    ConfigCost,
    families_left_out,
    fits_portfolio,
    order_portfolio,
    plan_budget,
    rounds_for,
    search_floor_epochs,
    share_refit,
    survivors,
)
from search.config import parse_budget
from search.errors import UserError
from search.study.rungs import ladder


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400), ("2m30s", 150), ("120", 120), (" 1H ", 3600)],
)
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


def test_the_portfolio_trains_what_this_storage_measured_best_first_then_the_prior_order():
    names = ["lenet", "bn-cnn", "big-kernel", "stn-cnn", "vit-seed"]
    assert order_portfolio(names, {}) == ["stn-cnn", "bn-cnn", "big-kernel", "vit-seed", "lenet"]
    assert order_portfolio(names, {"lenet": 0.99, "stn-cnn": 0.98}) == [
        "lenet",
        "stn-cnn",
        "bn-cnn",
        "big-kernel",
        "vit-seed",
    ]


# an AVX2-only EPYC's speeds (as once reported: bn-cnn about 400 images/s, lenet about 4,000) and 7x those
SLOW = [
    ConfigCost("stn", "stn-cnn", 280.0),
    ConfigCost("cnn", "bn-cnn", 400.0),
    ConfigCost("cnn", "big-kernel", 350.0),
    ConfigCost("cnn", "lenet", 4000.0),
]
FAST = [ConfigCost(c.family, c.name, 7 * c.images_per_second) for c in SLOW]


def test_a_slow_machine_gets_no_search_and_spends_the_time_on_short_proxies_and_the_final_training():
    plan = plan_budget(3600, SLOW, train_images=37_800, all_images=42_000, search=True, refit=True)
    assert plan.search_seconds == 0 and not plan.searches
    assert any(note.startswith("no search: the final training can use all") for note in plan.notes)
    assert plan.epochs == MIN_PROXY_EPOCHS
    assert plan.portfolio_seconds == pytest.approx(PORTFOLIO_SHARE * plan.usable)
    assert plan.portfolio_seconds + plan.refit_seconds + plan.final_seconds == pytest.approx(3600)


def test_a_fast_machine_searches_with_what_the_final_training_cannot_use_and_no_trial_under_the_step_floor():
    plan = plan_budget(3600, FAST, train_images=37_800, all_images=42_000, search=True, refit=True)
    assert plan.searches
    # the final training keeps 20 epochs of the three leading configs on all digits; the search has the rest
    claim = sum(20 * REFIT_TIME_SAFETY * 42_000 / c.images_per_second for c in FAST[:MAX_REFIT_MODELS])
    assert plan.refit_seconds == pytest.approx(claim)
    assert plan.portfolio_seconds + plan.search_seconds + plan.refit_seconds + plan.final_seconds == pytest.approx(3600)
    cheapest = ladder(plan.epochs, 37_800)[0]
    assert plan.epochs * math.ceil(cheapest.rows / 128) >= MIN_RUNG_STEPS  # a sampled trial's first rung can learn
    assert search_floor_epochs(37_800, 128) == 4  # 4,200 rows: 33 steps an epoch
    assert plan_budget(3600, FAST, 37_800, 42_000, search=False, refit=True).notes[0] == "no search (--no-search)"


def test_without_a_final_training_the_proxies_train_longer_and_the_search_takes_its_share():
    plan = plan_budget(3600, FAST, 37_800, 42_000, search=True, refit=False)
    assert plan.refit_seconds == 0 and "no final training (--no-refit)" in plan.notes
    assert plan.search_seconds == pytest.approx((1 - PORTFOLIO_SHARE) * plan.usable)
    quiet = plan_budget(3600, FAST, 37_800, 42_000, search=False, refit=False)
    assert quiet.portfolio_seconds == pytest.approx(quiet.usable) and quiet.epochs > MAX_PROXY_EPOCHS


def test_no_final_training_when_the_budget_cannot_hold_its_minimum():
    crawling = [ConfigCost("resnet", "resnet5", 20.0)]  # 2,100 s an epoch on 42,000 digits
    plan = plan_budget(600, crawling, 37_800, 42_000, search=True, refit=True)
    assert plan.refit_seconds == 0 and any(note.startswith("no final training: 3 epochs") for note in plan.notes)
    assert plan.portfolio_seconds == pytest.approx(plan.usable)


def test_a_config_whose_proxy_does_not_fit_is_left_out_with_its_reason_but_the_first_may_take_more():
    bn = SLOW[1]  # 2 epochs of 37,800 digits: 189 s
    assert fits_portfolio(bn, 2, 37_800, False, seconds_left=200, first=False, usable=1000) is None
    reason = fits_portfolio(bn, 2, 37_800, False, seconds_left=100, first=False, usable=1000)
    assert reason == "bn-cnn (cnn): a 2-epoch proxy would take 189s at 400 images/s, over the 100s left"
    assert (
        fits_portfolio(bn, 2, 37_800, False, seconds_left=100, first=True, usable=1000) is None
    )  # up to half the usable time
    assert (
        fits_portfolio(bn, 2, 37_800, False, seconds_left=0, first=True, usable=189 / FIRST_CONFIG_SHARE - 10)
        is not None
    )
    assert (
        fits_portfolio(bn, 2, 37_800, True, seconds_left=200, first=False, usable=1000) is not None
    )  # climbing costs 1.44x


def test_the_final_training_gives_epochs_by_ensemble_weight():
    # 100 s at the safety margin buys 100 / 1.2 epoch-seconds
    epochs = share_refit([0.5, 0.25, 0.25], [1.0, 1.0, 1.0], seconds=48 * REFIT_TIME_SAFETY)
    assert epochs == {0: 24, 1: 12, 2: 12}
    # a slower member gets fewer epochs for the same share of the time
    assert share_refit([0.5, 0.5], [1.0, 2.0], seconds=40 * REFIT_TIME_SAFETY) == {0: 20, 1: 10}


def test_the_final_training_drops_members_its_time_cannot_train_long_enough():
    seconds = 20 * REFIT_TIME_SAFETY
    # the lightest member's share buys 2 epochs, under the minimum: its time goes to the others
    assert share_refit([0.6, 0.3, 0.1], [1.0] * 3, seconds) == {0: 13, 1: 6}
    # a member whose proxy trained longer than its share would retrain keeps its proxy instead
    assert share_refit([0.6, 0.4], [1.0, 1.0], seconds, least=[2, 10]) == {0: 20}
    assert share_refit([1.0], [10.0], seconds) == {}  # not even the heaviest fits
    assert len(share_refit([0.3, 0.3, 0.2, 0.2], [0.01] * 4, seconds)) == MAX_REFIT_MODELS


def test_a_member_capped_at_the_most_epochs_hands_its_time_to_the_others():
    epochs = share_refit([0.9, 0.1], [1.0, 10.0], seconds=100 * REFIT_TIME_SAFETY)
    assert epochs[0] == MAX_REFIT_EPOCHS and epochs[1] == 6  # the 60 s the cap frees go to the slow member
    assert min(epochs.values()) >= MIN_REFIT_EPOCHS


def test_a_family_none_of_whose_references_fits_is_left_out_up_front_with_its_reason():
    costs = [*SLOW[:2], ConfigCost("vit", "vit-seed", 30.0), ConfigCost("vit", "vit-s4", 20.0)]
    plan = plan_budget(3600, costs, 37_800, 42_000, search=True, refit=True)
    left_out = families_left_out(costs, plan, 37_800, done=set())
    assert list(left_out) == ["vit"]
    assert left_out["vit"].startswith(
        "vit: a 2-epoch proxy of its cheapest reference, vit-seed, would take 2520s at 30 images/s"
    )
    assert (
        families_left_out(costs, plan, 37_800, done={"vit-s4"}) == {}
    )  # an earlier run trained one: nothing to predict
