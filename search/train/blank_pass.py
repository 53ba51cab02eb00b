"""A training-mode forward pass over blank digits that leaves the model as it was: how the memory
bound (search.study.memory) and the cost prediction (search.train.cost) look at a config before it trains."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call

from search.config import IMAGE_SHAPE


def blank_training_pass(
    model: nn.Module, batch: int, around: contextlib.AbstractContextManager, *, grad: bool = True
) -> None:
    """Run `model` in training mode on `batch` blank (B, 1, 28, 28) images on its device, inside `around`
    (a FLOP counter, saved-tensor hooks). Its buffers (batch-norm statistics) are swapped for copies, and
    every submodule's own train/eval mode and the global CPU RNG are restored. Raises what the pass raises."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    modes = [(module, module.training) for module in model.modules()]  # each its own: a frozen part may be in eval
    model.train()
    try:
        with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(grad), around:
            functional_call(model, buffers, (torch.zeros(batch, *IMAGE_SHAPE, device=device),))
    finally:
        for module, training in modes:
            module.training = training
