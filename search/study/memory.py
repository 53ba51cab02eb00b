"""A trial's memory bound: estimate what a config needs to train before it trains, refuse it alone if too much.

The rule: a trial may use MEMORY_FRACTION of the memory available on its device when it starts
(the machine's available RAM for a CPU trial, the GPU's free memory for a CUDA trial), divided
by the number of trials that may share that device at once (Ray workers on one machine, or trials
packed on one GPU). A config whose estimate is above that fails alone, before training, with
both figures in its fail_reason; the study goes on.

The estimate: four copies of the parameters (weights, gradients, and the optimizer's two moments)
plus every tensor the forward pass keeps for the backward pass at the config's batch size, in
float32, extrapolated from two forward passes over 2 and 4 blank images (milliseconds; the meta
device, which allocates nothing, costs seconds of imports on first use). It leaves out the data set
(already resident) and counts a tensor saved twice twice, and bf16 autocast halves much of it, so
it errs high: a ViT with patch 4, width 512 and depth 12 at batch 128 is estimated at 3.9 GB
where about 3.3 GB was seen in use.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

from search.train.blank_pass import blank_training_pass

MEMORY_FRACTION = 0.8  # the rest is headroom for the process itself, allocator caches and the system
PARAMETER_COPIES = 4  # weights, gradients, and AdamW's two moments (SGD keeps one)
GB = 1e9
SMALL_BATCHES = (2, 4)  # batch-norm needs two images


class OverMemoryBound(RuntimeError):
    """A config would need more memory than its trial may use; the message gives both figures."""


def training_bytes(model: nn.Module, batch_size: int) -> int | None:
    """Rough bytes that training `model` at `batch_size` needs, besides the data (see the module docstring);
    None when its forward pass can't run on a few blank images."""
    activations = saved_activation_bytes(model, batch_size)
    if activations is None:
        return None
    return PARAMETER_COPIES * sum(p.numel() * 4 for p in model.parameters()) + activations


def saved_activation_bytes(model: nn.Module, batch_size: int) -> int | None:
    """Bytes of the tensors a training forward pass at `batch_size` keeps for backward, from two tiny passes.

    What a pass keeps is affine in the batch size (per-image activations plus batch-independent
    tensors such as weights), so passes over 2 and 4 blank images on the CPU give the line. The
    model is left as it was: its buffers (batch-norm statistics) are swapped for copies during the
    passes and the RNG is restored.
    """
    try:
        two, four = (_saved_bytes(model, batch) for batch in SMALL_BATCHES)
    except Exception:  # a user's family that can't run on blank images runs without a bound
        return None
    per_image = (four - two) / (SMALL_BATCHES[1] - SMALL_BATCHES[0])
    return max(0, int(two + per_image * (batch_size - SMALL_BATCHES[0])))


def _saved_bytes(model: nn.Module, batch: int) -> int:
    saved = 0

    def count(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    blank_training_pass(model, batch, saved_tensors_hooks(count, lambda tensor: tensor))
    return saved


def available_bytes(device: torch.device) -> int | None:
    """Memory a new trial can take on `device` now: free GPU memory, or the machine's available RAM (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_ram()


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo, capped by the cgroup's limit (a container) where one is set."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else -1
        return pages * os.sysconf("SC_PAGE_SIZE") if pages > 0 else None
    available = next(
        (int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")), None
    )
    try:
        limit, used = (Path("/sys/fs/cgroup", name).read_text().strip() for name in ("memory.max", "memory.current"))
        if limit != "max" and available is not None:
            available = min(available, int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return available


def check_fits(model: nn.Module, batch_size: int, device: torch.device, sharing: int = 1) -> int | None:
    """The estimate of `model` at `batch_size`; OverMemoryBound when it is above what one trial of `sharing` may use."""
    needed = training_bytes(model, batch_size)
    available = available_bytes(device)
    if needed is None or available is None:
        return needed
    limit = MEMORY_FRACTION * available / max(1, sharing)
    if needed > limit:
        shared = f", shared by {sharing} trials" if sharing > 1 else ""
        raise OverMemoryBound(
            f"needs about {needed / GB:.2f} GB to train at batch {batch_size}, over the {limit / GB:.2f} GB a trial may use "
            f"on {device} ({MEMORY_FRACTION:.0%} of {available / GB:.2f} GB available{shared})"
        )
    return needed
