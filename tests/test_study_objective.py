"""One trial's faults fail that trial alone with its reason: building its model, storing its artifacts,
a config too big for the memory a trial may use."""

import textwrap

import numpy as np
import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from search.study import memory
from search.study.memory import OverMemoryBound, check_fits, training_bytes
from search.study.objective import TrialContext, make_objective
from search.study.trial_attrs import FAIL_REASON_ATTR
from search.train.trainer import TrainingData
from spaces import load_space
from spaces.registry import Candidate
from spaces.training import TrainConfig
from spaces.vit import Config as VitConfig

SIZES = {"small": 16, "huge": 2048}
FAULT_SPACE = """
from dataclasses import dataclass
from torch import nn

NAME = "fault"


@dataclass(frozen=True)
class Config:
    size: str = "small"


def suggest(trial):
    return Config(size=trial.suggest_categorical("fault.size", ["small", "huge", "unbuildable"]))


def build(config):
    if config.size == "unbuildable":
        raise ValueError("this layer does not exist")
    width = {"small": 16, "huge": 2048}[config.size]
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
"""


class BrokenStore(FileSystemArtifactStore):
    """An artifact store whose uploads fail, as S3 does without credentials."""

    def write(self, artifact_id, content_body):
        raise OSError("no credentials to upload with")


def tiny_data() -> TrainingData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = np.arange(60) % 10
    return TrainingData.from_numpy(images[:40], labels[:40], images[40:], labels[40:], None, "cpu")


@pytest.fixture
def fault_space(tmp_path):
    path = tmp_path / "fault_space.py"
    path.write_text(textwrap.dedent(FAULT_SPACE))
    return load_space(str(path))


def run_configs(space, store, sizes: list[str]) -> list[optuna.trial.FrozenTrial]:
    context = TrialContext(space=space, data=tiny_data(), data_hash="h", epochs=1, base_seed=0, artifact_store=store)
    study = optuna.create_study(direction="maximize")
    for size in sizes:
        study.enqueue_trial({"fault.size": size, **fixed_training()})
    study.optimize(make_objective(context), n_trials=len(sizes), catch=(Exception,))
    return study.trials


def fixed_training() -> dict:
    from spaces import training

    return training.params_of(TrainConfig(batch_size=64))


def test_a_model_that_fails_to_build_fails_its_trial_alone_with_the_reason(fault_space, tmp_path):
    trials = run_configs(fault_space, FileSystemArtifactStore(str(tmp_path)), ["unbuildable", "small"])
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs[FAIL_REASON_ATTR] == "ValueError: this layer does not exist"


def test_a_trial_whose_artifacts_fail_to_upload_records_why(fault_space, tmp_path):
    (trial,) = run_configs(fault_space, BrokenStore(str(tmp_path)), ["small"])
    assert trial.state == TrialState.FAIL and trial.intermediate_values  # it trained, then the upload failed
    assert trial.user_attrs[FAIL_REASON_ATTR] == "OSError: no credentials to upload with"


def test_a_config_over_the_memory_bound_fails_alone_before_training(fault_space, tmp_path, monkeypatch):
    small, huge = (
        training_bytes(
            fault_space.build(Candidate("fault", fault_space.families["fault"].Config(size), TrainConfig())), 64
        )
        for size in ("small", "huge")
    )
    assert huge > 10 * small
    between = (small + huge) / 2 / memory.MEMORY_FRACTION  # a trial may use MEMORY_FRACTION of what is available
    monkeypatch.setattr(memory, "available_bytes", lambda device: between)
    trials = run_configs(fault_space, FileSystemArtifactStore(str(tmp_path)), ["huge", "small"])
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    reason = trials[0].user_attrs[FAIL_REASON_ATTR]
    assert reason.startswith("OverMemoryBound: needs about") and "at batch 64" in reason and "GB available" in reason
    assert not trials[0].intermediate_values  # refused before its first epoch
    assert 0 < trials[1].user_attrs["memory_mb"] * 1e6 <= between * memory.MEMORY_FRACTION


def test_the_memory_limit_is_shared_by_the_trials_of_one_device(monkeypatch):
    model = torch.nn.Linear(784, 10)
    needed = training_bytes(torch.nn.Sequential(torch.nn.Flatten(), model), 32)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 3 * needed / memory.MEMORY_FRACTION)
    flat = torch.nn.Sequential(torch.nn.Flatten(), model)
    assert check_fits(flat, 32, torch.device("cpu"), sharing=2) == needed
    with pytest.raises(OverMemoryBound, match="shared by 4 trials"):
        check_fits(flat, 32, torch.device("cpu"), sharing=4)


def test_the_estimate_of_a_big_vit_is_near_what_it_was_seen_to_use():
    # once seen: a sampled ViT (patch 4, width 512, depth 12) needed about 3.3 GB at batch 128
    model = load_space("vit").build(
        Candidate("vit", VitConfig(patch_size=4, width=512, depth=12, heads=8), TrainConfig())
    )
    assert 3.0e9 < training_bytes(model, 128) < 5.0e9


def test_the_estimate_grows_with_the_batch_as_activations_do():
    model = load_space("cnn").build(load_space("cnn").references()["bn-cnn"][0])
    parameters = memory.PARAMETER_COPIES * 4 * sum(p.numel() for p in model.parameters())
    small, large = (training_bytes(model, batch) - parameters for batch in (64, 512))
    assert small > 0 and large == pytest.approx(8 * small, rel=0.05)


def test_estimating_leaves_the_model_and_the_rng_as_they_were():
    model = load_space("cnn").build(load_space("cnn").references()["bn-cnn"][0])
    before = {name: t.clone() for name, t in model.state_dict().items()}
    model.eval()
    rng = torch.get_rng_state()
    training_bytes(model, 128)
    assert not model.training and torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())  # batch-norm statistics too


def test_estimating_keeps_a_frozen_part_in_eval_mode():
    model = load_space("cnn").build(load_space("cnn").references()["bn-cnn"][0])
    frozen = model.features[0]
    frozen.eval()  # a training model with one block kept in eval, e.g. its batch-norm statistics frozen
    training_bytes(model, 128)
    assert model.training and not frozen.training and all(not m.training for m in frozen.modules())
