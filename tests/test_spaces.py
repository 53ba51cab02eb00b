"""Every family's space: sampled configs and references build, run and train; the registry API."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import FixedTrial

import spaces
from spaces import cnn, resnet, stn, training, vit
from spaces.registry import FAMILY_PARAM

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIXTURE = Path(__file__).parent / "fixtures" / "my_space.py"
SPACE_NAMES = [*sorted(spaces.FAMILIES), "all", str(FIXTURE)]
SPACE_IDS = [*sorted(spaces.FAMILIES), "all", "user-file"]
SEEDS = range(5)


@contextmanager
def strict():
    """Out-of-range param values only warn in Optuna; make them fail."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def check_forward_backward(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([3, 7])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} is unused"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite grad"
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def model_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if not k.startswith("train.") and k != FAMILY_PARAM}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("space_name", SPACE_NAMES, ids=SPACE_IDS)
def test_sampled_config_builds_and_trains(space_name: str, seed: int) -> None:
    space = spaces.load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    trial = study.ask()
    candidate = space.suggest(trial)

    family = space.families[candidate.family]
    assert isinstance(candidate.model, family.Config)
    assert isinstance(candidate.train, training.TrainConfig)
    for key in trial.params:
        assert key.startswith((f"{family.NAME}.", "train.")) or key == FAMILY_PARAM, key
    assert (FAMILY_PARAM in trial.params) == (space_name == "all")
    # params_of inverts suggest exactly: every param it names is sampled, and nothing more
    assert family.params_of(candidate.model) == model_params(trial.params)
    with strict():
        assert space.candidate_from_params(trial.params) == candidate
    check_forward_backward(space.build(candidate))


REFERENCE_CASES, REFERENCE_IDS = [], []
for _space_id, _space_name in zip(SPACE_IDS, SPACE_NAMES):
    for _ref in spaces.load_space(_space_name).references():
        REFERENCE_CASES.append((_space_name, _ref))
        REFERENCE_IDS.append(f"{_space_id}:{_ref}")


@pytest.mark.parametrize(("space_name", "ref_name"), REFERENCE_CASES, ids=REFERENCE_IDS)
def test_reference_lies_in_its_space(space_name: str, ref_name: str) -> None:
    space = spaces.load_space(space_name)
    candidate, params = space.references()[ref_name]
    with strict():
        trial = FixedTrial(params)
        assert space.suggest(trial) == candidate
        assert trial.params == params  # no stale or missing params
        assert space.candidate_from_params(params) == candidate

    # as the lead enqueues it: the study's first trial is exactly the reference
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    study.enqueue_trial(params)
    with strict():
        trial = study.ask()
        assert space.suggest(trial) == candidate
    assert trial.params == params
    check_forward_backward(space.build(candidate))


def test_out_of_space_params_fail_strictly() -> None:
    space = spaces.load_space("vit")
    _, params = space.references()["vit-seed"]
    with strict(), pytest.raises(UserWarning, match="vit.depth"):
        space.candidate_from_params({**params, "vit.depth": 20})
    with pytest.raises(ValueError):
        space.candidate_from_params({**params, "vit.patch_size": 5})


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: vit.Config(width=100, heads=8), "width"),
        (lambda: vit.Config(patch_size=5), "patch_size"),
        (lambda: vit.Config(pool="max"), "pool"),
        (lambda: vit.Config(drop_path=1.0), "drop_path"),
        (lambda: cnn.Config(widths=(32, 64), kernels=(3,)), "kernels"),
        (lambda: cnn.Config(kernels=(4, 4)), "kernels"),
        (lambda: cnn.Config(widths=(8,) * 5, kernels=(3,) * 5), "widths"),
        (lambda: cnn.Config(downsample="avgpool"), "downsample"),
        (lambda: cnn.Config(head_dropout=1.0), "head_dropout"),
        (lambda: resnet.Config(blocks=(1,)), "blocks"),
        (lambda: resnet.Config(strides=(1, 3)), "strides"),
        (lambda: stn.Config(loc_kernels=(7,)), "loc_kernels"),
        (lambda: stn.Config(body=vit.Config()), "body"),
        (lambda: training.TrainConfig(optimizer="adam"), "optimizer"),
    ],
)
def test_invalid_config_names_the_field(make, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_configs_coerce_lists_to_tuples() -> None:
    assert cnn.Config(widths=[32, 64], kernels=[3, 3]) == cnn.Config()
    assert stn.Config(body={"widths": [16, 32], "kernels": [5, 3]}).body == cnn.Config(widths=(16, 32), kernels=(5, 3))


def test_stn_starts_as_identity_warp() -> None:
    model = stn.build(stn.REFERENCES["stn-cnn"].model)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model.transform(x), x, atol=1e-5, rtol=1e-5)


def test_stn_body_is_the_cnn_family() -> None:
    config = stn.REFERENCES["stn-cnn"].model
    assert config.body == cnn.REFERENCES["bn-cnn"].model
    assert isinstance(stn.build(config).body, cnn.ConvNet)
    assert all(k.startswith(("stn.loc_", "stn.cnn_")) for k in stn.params_of(config))


