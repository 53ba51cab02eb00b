"""auto's search loop over families, with the studies faked: which family gets which slice, and how
each slice is handed to `run` (the real runs are covered by the three-minute test in test_auto.py)."""

import io
import time

import pytest

from search.auto import search as search_module
from search.auto.budget import Clock
from search.auto.plan import FamilyCost, Plan
from search.auto.search import FamilyState, search
from search.config import AutoSpec
from search.dispatch.run import RunSummary


def test_a_family_stays_in_a_round_while_its_first_rung_fits_the_slice_though_a_whole_climb_would_not(monkeypatch):
    runs = []

    def fake_run_study(run, out):
        runs.append((run, time.time()))
        return RunSummary(run.study, run.storage, "", {"complete": 1}, 0, 0.99 if run.space == "stn" else 0.98, None)

    monkeypatch.setattr(search_module, "run_study", fake_run_study)
    slow, quick = FamilyCost("stn", 100.0), FamilyCost("cnn", 1000.0)
    # stn: a 4-epoch trial on 37,800 digits climbs for ~2,177 s, far over a slice; its first rung takes 168 s
    states = [
        FamilyState("stn", "auto-stn", 4, slow.trial_seconds(4, 37_800), slow.first_rung_seconds(4, 37_800)),
        FamilyState("cnn", "auto-cnn", 4, quick.trial_seconds(4, 37_800), quick.first_rung_seconds(4, 37_800)),
    ]
    assert states[0].first_rung_seconds == pytest.approx(4 * 4_200 / 100.0)
    plan = Plan(search_seconds=1_000, refit_seconds=0, final_seconds=0, epochs={"stn": 4, "cnn": 4}, rounds=2, refit_note="")
    out = io.StringIO()
    search(AutoSpec(spaces="stn,cnn"), plan, states, Clock(1_000), out, lambda states: {"auto-stn": 0.7, "auto-cnn": 0.3})

    references, sampled = runs[:2], runs[2:]
    assert [run.space for run, _ in references] == ["stn", "cnn"] and all(run.train_until is None for run, _ in references)
    assert [run.space for run, _ in sampled] == ["stn", "cnn", "stn"]  # round 1: both; round 2: the ensemble's heavier
    assert "rung would outlast" not in out.getvalue()
    # the fake studies take no time: round 1 shares all 1,000 s over two rounds and two families, round 2 gets it all
    for (run, started), slice_seconds in zip(sampled, [250, 250, 1_000], strict=True):
        # a trial promoted late in its slice may finish its climb after it, but never after the search's end
        assert run.train_until - started == pytest.approx(1_000, abs=1)
        state = next(s for s in states if s.family == run.space)
        assert run.timeout == pytest.approx(slice_seconds - state.first_rung_seconds, abs=1)  # starts while a first rung fits
        assert run.trial_timeout == pytest.approx(2 * state.trial_seconds)


def test_a_family_whose_first_rung_outlasts_the_slice_leaves_before_it_burns_it(monkeypatch):
    monkeypatch.setattr(
        search_module, "run_study", lambda run, out: RunSummary(run.study, run.storage, "", {"complete": 1}, 0, 0.9, None)
    )
    crawling = FamilyCost("vit", 1.0)  # 4 epochs of its 4,200-row first rung: 16,800 s
    states = [
        FamilyState("vit", "auto-vit", 4, crawling.trial_seconds(4, 37_800), crawling.first_rung_seconds(4, 37_800)),
        FamilyState("cnn", "auto-cnn", 1, 1.0, 0.2),
    ]
    plan = Plan(search_seconds=400, refit_seconds=0, final_seconds=0, epochs={"vit": 4, "cnn": 1}, rounds=2, refit_note="")
    out = io.StringIO()
    search(AutoSpec(spaces="vit,cnn"), plan, states, Clock(400), out, lambda states: {})
    assert "leaving: vit (a trial's first rung would outlast the" in out.getvalue()
    assert states[0].rounds == [] and states[1].rounds == [1, 2]
