"""Cost prediction: FLOPs of a forward pass, left-alone models, the device's throughput, and one real calibration."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search.train.cost import (
    OVERHEAD_FORWARD_FLOPS,
    TRAINING_FLOPS_PER_FORWARD,
    Throughput,
    charged_training_flops,
    forward_flops,
    training_flops,
)
from search.train.models import build_model
from search.train.trainer import TrainingData, train
from spaces import load_space


def conv_net(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),  # (B, 2w, 28, 28): width² dominates
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


class Attention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(len(x), 1, 16, 49)  # (B, heads 1, 16 tokens, 49 channels)
        return F.scaled_dot_product_attention(tokens, tokens, tokens).flatten(1)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("can't run on blank images")


def test_a_linear_layer_costs_two_flops_per_multiply_add() -> None:
    assert forward_flops(nn.Sequential(nn.Flatten(), nn.Linear(784, 10))) == 2 * 784 * 10


def test_attention_on_the_cpu_is_counted() -> None:
    assert forward_flops(Attention()) == 2 * 2 * 16 * 16 * 49  # scores and their weighted sum


def test_doubling_a_conv_nets_widths_about_quadruples_its_flops() -> None:
    narrow, wide = forward_flops(conv_net(8)), forward_flops(conv_net(16))
    assert narrow > 2 * 8 * 16 * 9 * 28 * 28  # at least the second conv
    assert 3.5 < wide / narrow < 4.1


def test_forward_flops_leaves_the_model_and_the_rng_as_they_were() -> None:
    model = conv_net(4)
    model[1].running_mean.fill_(0.5)
    model.eval()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.random.get_rng_state()
    assert (
        forward_flops(nn.Sequential(model, nn.Dropout(0.5))) is not None
    )  # dropout draws from the RNG in training mode
    assert not model.training and not any(m.training for m in model.modules())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert torch.equal(torch.random.get_rng_state(), rng)

    model.train()
    forward_flops(model)
    assert model.training


def test_a_model_that_fails_on_blank_images_has_no_flops() -> None:
    model = Broken().eval()
    assert forward_flops(model) is None
    assert not model.training


def test_throughput_is_the_median_of_the_runs_and_predicts_linearly() -> None:
    forward = 10_000_000
    per_image = charged_training_flops(forward, 1)
    runs = [(forward, 100.0), (forward, 300.0), (forward, 200.0), (None, 50.0), (forward, 0.0)]  # the last two skipped
    throughput = Throughput.from_runs(runs)
    assert throughput.flops_per_second == pytest.approx(200 * per_image)
    assert throughput.seconds(forward, 1000) == pytest.approx(5.0)
    assert throughput.seconds(forward, 3000) == pytest.approx(3 * throughput.seconds(forward, 1000))
    bigger = 2 * forward + OVERHEAD_FORWARD_FLOPS  # charged twice as much per image
    assert throughput.seconds(bigger, 1000) == pytest.approx(2 * throughput.seconds(forward, 1000))
    assert throughput.images_per_second(forward) == pytest.approx(200)
    assert training_flops(forward, 7) == TRAINING_FLOPS_PER_FORWARD * forward * 7
    assert Throughput.from_runs([]) is None and Throughput.from_runs([(None, 10.0)]) is None
    with pytest.raises(ValueError):
        Throughput(0.0)


@pytest.mark.slow
def test_a_bn_cnn_calibration_predicts_lenets_training_time_within_3x() -> None:
    images_count = 512
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (images_count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, images_count)
    data = TrainingData.from_numpy(images, labels, images[:64], labels[:64], None, "cpu")
    space = load_space("cnn")
    references = space.references()
    measured = {}
    for name in ("lenet", "bn-cnn", "lenet", "bn-cnn"):  # the first run of each warms it up
        candidate, _ = references[name]
        model = build_model(space, candidate, seed=0)
        flops = forward_flops(model)
        started = time.perf_counter()
        result = train(model, data, candidate.train, epochs=1)
        assert (
            time.perf_counter() - started >= images_count / result.images_per_second
        )  # steps are part of the wall time
        measured[name] = (flops, result.images_per_second)
    throughput = Throughput.from_runs([measured["bn-cnn"]])
    lenet_flops, lenet_speed = measured["lenet"]
    ratio = throughput.seconds(lenet_flops, images_count) / (images_count / lenet_speed)
    print(f"predicted / measured lenet seconds: {ratio:.2f}")
    assert 1 / 3 < ratio < 3, ratio
