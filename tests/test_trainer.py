"""The training engine on small synthetic digits: augmentation, the loop, schedules, determinism, divergence."""

from __future__ import annotations

import time
from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from search.config import Deadline
from search.train import device as device_module
from search.train.augment import random_affine
from search.train.device import autocast_dtype, select_device, set_threads
from search.train.trainer import (
    ComputePlan,
    Diverged,
    EpochReport,
    FastDropout,
    OutOfTime,
    TrainingData,
    _batch_bounds,
    _cosine_multiplier,
    _onecycle_multiplier,
    predict_proba,
    train,
)
from spaces.training import TrainConfig

NO_AUGMENT = dict(rotation=0.0, shift=0.0, zoom=0.0)
FAST = TrainConfig(batch_size=64, lr=3e-3, **NO_AUGMENT)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(4),  # (B, 8, 7, 7)
        nn.Dropout(0.1),
        nn.Flatten(),
        nn.Linear(8 * 7 * 7, 10),
    )


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.ReLU(), nn.Linear(32, 10))


class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * float("nan")


def class_patterns(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of 10 fixed blocky templates (7x7 cells of 4x4 px), one per class: learnable, not trivial."""
    templates_rng = np.random.default_rng(1234)  # same templates for every split
    cells = templates_rng.random((10, 7, 7)) > 0.6  # (10, 7, 7)
    templates = cells.repeat(4, axis=1).repeat(4, axis=2) * 200.0  # (10, 28, 28)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.int64)
    noise = rng.normal(0, 60, (count, 28, 28))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)  # (count, 28, 28)
    return images, labels


def pattern_data(train_count: int = 1024, val_count: int = 300, test_count: int = 50) -> TrainingData:
    train_images, train_labels = class_patterns(train_count, seed=1)
    val_images, val_labels = class_patterns(val_count, seed=2)
    test_images, _ = class_patterns(test_count, seed=3)
    return TrainingData.from_numpy(train_images, train_labels, val_images, val_labels, test_images, "cpu")


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return pattern_data()


# --- augmentation ---------------------------------------------------------------------------------


def left_bar_images(count: int) -> torch.Tensor:
    images = torch.zeros(count, 1, 28, 28)
    images[:, :, 6:22, 4:10] = 1.0  # a vertical bar well left of centre
    return images


def test_random_affine_is_identity_when_all_amounts_are_zero() -> None:
    images = torch.rand(5, 1, 28, 28)
    out = random_affine(images, **NO_AUGMENT, generator=torch.Generator().manual_seed(0))
    assert out is images


def test_random_affine_keeps_shape_and_varies_per_image() -> None:
    images = left_bar_images(16)
    out = random_affine(images, rotation=15, shift=0.1, zoom=0.1, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    distinct = {tuple(img.flatten().round(decimals=4).tolist()) for img in out}
    assert len(distinct) == 16  # one transform per image, not one per batch


def test_random_affine_never_mirrors() -> None:
    images = left_bar_images(256)
    out = random_affine(images, rotation=20, shift=0.15, zoom=0.15, generator=torch.Generator().manual_seed(0))
    left, right = out[..., :14].sum(dim=(1, 2, 3)), out[..., 14:].sum(dim=(1, 2, 3))
    assert bool((left > 2 * right).all())  # a flip would put (nearly) all of the bar on the right
    mass_ratio = out.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert 0.7 < mass_ratio.mean() < 1.3  # warped, not blanked or smeared


def test_random_affine_shift_moves_content_by_at_most_the_limit() -> None:
    images = left_bar_images(256)
    out = random_affine(images, rotation=0, shift=0.1, zoom=0, generator=torch.Generator().manual_seed(0))
    columns = torch.arange(28.0)
    centre = (out.sum(dim=(1, 2)) * columns).sum(-1) / out.sum(dim=(1, 2, 3))  # (B,) column centre of mass
    moved = centre - 6.5
    assert moved.abs().max() <= 0.1 * 28 + 0.5
    assert moved.std() > 0.5  # it does move


def test_random_affine_is_reproducible_from_the_generator() -> None:
    images = left_bar_images(8)
    first = random_affine(images, rotation=10, shift=0.1, zoom=0.1, generator=torch.Generator().manual_seed(7))
    second = random_affine(images, rotation=10, shift=0.1, zoom=0.1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


# --- dropout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_dropout_matches_dropout_in_distribution(p: float, channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 16, 14, 14) + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    dropout = FastDropout(p).train()
    y = dropout(x)
    dropped = y == 0
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.01)
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p), rtol=1e-4, atol=1e-6)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    # drops are not tied to a position or channel
    by_channel = dropped.float().mean(dim=(0, 2, 3))
    assert (by_channel - p).abs().max().item() < 0.03
    y.sum().backward()
    torch.testing.assert_close(x.grad, (~dropped).float() / (1 - p), rtol=1e-4, atol=1e-6)
    assert torch.equal(dropout.eval()(x), x)


def test_fast_dropout_scales_bf16_kept_values_exactly() -> None:
    torch.manual_seed(0)
    x = (torch.rand(32, 8, 7, 7) + 0.5).to(torch.bfloat16)
    y = FastDropout(0.25).train()(x)
    kept = y != 0
    assert y.dtype == torch.bfloat16
    # 1 / 0.75 rounded to bf16 would be 1.3359; the scale must be applied as 4/3
    assert torch.equal(y[kept], (x[kept].float() * (4 / 3)).to(torch.bfloat16))


def test_train_uses_fast_dropout_on_cpu_and_gives_the_callers_modules_back(data: TrainingData) -> None:
    model = tiny_cnn()
    original = model[4]
    during = []
    train(model, data, FAST, epochs=1, on_epoch=lambda report: during.append(model[4]))
    assert isinstance(during[0], FastDropout) and during[0].p == 0.1
    assert model[4] is original and type(original) is torch.nn.Dropout


# --- data and devices -----------------------------------------------------------------------------


def test_training_data_from_numpy_adds_the_channel_axis() -> None:
    images, labels = class_patterns(20, seed=0)
    data = TrainingData.from_numpy(images, labels, images[:5], labels[:5], None, "cpu")
    assert data.train_images.shape == (20, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.val_labels.dtype == torch.int64 and data.test_images.shape == (0, 1, 28, 28)


def test_training_data_names_the_bad_field() -> None:
    images, labels = class_patterns(20, seed=0)
    with pytest.raises(ValueError, match="val_labels"):
        TrainingData.from_numpy(images, labels, images[:5], labels[:4], None, "cpu")


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="tpu"):
        select_device("tpu")
    with pytest.raises(ValueError):
        set_threads(0)


def test_cpu_autocast_on_this_machine_follows_its_flags_and_its_measured_speedup() -> None:
    chosen = autocast_dtype(torch.device("cpu"))
    if not device_module._cpu_has_native_bf16() or not torch.backends.mkldnn.is_available():
        assert chosen is None  # emulated bf16 is always slower: never chosen
    else:
        faster = device_module._cpu_bf16_speedup() >= device_module.BF16_MIN_SPEEDUP
        assert chosen == (torch.bfloat16 if faster else None)


@pytest.mark.parametrize(
    ("native_flags", "speedup", "expected"),
    [(True, 2.3, torch.bfloat16), (True, 0.55, None), (True, 1.1, None), (False, 2.3, None)],
)
def test_cpu_autocasts_to_bf16_only_where_the_flags_and_a_timed_matmul_both_say_it_is_faster(
    native_flags: bool, speedup: float, expected: torch.dtype | None
) -> None:
    with (
        mock.patch("search.train.device._cpu_has_native_bf16", return_value=native_flags),
        mock.patch("search.train.device._cpu_bf16_speedup", return_value=speedup),
        mock.patch("torch.backends.mkldnn.is_available", return_value=True),
    ):
        assert autocast_dtype(torch.device("cpu")) == expected


def test_the_bf16_probe_is_the_ratio_of_the_two_timings() -> None:
    timings = {torch.float32: 0.004, torch.bfloat16: 0.001}
    with mock.patch("search.train.device._best_matmul_seconds", side_effect=lambda dtype: timings[dtype]):
        assert device_module._cpu_bf16_speedup.__wrapped__() == pytest.approx(4.0)


def test_the_bf16_probe_times_a_real_matmul() -> None:
    # 2 * 512**3 = 0.27 GFLOP: above 1 GFLOP/s and below 10 TFLOP/s on any CPU that runs this suite
    seconds = device_module._best_matmul_seconds(torch.float32)
    assert 2.7e-5 < seconds < 0.27


# --- the training loop ----------------------------------------------------------------------------


def test_train_stops_at_the_first_step_past_its_deadline(data: TrainingData) -> None:
    with pytest.raises(OutOfTime, match="before step 1 of .* in epoch 1"):
        train(tiny_cnn(), data, FAST, epochs=2, deadline=Deadline.after(0))
    reports: list[EpochReport] = []

    def slow_callback(report: EpochReport) -> None:  # time spent between epochs counts too
        reports.append(report)
        time.sleep(1.2)

    with pytest.raises(OutOfTime, match="before step 1 of .* in epoch 2"):
        train(tiny_cnn(), data, FAST, epochs=3, on_epoch=slow_callback, deadline=Deadline.after(1.0))
    assert [r.epoch for r in reports] == [1]


def test_precision_and_memory_format_are_options_that_override_the_plan(data: TrainingData) -> None:
    model = tiny_cnn()
    assert ComputePlan.for_model(model, torch.device("cpu"), precision="fp32", channels_last=True) == ComputePlan(
        torch.device("cpu"), None, True
    )
    assert ComputePlan.for_model(model, torch.device("cpu"), precision="bf16").autocast == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        train(model, data, FAST, epochs=1, precision="fp16")
    result = train(tiny_cnn(), data, FAST, epochs=1, precision="fp32", channels_last=False)
    assert 0 <= result.val_accuracy <= 1


def test_train_reports_every_epoch(data: TrainingData) -> None:
    reports: list[EpochReport] = []
    result = train(tiny_cnn(), data, FAST, epochs=2, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2]
    assert result.history == reports
    trained_per_epoch = len(data.train_labels)  # 1,024 digits: 16 whole batches of 64
    for r in reports:
        assert 0 < r.train_loss < 10 and 0 < r.val_loss < 10 and 0 <= r.val_accuracy <= 1
        # images over training-step time only, so at least the images over all the time spent
        assert r.images_per_second >= r.epoch * trained_per_epoch / r.seconds
    assert 0 < reports[0].seconds < reports[1].seconds == result.train_seconds
    assert result.val_probs.shape == (300, 10) and result.val_probs.dtype == np.float32
    assert result.test_probs.shape == (50, 10) and result.test_probs.dtype == np.float32
    np.testing.assert_allclose(result.val_probs.sum(axis=1), 1, atol=1e-4)
    assert result.val_accuracy == reports[-1].val_accuracy and result.val_loss == reports[-1].val_loss
    assert result.device == "cpu"


def test_a_run_judged_on_its_end_validates_once_and_predicts_no_test_digits(data: TrainingData) -> None:
    reports: list[EpochReport] = []
    result = train(
        tiny_cnn(), data, FAST, epochs=3, on_epoch=reports.append, validate_every_epoch=False, predict_test=False
    )
    assert [(r.val_loss, r.val_accuracy) for r in reports[:2]] == [(None, None), (None, None)]
    assert result.val_accuracy == reports[-1].val_accuracy is not None and result.val_probs.shape == (300, 10)
    assert result.test_probs is None
    # the same run, judged every epoch, ends where it did: skipping a pass changes no weights
    full = train(tiny_cnn(), data, FAST, epochs=3)
    assert full.val_accuracy == result.val_accuracy and full.val_loss == result.val_loss


def test_the_plateau_schedule_validates_every_epoch_since_it_steps_on_the_validation_loss(data: TrainingData) -> None:
    reports: list[EpochReport] = []
    train(
        tiny_cnn(),
        data,
        replace(FAST, schedule="plateau"),
        epochs=2,
        on_epoch=reports.append,
        validate_every_epoch=False,
    )
    assert all(r.val_loss is not None for r in reports)


def test_a_learnable_problem_is_learned(data: TrainingData) -> None:
    config = TrainConfig(batch_size=64, lr=3e-3, rotation=5, shift=0.05, zoom=0.05)
    result = train(tiny_cnn(), data, config, epochs=4)
    assert result.val_accuracy > 0.9
    assert result.history[-1].train_loss < result.history[0].train_loss
    labels = data.val_labels.numpy()
    assert (result.val_probs.argmax(axis=1) == labels).mean() == pytest.approx(result.val_accuracy)


class Stop(Exception):
    pass


def test_an_exception_from_on_epoch_propagates(data: TrainingData) -> None:
    calls = []

    def prune(report: EpochReport) -> None:
        calls.append(report.epoch)
        raise Stop(f"pruned at {report.epoch}")

    with pytest.raises(Stop, match="pruned at 1"):
        train(tiny_cnn(), data, FAST, epochs=3, on_epoch=prune)
    assert calls == [1]


def test_a_model_that_outputs_nan_diverges(data: TrainingData) -> None:
    with pytest.raises(Diverged, match="epoch 1"):
        train(NaNModel(), data, FAST, epochs=2)


def test_an_enormous_learning_rate_diverges(data: TrainingData) -> None:
    config = TrainConfig(optimizer="sgd", lr=1e12, schedule="cosine", batch_size=64, **NO_AUGMENT)
    with pytest.raises(Diverged, match="epoch 1"):
        train(tiny_mlp(), data, config, epochs=2)


def test_same_seed_same_result_other_seed_other_result(data: TrainingData) -> None:
    config = TrainConfig(batch_size=64, rotation=10, shift=0.1, zoom=0.1)  # augmentation and dropout both random
    first = train(tiny_cnn(), data, config, epochs=2, seed=3)
    again = train(tiny_cnn(), data, config, epochs=2, seed=3)
    other = train(tiny_cnn(), data, config, epochs=2, seed=4)
    assert np.array_equal(first.val_probs, again.val_probs)
    assert np.array_equal(first.test_probs, again.test_probs)
    losses = [(r.train_loss, r.val_loss, r.val_accuracy) for r in first.history]
    assert losses == [(r.train_loss, r.val_loss, r.val_accuracy) for r in again.history]
    assert not np.array_equal(first.val_probs, other.val_probs)


def test_train_leaves_the_global_rng_alone(data: TrainingData) -> None:
    model = tiny_cnn()  # seeds the global RNG itself, so built first
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    train(model, data, FAST, epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_predict_proba_reproduces_validation_probabilities(data: TrainingData) -> None:
    result = train(tiny_cnn(), data, FAST, epochs=1)
    assert np.array_equal(predict_proba(result.model, data.val_images), result.val_probs)
    assert result.model.training  # predict_proba restores the mode it found

    reloaded = tiny_cnn(seed=99)  # other init, then the trained weights, as after loading an artifact
    reloaded.load_state_dict(result.model.state_dict())
    assert np.array_equal(predict_proba(reloaded, data.val_images), result.val_probs)
    assert np.array_equal(predict_proba(reloaded, data.test_images), result.test_probs)
    assert predict_proba(reloaded, data.test_images[:0]).shape == (0, 10)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "plateau"])
def test_every_optimizer_and_schedule_learns(data: TrainingData, optimizer: str, schedule: str) -> None:
    lr = 3e-3 if optimizer == "adamw" else 0.05
    config = TrainConfig(optimizer=optimizer, lr=lr, schedule=schedule, batch_size=64, **NO_AUGMENT)
    result = train(tiny_cnn(), data, config, epochs=3)
    assert result.val_accuracy > 0.5  # chance is 0.1
    assert result.history[-1].train_loss < result.history[0].train_loss


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_weight_decay_is_decoupled_from_the_learning_rate(data: TrainingData, optimizer: str) -> None:
    def weight_norm_after(lr: float, weight_decay: float) -> float:
        config = TrainConfig(
            optimizer=optimizer, lr=lr, weight_decay=weight_decay, schedule="cosine", batch_size=64, **NO_AUGMENT
        )
        model = tiny_mlp()
        train(model, data, config, epochs=1)
        return model[1].weight.norm().item()

    initial = tiny_mlp()[1].weight.norm().item()
    # a tiny lr barely moves the weights, so the shrinkage is the decay alone: 16 steps of
    # 1 - 0.02 * (cosine multiplier), whose mean is ~0.5 -> factor ~exp(-0.16)
    expected = initial * np.prod([1 - 0.02 * _cosine_multiplier(s, 16) for s in range(16)])
    for lr in (1e-7, 1e-6):
        assert weight_norm_after(lr, 0.02) == pytest.approx(expected, rel=0.02)
    assert weight_norm_after(1e-7, 0.0) == pytest.approx(initial, rel=1e-3)


def test_schedule_multipliers() -> None:
    assert _onecycle_multiplier(0, 100) == pytest.approx(0.04)
    assert _onecycle_multiplier(20, 100) == pytest.approx(1.0)
    assert _onecycle_multiplier(99, 100) < 0.001
    assert max(_onecycle_multiplier(s, 100) for s in range(100)) == pytest.approx(1.0)
    assert _cosine_multiplier(0, 100) == 1.0 and _cosine_multiplier(50, 100) == pytest.approx(0.5)
    assert _cosine_multiplier(99, 100) < 0.001


def test_only_a_tiny_last_batch_is_dropped() -> None:
    assert _batch_bounds(100, 32) == [(0, 32), (32, 64), (64, 96)]  # 4 left over: dropped
    assert _batch_bounds(120, 32)[-1] == (96, 120)  # 24 left over: kept
    assert _batch_bounds(10, 32) == [(0, 10)]  # fewer than one batch: still trained on


def test_validation_covers_every_example_beyond_one_eval_batch() -> None:
    data = pattern_data(train_count=130, val_count=1100, test_count=0)  # two full 512-image eval batches and a part
    result = train(tiny_mlp(), data, FAST, epochs=1)
    assert result.val_probs.shape == (1100, 10) and result.test_probs.shape == (0, 10)
