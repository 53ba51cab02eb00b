"""Rungs: the ladder of cheap complete trainings, the fixed row subsets, a trial's way up the ladder,
the pruner a study keeps, and the rung a predicted pace rules out before it starts."""

import functools
import textwrap

import numpy as np
import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from search.config import Deadline, RunSpec
from search.dispatch.run import describe_pruning
from search.errors import UserError
from search.study import objective as objective_module
from search.study.objective import TrialContext, make_objective
from search.study.rungs import Rung, RungData, ladder
from search.study.setup import PRUNER_STUDY_ATTR, make_pruner, resolve_pruner
from search.study.trial_attrs import (
    FORWARD_FLOPS_ATTR,
    IMAGES_TRAINED_ATTR,
    PRUNED_REASON_ATTR,
    REFERENCE_ATTR,
    RUNG_ATTR,
)
from search.train.trainer import TrainingData
from spaces import load_space

# A family whose "good" config learns and whose "bad" one cannot (a zero learning rate keeps it at chance).
TOY_SPACE = """
from dataclasses import dataclass
from torch import nn
from spaces.base import Reference
from spaces.training import TrainConfig

NAME = "toy"


@dataclass(frozen=True)
class Config:
    width: int = 16


def suggest(trial):
    return Config(width=trial.suggest_categorical("toy.width", [8, 16]))


def params_of(config):
    return {"toy.width": config.width}


def build(config):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, config.width), nn.ReLU(), nn.Linear(config.width, 10))


REFERENCES = {"toy-ref": Reference("toy-ref", Config(16), TrainConfig(batch_size=64))}
"""


def test_the_rows_ladder_trains_every_epoch_on_a_ninth_then_a_third_of_the_rows():
    assert ladder(6, 37_800) == (Rung(1, 4_200, 6), Rung(3, 12_600, 6), Rung(9, 37_800, 6))
    assert [rung.images for rung in ladder(6, 37_800)] == [25_200, 75_600, 226_800]


def test_the_epochs_ladder_trains_fewer_epochs_on_nearly_all_rows():
    assert ladder(6, 9_000, cut="epochs") == (Rung(1, 6_000, 1), Rung(3, 9_000, 2), Rung(9, 9_000, 6))


def test_rungs_under_the_floor_or_no_cheaper_are_left_out_and_the_full_training_stays():
    assert ladder(3, 3_600) == (Rung(3, 1_200, 3), Rung(9, 3_600, 3))  # 400 rows is under the floor
    assert ladder(3, 270) == (Rung(9, 270, 3),)
    # one epoch can't be cut, so the epochs cut falls back on the rows
    assert ladder(1, 9_000, cut="epochs") == (Rung(1, 1_000, 1), Rung(3, 3_000, 1), Rung(9, 9_000, 1))
    with pytest.raises(ValueError, match="cut"):
        ladder(3, 9_000, cut="pixels")


def labelled(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 28, 28) images whose class is which tenth of the image is bright: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 40, (count, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, :, 2 * label + 4 : 2 * label + 6] = 255
    return images, labels


def toy_data(rows: int = 300) -> TrainingData:
    train_images, train_labels = labelled(rows, 0)
    val_images, val_labels = labelled(100, 1)
    return TrainingData.from_numpy(train_images, train_labels, val_images, val_labels, None, "cpu")


def test_the_row_subsets_are_fixed_random_rows_with_the_same_validation():
    data = toy_data()
    first, again = RungData(data).rows(100), RungData(data).rows(100)
    assert torch.equal(first.train_images, again.train_images) and torch.equal(first.train_labels, again.train_labels)
    assert len(first.train_labels) == 100 and first.val_images is data.val_images
    assert len(set(first.train_labels.tolist())) == 10  # a random draw, not the first rows' classes in order
    assert RungData(data).rows(300) is data


@pytest.fixture
def toy_space(tmp_path):
    path = tmp_path / "toy_space.py"
    path.write_text(textwrap.dedent(TOY_SPACE))
    return load_space(str(path))


