"""auto's portfolio and search loop, with the studies faked: which config or family gets which time, and
how each slice is handed to `run` (the real runs are covered by the short-budget test in test_auto.py)."""

import io
import time

import pytest

from search.auto import search as search_module
from search.auto.budget import Clock
from search.auto.plan import ConfigCost, Plan
from search.auto.search import FamilyState, Recorded, run_portfolio, search, study_run
from search.config import AutoSpec
from search.dispatch.run import RunSummary


def fake_studies(monkeypatch, value=lambda run: 0.98, seconds=lambda run: 0.0, completes=lambda name: True):
    runs = []

    def fake_run_study(run, out):
        runs.append((run, time.time()))
        clock_shift[0] += seconds(run)
        return RunSummary(run.study, run.storage, "", {"complete": 1}, 0, value(run), None)

    def fake_recorded(storage, studies, device):  # every reference a fake study ran completed
        return {
            name: Recorded(run.space, value(run), None)
            for run, _ in runs
            for name in run.only_references or ()
            if completes(name)
        }

    clock_shift = [0.0]
    monkeypatch.setattr(search_module, "run_study", fake_run_study)
    monkeypatch.setattr(search_module, "finished_trials", lambda storage, study: 0)
    monkeypatch.setattr(search_module, "recorded_references", fake_recorded)
    return runs, clock_shift


class ShiftedClock(Clock):
    """A clock that the fake studies move forward by the seconds their trials 'took'."""

    def __init__(self, budget, shift):
        super().__init__(budget)
        self.shift = shift

    @property
    def used(self):
        return super().used + self.shift[0]


def test_the_portfolio_trains_its_configs_in_order_one_at_a_time_rereading_their_speeds_after_each(monkeypatch):
    # proxies of 2 epochs on 37,800 digits: stn-cnn 270 s, bn-cnn 189 s, big-kernel 216 s, lenet 19 s
    runs, shift = fake_studies(
        monkeypatch, seconds=lambda run: {"stn-cnn": 300.0, "bn-cnn": 189.0}.get(run.only_references[0], 10.0)
    )
    reads = []

    def costs():
        reads.append(len(runs))
        return [
            ConfigCost("stn", "stn-cnn", 280.0),
            ConfigCost("cnn", "bn-cnn", 400.0),
            ConfigCost("cnn", "big-kernel", 350.0),
            ConfigCost("cnn", "lenet", 4000.0),
        ]

    states = {f: FamilyState(f, f"auto-{f}", 2) for f in ("stn", "cnn")}
    plan = Plan(
        usable=2_000, portfolio_seconds=520, search_seconds=0, refit_seconds=1_450, final_seconds=30, epochs=2, notes=()
    )
    out = io.StringIO()
    trained = run_portfolio(
        AutoSpec(spaces="stn,cnn"), plan, states, ShiftedClock(2_000, shift), out, 37_800, costs, done=set()
    )

    # stn-cnn overran its plan (300 s against 270 s): big-kernel no longer fits the 31 s left, lenet still does
    assert trained == ["stn-cnn", "bn-cnn", "lenet"]
    assert [run.only_references for run, _ in runs] == [("stn-cnn",), ("bn-cnn",), ("lenet",)]
    assert all(
        run.trials == 1 and run.climb_references is False for run, _ in runs
    )  # no search: the references don't climb
    assert runs[0][0].trial_timeout == pytest.approx(2 * 270)  # no trial trains past twice its plan
    # nor into the final phase's reserve: the budget is a wall
    assert [run.deadline.at - started for run, started in runs] == pytest.approx([1_970, 1_670, 1_481], abs=1)
    assert (
        "leaving out big-kernel (cnn): a 2-epoch proxy would take 216s at 350 images/s, over the 31s left"
        in out.getvalue()
    )
    assert len(reads) >= 4  # the plan is re-read after every trial


def test_a_reference_cut_by_its_time_limit_is_not_counted_trained_and_the_next_may_take_the_first_ones_room(
    monkeypatch,
):
    runs, shift = fake_studies(monkeypatch, seconds=lambda run: 100.0, completes=lambda name: name != "stn-cnn")
    costs = lambda: [ConfigCost("stn", "stn-cnn", 280.0), ConfigCost("cnn", "bn-cnn", 400.0)]  # noqa: E731
    plan = Plan(
        usable=1_000, portfolio_seconds=250, search_seconds=0, refit_seconds=720, final_seconds=30, epochs=2, notes=()
    )
    states = {f: FamilyState(f, f"auto-{f}", 2) for f in ("stn", "cnn")}
    trained = run_portfolio(
        AutoSpec(spaces="stn,cnn"), plan, states, ShiftedClock(1_000, shift), io.StringIO(), 37_800, costs, done=set()
    )
    # bn-cnn's 189 s exceed the 150 s left, but with no model trained yet it may take up to half the usable time
    assert trained == ["bn-cnn"] and [run.only_references for run, _ in runs] == [("stn-cnn",), ("bn-cnn",)]


