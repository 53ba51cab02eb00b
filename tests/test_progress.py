"""The per-trial progress line: counts, best value, and an ETA that respects --timeout."""

import io
from unittest import mock

import optuna
from optuna.trial import TrialState, create_trial

from search.study.progress import Progress


def study_with(values: list[float]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for value in values:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"family": "cnn", "train_seconds": 60}))
    return study


def line_after(progress: Progress, study: optuna.Study, elapsed: float) -> str:
    with mock.patch("search.study.progress.time.monotonic", return_value=progress.started + elapsed):
        progress(study, study.trials[-1])
    return progress.out.getvalue().splitlines()[-1]


def test_eta_extrapolates_the_time_per_trial_to_the_trials_left():
    study = study_with([0.9, 0.95])
    line = line_after(Progress(10, 0, io.StringIO()), study, elapsed=120)  # 60 s a trial, 8 to go
    assert line.startswith("[2/10] trial 1 cnn val 95.00% (60s)") and "best 95.00%" in line
    assert line.endswith("elapsed 2m00s ETA 8m00s")


def test_eta_stops_at_the_timeout_plus_the_last_trial():
    study = study_with([0.9, 0.95])
    line = line_after(Progress(1000, 0, io.StringIO(), timeout=600), study, elapsed=120)
    assert line.endswith("elapsed 2m00s ETA 9m00s")  # 480 s until no new trial starts, then one of 60 s
    past_timeout = line_after(Progress(1000, 0, io.StringIO(), timeout=100), study, elapsed=120)
    assert past_timeout.endswith("ETA 1m00s")


def test_a_pruned_trial_says_at_which_epoch_or_why():
    study = study_with([0.9])
    pruned = {"state": TrialState.PRUNED, "user_attrs": {"family": "vit"}}
    study.add_trial(create_trial(**pruned, intermediate_values={1: 0.5, 2: 0.625}))
    assert "trial 1 vit pruned at epoch 2 (62.50%) |" in line_after(Progress(10, 0, io.StringIO()), study, elapsed=10)
    study.add_trial(create_trial(**pruned))
    assert "trial 2 vit pruned before its first epoch ended |" in line_after(Progress(10, 0, io.StringIO()), study, elapsed=10)
    reason = "over --trial-timeout 30s: stopped before step 53 of 591 in epoch 1"
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"family": "vit", "pruned_reason": reason}))
    assert f"trial 3 vit pruned, {reason} |" in line_after(Progress(10, 0, io.StringIO()), study, elapsed=10)