def rung_study(toy_space, tmp_path, monkeypatch, *, trial_timeout=None, deadline=None):
    """A study pruned on rungs over 300 toy rows (floor lowered to 10 rows: rungs of 33, 100 and 300)."""
    monkeypatch.setattr(objective_module, "ladder", functools.partial(ladder, min_rows=10))
    context = TrialContext(
        space=toy_space,
        data=toy_data(),
        data_hash="h",
        epochs=2,
        base_seed=0,
        artifact_store=FileSystemArtifactStore(str(tmp_path)),
        rung_data=RungData(toy_data()),
        trial_timeout=trial_timeout,
        deadline=deadline,
    )
    study = optuna.create_study(direction="maximize", pruner=make_pruner("rungs", 2))
    return study, make_objective(context)


def training_params(**fields) -> dict:
    from spaces import training
    from spaces.training import TrainConfig

    return training.params_of(TrainConfig(batch_size=64, **fields))


def test_a_reference_climbs_every_rung_and_sets_the_bar_the_first_sampled_config_must_clear(
    toy_space, tmp_path, monkeypatch
):
    study, objective = rung_study(toy_space, tmp_path, monkeypatch)
    study.enqueue_trial(toy_space.references()["toy-ref"][1])
    study.enqueue_trial({"toy.width": 16, **training_params(lr=1e-9)})  # learns nothing: stays at chance
    study.optimize(objective, n_trials=2)
    reference, sampled = study.trials
    assert reference.state == TrialState.COMPLETE and reference.user_attrs[REFERENCE_ATTR] == "toy-ref"
    assert sorted(reference.intermediate_values) == [1, 3, 9] and reference.intermediate_values[9] == reference.value
    assert reference.user_attrs[IMAGES_TRAINED_ATTR] == (33 + 100 + 300) * 2
    assert reference.user_attrs[RUNG_ATTR] == "300 rows x 2 epochs"
    assert reference.system_attrs["completed_rung_0"] == reference.intermediate_values[1]  # what the pruner compares
    # the first sampled config is no longer promoted unopposed: it loses to the reference on the cheapest rung
    assert sampled.state == TrialState.PRUNED and list(sampled.intermediate_values) == [1]
    assert REFERENCE_ATTR not in sampled.user_attrs


def test_a_reference_is_never_pruned_even_below_the_bar(toy_space, tmp_path, monkeypatch):
    study, objective = rung_study(toy_space, tmp_path, monkeypatch)
    reference_params = toy_space.references()["toy-ref"][1]
    # rivals no accuracy can reach at the cheap rungs, so the pruner says "prune" to whatever asks
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                params={},
                distributions={},
                value=1.0,
                intermediate_values={1: 2.0, 3: 2.0, 9: 1.0},
                system_attrs={"completed_rung_0": 2.0, "completed_rung_1": 2.0},
            )
        )
    study.enqueue_trial(reference_params)
    study.optimize(objective, n_trials=1)
    reference = study.trials[-1]
    assert reference.state == TrialState.COMPLETE and sorted(reference.intermediate_values) == [1, 3, 9]
    assert reference.system_attrs["completed_rung_0"] == reference.intermediate_values[1]


def test_a_config_worse_than_the_rung_before_it_is_screened_out_after_the_cheapest_rung(
    toy_space, tmp_path, monkeypatch
):
    study, objective = rung_study(toy_space, tmp_path, monkeypatch)
    study.enqueue_trial({"toy.width": 16, **training_params(lr=3e-3)})
    study.enqueue_trial({"toy.width": 16, **training_params(lr=1e-9)})  # learns nothing: stays at chance
    study.optimize(objective, n_trials=2)
    good, bad = study.trials
    assert good.state == TrialState.COMPLETE and good.value > 0.5
    assert bad.state == TrialState.PRUNED and list(bad.intermediate_values) == [1]
    assert bad.user_attrs[IMAGES_TRAINED_ATTR] == 33 * 2 and bad.user_attrs[RUNG_ATTR] == "33 rows x 2 epochs"