def test_a_resumed_portfolio_does_not_train_a_completed_reference_again(monkeypatch):
    runs, shift = fake_studies(monkeypatch)
    costs = lambda: [ConfigCost("cnn", "bn-cnn", 400.0), ConfigCost("cnn", "lenet", 4000.0)]  # noqa: E731
    plan = Plan(
        usable=2_000,
        portfolio_seconds=500,
        search_seconds=100,
        refit_seconds=1_370,
        final_seconds=30,
        epochs=4,
        notes=(),
    )
    out = io.StringIO()
    trained = run_portfolio(
        AutoSpec(spaces="cnn"),
        plan,
        {"cnn": FamilyState("cnn", "auto-cnn", 4)},
        ShiftedClock(2_000, shift),
        out,
        37_800,
        costs,
        done={"bn-cnn"},
    )
    assert trained == ["bn-cnn", "lenet"] and [run.only_references for run, _ in runs] == [("lenet",)]
    assert runs[0][0].climb_references is True  # a search follows: the references set the rungs' bar
    assert "already trained by an earlier run: bn-cnn" in out.getvalue()


def test_a_family_stays_in_a_round_while_its_first_rung_fits_the_slice_though_a_whole_climb_would_not(monkeypatch):
    runs, _ = fake_studies(monkeypatch, value=lambda run: 0.99 if run.space == "stn" else 0.98)
    slow, quick = ConfigCost("stn", "stn-cnn", 100.0), ConfigCost("cnn", "bn-cnn", 1000.0)
    # stn: a 4-epoch trial on 37,800 digits climbs for ~2,177 s, far over a slice; its first rung takes 168 s
    states = [
        FamilyState("stn", "auto-stn", 4, slow.proxy_seconds(4, 37_800, True), slow.first_rung_seconds(4, 37_800)),
        FamilyState("cnn", "auto-cnn", 4, quick.proxy_seconds(4, 37_800, True), quick.first_rung_seconds(4, 37_800)),
    ]
    assert states[0].first_rung_seconds == pytest.approx(4 * 4_200 / 100.0)
    out = io.StringIO()
    search(
        AutoSpec(spaces="stn,cnn"), 1_000, states, Clock(1_000), out, lambda states: {"auto-stn": 0.7, "auto-cnn": 0.3}
    )

    assert [run.space for run, _ in runs] == ["stn", "cnn", "stn"]  # round 1: both; round 2: the ensemble's heavier
    assert all(run.only_references == () for run, _ in runs)  # a left-out reference is not queued by the search
    assert "rung would outlast" not in out.getvalue()
    # the fake studies take no time: round 1 shares all 1,000 s over two rounds and two families, round 2 gets it all
    for (run, started), slice_seconds in zip(runs, [250, 250, 1_000], strict=True):
        # a trial promoted late in its slice may finish its climb after it, but never after the search's end
        assert run.deadline.at - started == pytest.approx(1_000, abs=1)
        state = next(s for s in states if s.family == run.space)
        assert run.timeout == pytest.approx(
            slice_seconds - state.first_rung_seconds, abs=1
        )  # starts while a first rung fits
        assert run.trial_timeout == pytest.approx(2 * state.trial_seconds)


def test_a_family_whose_first_rung_outlasts_the_slice_leaves_before_it_burns_it(monkeypatch):
    fake_studies(monkeypatch, value=lambda run: 0.9)
    crawling = ConfigCost("vit", "vit-seed", 1.0)  # 4 epochs of its 4,200-row first rung: 16,800 s
    states = [
        FamilyState(
            "vit", "auto-vit", 4, crawling.proxy_seconds(4, 37_800, True), crawling.first_rung_seconds(4, 37_800)
        ),
        FamilyState("cnn", "auto-cnn", 1, 1.0, 0.2),
    ]
    out = io.StringIO()
    search(AutoSpec(spaces="vit,cnn"), 400, states, Clock(400), out, lambda states: {})
    assert "leaving: vit (a trial's first rung would outlast the" in out.getvalue()
    assert states[0].rounds == [] and states[1].rounds == [1, 2]


def test_a_members_retraining_is_planned_at_its_own_speed_not_its_familys_fastest():
    from types import SimpleNamespace

    from search.auto.run import member_speed
    from spaces import load_space

    space = load_space("cnn")
    ensemble = SimpleNamespace(pool=SimpleNamespace(spaces={"auto-cnn": (space,)}))
    costs = {
        c.name: c
        for c in (
            ConfigCost("cnn", "bn-cnn", 1_800.0),
            ConfigCost("cnn", "lenet", 11_000.0),
            ConfigCost("cnn", "big-kernel", 800.0),
        )
    }
    bn_cnn = space.references()["bn-cnn"][1]
    member = SimpleNamespace(images_per_second=None, study="auto-cnn", params=bn_cnn, family="cnn")
    assert member_speed(member, ensemble, costs) == 1_800.0  # its reference's, not lenet's
    sampled = SimpleNamespace(
        images_per_second=None, study="auto-cnn", params={**bn_cnn, "train.batch_size": 64}, family="cnn"
    )
    assert member_speed(sampled, ensemble, costs) == 800.0  # the family's slowest: room to spare
    recorded = SimpleNamespace(images_per_second=2_100.0, study="auto-cnn", params=bn_cnn, family="cnn")
    assert member_speed(recorded, ensemble, costs) == 2_100.0


def test_the_search_samples_with_the_autos_sampler():
    state = FamilyState("cnn", "auto-cnn", 4)
    assert study_run(AutoSpec(spaces="cnn", sampler="prior"), state).sampler == "prior"
    assert study_run(AutoSpec(spaces="cnn"), state, trials=3).trials == 3
