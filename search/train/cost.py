"""A trial's time cost, predicted before it trains: FLOPs per image times images, over the device's FLOP/s.

forward_flops() counts one training-mode forward pass of one (1, 28, 28) digit with torch's
FlopCounterMode, which counts only matrix products and convolutions (attention included), at 2
FLOPs per multiply-add; normalisation, activations, pooling, dropout and the optimizer step are
free to it. Training is taken as TRAINING_FLOPS_PER_FORWARD forward passes (the backward pass
costs about two). Each image is also charged OVERHEAD_FORWARD_FLOPS, the work a training step does
per image whatever the model (augmentation's affine warp, copies, the loss, AdamW's step spread
over the batch): on FLOPs alone lenet (1.4 MFLOP) was predicted 4.6x faster than it trained from a
bn-cnn (38 MFLOP) calibration. Throughput is what trials that already trained on a device achieved,
in these charged training FLOPs per second, so the remaining uncounted work (a ViT's layer norms
and softmax, an STN's grid sampling) is folded into it, and families whose share of that differs
are predicted less well than two configs of one family.

Pure: no I/O, no Optuna; the caller records runs and decides what a prediction rules out.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from search.train.blank_pass import blank_training_pass

TRAINING_FLOPS_PER_FORWARD = 3  # forward + backward (gradients of inputs and of weights) ≈ 3 forwards
# Forward FLOPs each training image is charged besides its model's; fitted to lenet and bn-cnn on an
# AMD EPYC with bf16 autocast at 1 and 2 threads (5.9 and 5.4 MFLOP; about 120 and 90 us per image)
OVERHEAD_FORWARD_FLOPS = 6_000_000
COUNTED_BATCH = 2  # blank images per counting pass: batch-norm needs two


def _cpu_attention_flops(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one, which it would count as 0
_EXTRA_FORMULAS: dict[Any, Any] = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops


def forward_flops(model: nn.Module) -> int | None:
    """FLOPs (2 per multiply-add) of one training-mode forward pass of one IMAGE_SHAPE image on the model's device.

    Counted over a pass of COUNTED_BATCH blank images under no_grad; the model is left as it was (its
    buffers are swapped for copies, every submodule's train/eval mode and the global CPU RNG are restored). None
    when the pass fails: a user's family may not run on blank images.
    """
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    try:
        blank_training_pass(model, COUNTED_BATCH, counter, grad=False)
    except Exception:  # a user's family that can't run on blank images gets no prediction
        return None
    return counter.get_total_flops() // COUNTED_BATCH


def training_flops(forward: int, images: int) -> float:
    """Counted FLOPs of training `images` images (forward and backward) at `forward` FLOPs per image's forward pass."""
    return float(TRAINING_FLOPS_PER_FORWARD) * forward * images


def charged_training_flops(forward: int, images: int) -> float:
    """training_flops with each image's forward pass charged OVERHEAD_FORWARD_FLOPS more: what Throughput divides."""
    return training_flops(forward + OVERHEAD_FORWARD_FLOPS, images)


@dataclass(frozen=True)
class Throughput:
    """Charged training FLOPs per second a device achieves (charged_training_flops; see the module docstring)."""

    flops_per_second: float

    def __post_init__(self) -> None:
        if not self.flops_per_second > 0:  # NaN too
            raise ValueError(f"flops_per_second must be positive, got {self.flops_per_second}")

    @classmethod
    def from_runs(cls, runs: Iterable[tuple[int, float]]) -> Throughput | None:
        """The median charged training FLOP/s of runs that trained on this device, as (forward FLOPs per image, images/s) pairs.

        Runs with no FLOPs or no speed (None, 0, NaN) are skipped; None when none is left. The median,
        not the mean, so that one run slowed by a busy machine or sped by a tiny model moves it little.
        """
        achieved = [
            charged_training_flops(forward, 1) * speed
            for forward, speed in runs
            if forward is not None and speed is not None and forward > 0 and speed > 0
        ]
        return cls(statistics.median(achieved)) if achieved else None

    def seconds(self, forward_flops: int, images: int) -> float:
        """Predicted seconds of training steps over `images` images at `forward_flops` FLOPs per image's forward pass."""
        return charged_training_flops(forward_flops, images) / self.flops_per_second

    def images_per_second(self, forward_flops: int) -> float:
        """Predicted training images per second at `forward_flops` FLOPs per image's forward pass."""
        return self.flops_per_second / charged_training_flops(forward_flops, 1)
