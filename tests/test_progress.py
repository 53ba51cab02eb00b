"""The per-trial progress line: counts, best value, and an ETA that respects --timeout."""

import io
from pathlib import Path
from unittest import mock

import optuna
from optuna.trial import TrialState, create_trial

from search.config import RunSpec
from search.dispatch.run import run_study
from search.study.progress import CLEAR_TO_END, Progress, RunningTrial
from search.study.trial_attrs import RUNG_ATTR


def study_with(values: list[float]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for value in values:
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"family": "cnn", "train_seconds": 60})
        )
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
    assert "trial 2 vit pruned before its first epoch ended |" in line_after(
        Progress(10, 0, io.StringIO()), study, elapsed=10
    )
    reason = "over --trial-timeout 30s: stopped before step 53 of 591 in epoch 1"
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"family": "vit", "pruned_reason": reason}))
    assert f"trial 3 vit pruned, {reason} |" in line_after(Progress(10, 0, io.StringIO()), study, elapsed=10)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_live_line_that_the_next_finished_trial_replaces():
    study = study_with([0.9])
    progress = Progress(10, 0, Terminal())
    progress.show_running([RunningTrial(3, "vit", 10, 2, 0.9612, 1234.5), RunningTrial(4, "cnn", 10)])
    assert (
        progress.out.getvalue()
        == f"\rtrial 3 vit epoch 2/10 val 96.12%, 1,234 images/s | trial 4 cnn in epoch 1/10{CLEAR_TO_END}"
    )
    line_after(progress, study, elapsed=10)
    finished = progress.out.getvalue().split(CLEAR_TO_END)[-1]
    assert (
        progress.out.getvalue().count("\r") == 2
        and finished.startswith("[1/10] trial 0 cnn val 90.00%")
        and finished.endswith("\n")
    )


def test_piped_output_gets_only_the_finished_lines():
    progress = Progress(10, 0, io.StringIO())
    progress.show_running([RunningTrial(3, "vit", 10, 2, 0.96, 1000.0)])
    line_after(progress, study_with([0.9]), elapsed=10)
    assert "\r" not in progress.out.getvalue() and progress.out.getvalue().count("\n") == 1


def test_a_running_trial_is_read_from_what_the_study_records():
    trial = create_trial(
        state=TrialState.RUNNING,
        intermediate_values={1: 0.5, 2: 0.75},
        user_attrs={"family": "cnn", "images_per_second": 812.4},
    )
    trial.number = 7
    assert RunningTrial.from_trial(trial, 9).describe() == "trial 7 cnn epoch 2/9 val 75.00%, 812 images/s"
    fresh = create_trial(state=TrialState.RUNNING)
    fresh.number = 8
    assert RunningTrial.from_trial(fresh, 9).describe() == "trial 8 ? in epoch 1/9"


def test_a_running_trial_of_a_rung_study_is_read_by_its_rung_not_as_epochs():
    trial = create_trial(
        state=TrialState.RUNNING,
        intermediate_values={1: 0.925},
        user_attrs={"family": "cnn", "images_per_second": 812.4, RUNG_ATTR: "12600 rows x 4 epochs"},
    )
    trial.number = 7
    assert (
        RunningTrial.from_trial(trial, 4, by_rungs=True).describe()
        == "trial 7 cnn on 12600 rows x 4 epochs, 812 images/s (rung before: val 92.50%)"
    )
    fresh = create_trial(state=TrialState.RUNNING, user_attrs={"family": "cnn", RUNG_ATTR: "4200 rows x 4 epochs"})
    fresh.number = 8
    assert RunningTrial.from_trial(fresh, 4, by_rungs=True).describe() == "trial 8 cnn on 4200 rows x 4 epochs"


def test_a_run_on_a_terminal_shows_each_epoch_of_the_running_trial(tmp_path):
    out = Terminal()
    space = str(Path(__file__).parent / "fixtures" / "my_space.py")
    run_study(RunSpec(space=space, trials=1, epochs=2, limit=200, storage=f"sqlite:///{tmp_path}/s.db"), out)
    live = [part for part in out.getvalue().split("\r") if part.startswith("trial 0 mlp epoch")]
    assert [part.split(" val ")[0].split(",")[0] for part in live] == [
        "trial 0 mlp epoch 1/2 on 180 rows",
        "trial 0 mlp epoch 2/2 on 180 rows",
    ]
    assert " val " not in live[0] and " val " in live[1]  # a rung validates only its last epoch
    assert all("images/s" in part for part in live)