def test_a_rung_its_familys_measured_pace_cannot_finish_in_time_is_pruned_before_it_trains(
    toy_space, tmp_path, monkeypatch
):
    study, objective = rung_study(toy_space, tmp_path, monkeypatch, trial_timeout=5.0)
    study.enqueue_trial({"toy.width": 16, **training_params()})
    study.optimize(objective, n_trials=1)
    (first,) = study.trials
    assert first.state == TrialState.COMPLETE and first.user_attrs[FORWARD_FLOPS_ATTR] > 0
    # as if the family had trained far slower: the next trial's first rung is predicted over its 5 s
    for _ in range(2):
        study.add_trial(
            optuna.trial.create_trial(
                params=first.params,
                distributions=first.distributions,
                value=0.5,
                user_attrs={**first.user_attrs, "images_per_second": 0.01},
            )
        )
    study.enqueue_trial({"toy.width": 8, **training_params()})
    study.optimize(objective, n_trials=1)
    last = study.trials[-1]
    assert last.state == TrialState.PRUNED and last.intermediate_values == {}
    assert last.user_attrs[PRUNED_REASON_ATTR].startswith("predicted ")
    assert "33 rows x 2 epochs" in last.user_attrs[PRUNED_REASON_ATTR] and IMAGES_TRAINED_ATTR not in last.user_attrs


def test_no_trial_trains_past_the_runs_end_and_a_rung_predicted_past_it_never_starts(toy_space, tmp_path, monkeypatch):
    study, objective = rung_study(toy_space, tmp_path, monkeypatch, deadline=Deadline.after(60))
    study.enqueue_trial({"toy.width": 16, **training_params()})
    study.optimize(objective, n_trials=1)
    (first,) = study.trials
    assert first.state == TrialState.COMPLETE  # a minute is plenty for 433 toy rows x 2 epochs
    # as if the family trained far slower: the next trial's first rung is predicted past the end
    for _ in range(2):
        study.add_trial(
            optuna.trial.create_trial(
                params=first.params,
                distributions=first.distributions,
                value=0.5,
                user_attrs={**first.user_attrs, "images_per_second": 0.01},
            )
        )
    study.enqueue_trial({"toy.width": 8, **training_params()})
    study.optimize(objective, n_trials=1)
    predicted = study.trials[-1]
    assert predicted.state == TrialState.PRUNED and predicted.intermediate_values == {}
    assert predicted.user_attrs[PRUNED_REASON_ATTR].startswith("predicted ")
    # with the end already past and no pace to predict from, the first training step stops the trial
    study, objective = rung_study(toy_space, tmp_path, monkeypatch, deadline=Deadline.after(-1))
    study.enqueue_trial({"toy.width": 16, **training_params()})
    study.optimize(objective, n_trials=1)
    (stopped,) = study.trials
    assert stopped.state == TrialState.PRUNED and stopped.user_attrs[PRUNED_REASON_ATTR].startswith(
        "over the run's end: stopped before step 1"
    )


def test_a_new_study_prunes_on_rungs_and_an_old_one_keeps_its_pruner():
    assert resolve_pruner(None, None, "s") == "rungs"
    assert resolve_pruner("median", None, "s") == "median"
    assert resolve_pruner(None, {"space": "cnn"}, "s") == "hyperband"  # a study from before the attr
    assert resolve_pruner(None, {PRUNER_STUDY_ATTR: "rungs"}, "s") == "rungs"
    assert resolve_pruner("median", {PRUNER_STUDY_ATTR: "hyperband"}, "s") == "median"  # both prune on epochs
    with pytest.raises(UserError) as refused:
        resolve_pruner("hyperband", {PRUNER_STUDY_ATTR: "rungs"}, "s")
    assert "was pruned with --pruner rungs; leave --pruner out" in refused.value.cli_message
    with pytest.raises(UserError) as refused:
        resolve_pruner("rungs", {"space": "cnn"}, "s")
    assert "(or pass --pruner hyperband)" in refused.value.cli_message
    assert RunSpec(space="cnn").pruner is None
    with pytest.raises(UserError, match="sampler must be one of tpe, random"):
        RunSpec(space="cnn", sampler="grid")


def test_the_run_header_names_the_rungs_and_who_is_screened():
    assert describe_pruning("rungs", 4, 37_800) == (
        "every config trains on 4,200, then 12,600, then all 37,800 rows, 4 epochs each; a sampled one goes on while in the best third"
    )
    assert describe_pruning("rungs", 3, 900) == "3 epochs a trial; too few rows to screen on rungs of at least 1,000"
    assert describe_pruning("hyperband", 6, 37_800) == "up to 6 epochs a trial, pruned by hyperband"