def test_unknown_space_lists_known_names() -> None:
    with pytest.raises(spaces.SpaceError) as info:
        spaces.load_space("transformer")
    for name in ["all", *spaces.FAMILIES]:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_space_chooses_family_first() -> None:
    space = spaces.load_space("all")
    assert space.families == spaces.FAMILIES
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    for _ in range(30):
        trial = study.ask()
        candidate = space.suggest(trial)
        assert next(iter(trial.params)) == FAMILY_PARAM
        assert trial.params[FAMILY_PARAM] == candidate.family
        seen.add(candidate.family)
    assert seen == set(spaces.FAMILIES)

    refs = space.references()
    assert set(refs) == {name for family in spaces.FAMILIES.values() for name in family.REFERENCES}
    for candidate, params in refs.values():
        assert params[FAMILY_PARAM] == candidate.family


def test_single_family_space() -> None:
    space = spaces.load_space("cnn")
    assert space.name == "cnn" and list(space.families) == ["cnn"]
    assert set(space.references()) == {"lenet", "bn-cnn", "big-kernel"}
    assert all(FAMILY_PARAM not in params for _, params in space.references().values())
    with pytest.raises(spaces.SpaceError, match="vit"):
        space.build(spaces.Candidate("vit", vit.Config(), training.TrainConfig()))


def test_user_space_file() -> None:
    space = spaces.load_space(str(FIXTURE))
    assert space.name == "my_space"
    assert list(space.families) == ["mlp"]
    candidate, params = space.references()["mlp-small"]
    assert params["mlp.hidden"] == candidate.model.hidden
    assert space.candidate_from_params(params) == candidate


def test_user_space_file_missing_attribute(tmp_path: Path) -> None:
    source = FIXTURE.read_text().replace("def build(", "def _not_build(")
    path = tmp_path / "broken_space.py"
    path.write_text(source)
    with pytest.raises(spaces.SpaceError, match=r"broken_space\.py.*missing build"):
        spaces.load_space(str(path))


def test_user_space_file_failing_import(tmp_path: Path) -> None:
    path = tmp_path / "bad_space.py"
    path.write_text("import not_a_module_anywhere\n")
    with pytest.raises(spaces.SpaceError, match=r"bad_space\.py.*ModuleNotFoundError"):
        spaces.load_space(str(path))


def test_user_space_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(spaces.SpaceError, match="not found"):
        spaces.load_space(str(tmp_path / "nowhere.py"))


def test_import_has_no_optuna_dependency() -> None:
    code = "import sys, spaces; assert 'optuna' not in sys.modules, 'spaces imported optuna'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def conv_macs(model: torch.nn.Module) -> int:
    """Multiply-accumulates of the model's convolutions for one 28x28 image."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return total


def test_sampled_resnets_cost_about_a_cnn_reference() -> None:
    """Resnets sampled at full resolution took 180 s per Kaggle epoch; the space is sized for 28 px."""
    costliest_cnn = max(conv_macs(cnn.build(r.model)) for r in cnn.REFERENCES.values())  # big-kernel, ~48M
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    costs = sorted(conv_macs(resnet.build(resnet.suggest(study.ask()))) for _ in range(100))
    assert costs[len(costs) // 2] < costliest_cnn / 2  # median ~16M, bn-cnn is ~18M
    assert costs[-1] < 1.5 * costliest_cnn  # the widest, deepest corner of the space
    for ref in resnet.REFERENCES.values():
        assert conv_macs(resnet.build(ref.model)) < costliest_cnn


def test_resnet_stage_limits_follow_the_resolution() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(1))
    for _ in range(100):
        config = resnet.suggest(study.ask())
        side = 28
        for width, blocks, stride in zip(config.widths, config.blocks, config.strides):
            side = (side + stride - 1) // stride
            max_width, max_blocks = resnet.stage_limits(side)
            assert 16 <= width <= max_width and 1 <= blocks <= max_blocks, config


@pytest.mark.parametrize("name", [*sorted(spaces.FAMILIES), "all"])
def test_categorical_params_keep_the_choices_earlier_versions_stored(name) -> None:
    """Optuna refuses a study whose trials drew one categorical param from two choice sets, so a
    changed choice list (or one that depends on earlier draws) breaks every study created before.
    tests/fixtures/categorical_choices.json holds the choices as studies have stored them."""
    stored = json.loads((Path(__file__).parent / "fixtures" / "categorical_choices.json").read_text())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(2))
    for _ in range(60):
        trial = study.ask()
        spaces.load_space(name).suggest(trial)
        for param, distribution in trial.distributions.items():
            if isinstance(distribution, optuna.distributions.CategoricalDistribution):
                assert list(distribution.choices) == stored[param], param


def test_training_ranges_stay_trainable() -> None:
    """Weight decay is per-step shrinkage, so its top must stay mild over a whole search trial."""
    steps = 6 * -(-37_800 // min(training.BATCH_SIZES))  # 6 Kaggle epochs at the smallest batch
    assert training.WEIGHT_DECAY_RANGE[1] * steps < 4  # at most ~exp(-4) before the schedule halves it
    assert training.LR_RANGES["sgd"][1] <= 0.05 and training.LR_RANGES["adamw"][1] <= 5e-3
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    for _ in range(50):
        config = training.suggest(study.ask())
        low, high = training.LR_RANGES[config.optimizer]
        assert low <= config.lr <= high
        assert training.WEIGHT_DECAY_RANGE[0] <= config.weight_decay <= training.WEIGHT_DECAY_RANGE[1]
    # every family's references keep their recipes inside the ranges
    for family in spaces.FAMILIES.values():
        for ref in family.REFERENCES.values():
            low, high = training.LR_RANGES[ref.train.optimizer]
            assert low <= ref.train.lr <= high, ref.name
            assert training.WEIGHT_DECAY_RANGE[0] <= ref.train.weight_decay <= training.WEIGHT_DECAY_RANGE[1], ref.name
