"""Train one model on digits that already live on the device; no Optuna in here.

The whole dataset sits on the device as uint8 (see TrainingData). Each step gathers a shuffled batch,
augments it with one batched affine warp, normalises it and runs the model, under bf16 autocast where
the device runs bf16 natively and faster than fp32 (search.device.autocast_dtype decides).
Pruning works through `on_epoch`, whatever it raises propagates; a `deadline` stops a run mid-epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from search.config import IMAGE_SHAPE, MNIST_MEAN, MNIST_STD, NUM_CLASSES, Deadline
from search.train.augment import random_affine
from search.train.device import autocast_dtype
from spaces.training import TrainConfig

EVAL_BATCH_SIZE = 512  # measured faster than 2048 on CPU (cache-sized activations): 6,200 vs 4,000 images/s for bn-cnn
FINITE_CHECK_EVERY = 50  # steps between host syncs that look for a NaN/inf loss
PRECISIONS = ("auto", "bf16", "fp32")  # train(precision=...): "auto" lets ComputePlan choose
ONECYCLE_WARMUP_FRACTION = 0.2
ONECYCLE_START = 0.04  # warm-up starts at lr / 25, as torch's OneCycleLR does
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 1
SGD_MOMENTUM = 0.9


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the message says in which epoch."""


class OutOfTime(RuntimeError):
    """Training ran past its time limit; the message says where it stopped."""


@dataclass(frozen=True)
class TrainingData:
    """Labelled training and validation digits and unlabelled test digits, all on one device."""

    train_images: Tensor  # (N, 1, 28, 28) uint8
    train_labels: Tensor  # (N,) int64
    val_images: Tensor  # (V, 1, 28, 28) uint8
    val_labels: Tensor  # (V,) int64
    test_images: Tensor  # (T, 1, 28, 28) uint8, T may be 0

    def __post_init__(self) -> None:
        for name in ("train", "val"):
            images, labels = getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")
            _check_images(f"{name}_images", images)
            if len(images) == 0:
                raise ValueError(f"{name}_images must hold at least one image")
            if labels.dtype != torch.int64 or labels.shape != (len(images),):
                raise ValueError(
                    f"{name}_labels must be ({len(images)},) int64, got {tuple(labels.shape)} {labels.dtype}"
                )
        _check_images("test_images", self.test_images)
        devices = {
            t.device for t in (self.train_images, self.train_labels, self.val_images, self.val_labels, self.test_images)
        }
        if len(devices) > 1:
            raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    @classmethod
    def from_numpy(
        cls,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        val_images: np.ndarray,
        val_labels: np.ndarray,
        test_images: np.ndarray | None,
        device: torch.device | str,
    ) -> TrainingData:
        """Copy (N, 28, 28) uint8 image arrays and int64 label arrays to `device` once; test_images may be None."""
        if test_images is None:
            test_images = np.zeros((0, *IMAGE_SHAPE[1:]), dtype=np.uint8)

        def images(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)).unsqueeze(1).to(device)

        def labels(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device)

        return cls(
            images(train_images), labels(train_labels), images(val_images), labels(val_labels), images(test_images)
        )


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's steps, with label smoothing
    val_loss: float | None  # plain cross-entropy; None: this epoch was not validated
    val_accuracy: float | None  # 0..1; None: this epoch was not validated
    seconds: float  # wall time of training and validation so far (not setup, not on_epoch)
    images_per_second: float  # training images per second of training steps so far


@dataclass
class TrainResult:
    model: nn.Module
    val_probs: np.ndarray  # (V, 10) float32 softmax of the final model
    test_probs: np.ndarray | None  # (T, 10) float32; None when not asked for
    val_accuracy: float
    val_loss: float
    history: list[EpochReport]
    images_per_second: float
    train_seconds: float
    device: str


@dataclass(frozen=True)
class ComputePlan:
    """How a model runs on a device: autocast dtype, memory format, attention kernel.

    Derived from (model, device) alone, so training-time validation and a later predict_proba on
    reloaded weights take the same path and give the same probabilities.
    """

    device: torch.device
    autocast: torch.dtype | None
    channels_last: bool

    @classmethod
    def for_model(
        cls, model: nn.Module, device: torch.device, *, precision: str = "auto", channels_last: bool | None = None
    ) -> ComputePlan:
        """The plan the trainer picks for `model` on `device`, unless `precision` or `channels_last` says otherwise."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        autocast = {"auto": autocast_dtype(device), "bf16": torch.bfloat16, "fp32": None}[precision]
        if channels_last is None:
            # measured 1.3-1.6x faster for BN convnets on CPU, and it helps tensor cores on CUDA
            channels_last = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        return cls(device, autocast, channels_last)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move the model to the device and memory format of the plan (in place; returns it)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def inputs(self, pixels: Tensor) -> Tensor:
        """(B, 1, 28, 28) float pixels in [0, 1] -> normalised model input in the plan's memory format."""
        x = (pixels - MNIST_MEAN) / MNIST_STD
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def context(self) -> contextlib.ExitStack:
        """Enter around a forward pass: autocast, and on CPU under bf16 the math attention kernel."""
        stack = contextlib.ExitStack()
        if self.autocast is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast))
            if self.device.type == "cpu":
                # in bf16 the CPU flash-attention backward made ViT steps ~2x slower than the math path
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        return stack


def train(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    *,
    epochs: int,
    seed: int = 0,
    on_epoch: Callable[[EpochReport], None] | None = None,
    deadline: Deadline | None = None,
    validate_every_epoch: bool = True,
    predict_test: bool = True,
    precision: str = "auto",
    channels_last: bool | None = None,
) -> TrainResult:
    """Train `model` for `epochs` epochs, validating after each and calling on_epoch(report).

    A run judged only on its end (a screening rung) saves the passes it does not use: with
    `validate_every_epoch` False only the last epoch is validated (every epoch still is under the
    plateau schedule, which steps on the validation loss), and with `predict_test` False the test
    digits are not predicted (`test_probs` is None).

    Deterministic on CPU for a given seed (shuffling, augmentation and dropout draw from it; the
    caller seeds the model's initialisation). Raises Diverged on a NaN/inf loss; an exception
    raised by on_epoch (e.g. optuna.TrialPruned) propagates unchanged. Raises OutOfTime at the first
    training step that starts after `deadline` (validation time counts), so one long epoch can't
    overrun it. The model is trained in place; on CPU its nn.Dropout layers become FastDropout (same
    p, no parameters).

    `precision` ("auto": bf16 autocast where the device runs it faster, see ComputePlan; "bf16";
    "fp32") and `channels_last` (None: for batch-norm convnets) override the compute plan, to
    measure one against the other.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = data.device
    plan = ComputePlan.for_model(model, device, precision=precision, channels_last=channels_last)
    plan.prepare(model)
    with _fast_dropout(model, device):
        validated = range(1, epochs + 1) if validate_every_epoch or config.schedule == "plateau" else (epochs,)
        return _train(model, data, config, plan, epochs, seed, on_epoch, deadline, frozenset(validated), predict_test)


def _train(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    plan: ComputePlan,
    epochs: int,
    seed: int,
    on_epoch: Callable[[EpochReport], None] | None,
    deadline: Deadline | None,
    validated: frozenset[int],
    predict_test: bool,
) -> TrainResult:
    device = plan.device
    generator = torch.Generator(device).manual_seed(seed)
    batches_per_epoch = len(_batch_bounds(len(data.train_labels), config.batch_size))
    optimizer = _make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config, total_steps=epochs * batches_per_epoch)

    history: list[EpochReport] = []
    seconds = step_seconds = 0.0
    images_seen = 0
    with _global_rng_seeded(seed, device):
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            train_loss, images = _train_epoch(
                model, data, config, plan, optimizer, scheduler, generator, epoch, deadline
            )
            step_seconds += time.perf_counter() - started
            images_seen += images
            val_loss = val_accuracy = None
            if epoch in validated:
                val_logits = _logits(model, data.val_images, plan)  # (V, 10)
                val_loss, val_accuracy = _loss_and_accuracy(val_logits, data.val_labels)
                if not math.isfinite(val_loss):
                    raise Diverged(f"validation loss became {val_loss} after epoch {epoch}")
                if config.schedule == "plateau":
                    scheduler.step(val_loss)
            seconds += time.perf_counter() - started
            report = EpochReport(epoch, train_loss, val_loss, val_accuracy, seconds, images_seen / step_seconds)
            history.append(report)
            if on_epoch is not None:
                on_epoch(report)

    test_probs = _probabilities(_logits(model, data.test_images, plan)) if predict_test else None  # (T, 10)
    return TrainResult(
        model=model,
        val_probs=_probabilities(val_logits),
        test_probs=test_probs,
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        history=history,
        images_per_second=images_seen / step_seconds,
        train_seconds=seconds,
        device=str(device),
    )


def predict_proba(model: nn.Module, images: Tensor, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Softmax probabilities (N, 10) float32 of uint8 images (N, 1, 28, 28), by the path validation takes in train()."""
    _check_images("images", images)
    device = next(model.parameters()).device
    plan = ComputePlan.for_model(model, device)
    plan.prepare(model)
    return _probabilities(_logits(model, images.to(device), plan, batch_size))


class FastDropout(nn.Dropout):
    """nn.Dropout whose mask is cut from random int16s: p is rounded to 1/65536, otherwise the same.

    torch's CPU bernoulli_ draws one number per element and took ~15% of a bn-cnn step and ~25% of a
    ViT step; four int16s per int64 draw are ~4x cheaper (measured: steps 12-13% faster for both).
    """

    def forward(self, x: Tensor) -> Tensor:
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        if not self.training or not 0 < self.p < 1 or not dense:
            return super().forward(x)
        drop_below = round(self.p * 65536) - 32768  # int16 values are uniform on [-32768, 32767]
        keep_scale = 65536 / (32768 - drop_below)  # 1 / (1 - p) for the rounded p
        words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64, device=x.device)
        bits = words.view(torch.int16)[: x.numel()].as_strided(x.shape, x.stride())  # x's shape and layout
        # a 0/1 mask in x's dtype times x, then the scale: 7% faster bn-cnn steps than torch.where (bf16);
        # scaling after the mask keeps keep_scale exact instead of rounding it to x's dtype
        keep = (bits >= drop_below).to(x.dtype)
        return (x * keep).mul_(keep_scale)


@contextlib.contextmanager
def _fast_dropout(model: nn.Module, device: torch.device) -> Iterator[None]:
    """On CPU, every plain nn.Dropout of `model` runs as FastDropout (same p) inside; the originals are put back after."""
    swapped = []
    if device.type == "cpu":
        for parent in model.modules():
            for name, child in parent.named_children():
                if type(child) is nn.Dropout:
                    swapped.append((parent, name, child))
                    setattr(parent, name, FastDropout(child.p))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _train_epoch(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    plan: ComputePlan,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    epoch: int,
    deadline: Deadline | None,
) -> tuple[float, int]:
    """One pass over shuffled training data; returns (mean training loss, images trained on)."""
    model.train()
    order = torch.randperm(len(data.train_labels), generator=generator, device=plan.device)  # (N,)
    decay_params = [p for group in optimizer.param_groups if group.get("decoupled_decay") for p in group["params"]]
    loss_sum = torch.zeros((), device=plan.device)  # summed on the device: no host sync per step
    images = 0
    bounds = _batch_bounds(len(order), config.batch_size)
    for step, (start, stop) in enumerate(bounds, start=1):
        if deadline is not None and deadline.passed():
            raise OutOfTime(f"stopped before step {step} of {len(bounds)} in epoch {epoch}")
        index = order[start:stop]  # (B,)
        pixels = data.train_images[index].float().div_(255)  # (B, 1, 28, 28) in [0, 1]
        pixels = random_affine(
            pixels, rotation=config.rotation, shift=config.shift, zoom=config.zoom, generator=generator
        )
        with plan.context():
            logits = model(plan.inputs(pixels))  # (B, 10)
        loss = F.cross_entropy(logits.float(), data.train_labels[index], label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _decay_weights(decay_params, config, optimizer)
        optimizer.step()
        if config.schedule != "plateau":
            scheduler.step()
        loss_sum += loss.detach()
        images += stop - start
        if step % FINITE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            raise Diverged(f"training loss became non-finite in epoch {epoch} (step {step} of {len(bounds)})")
    train_loss = loss_sum.item() / len(bounds)
    if not math.isfinite(train_loss):
        raise Diverged(f"training loss became {train_loss} in epoch {epoch}")
    return train_loss, images


def _batch_bounds(count: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each training batch; a last partial batch under a quarter of batch_size is dropped."""
    bounds = [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    smallest_kept = max(2, batch_size // 4)  # BatchNorm cannot train on a single example
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < smallest_kept:
        bounds.pop()
    return bounds


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD; matrices and embeddings get decoupled decay, biases and norm scales none."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    if config.optimizer == "adamw":
        # torch's AdamW shrinks by lr_t * weight_decay per step; dividing by the peak lr makes the
        # shrinkage weight_decay * schedule multiplier, independent of the chosen lr
        groups = [
            {"params": decay, "weight_decay": config.weight_decay / config.lr},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=config.lr)
    # torch's SGD weight_decay is an L2 gradient term, not decoupled, so _decay_weights applies it
    groups = [{"params": decay, "decoupled_decay": True}, {"params": no_decay}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=0.0)


def _decay_weights(params: list[Tensor], config: TrainConfig, optimizer: torch.optim.Optimizer) -> None:
    """Decoupled weight decay for SGD, scaled like AdamW's: weight_decay * (current lr / peak lr)."""
    if not params or config.weight_decay == 0:
        return
    lr_multiplier = optimizer.param_groups[0]["lr"] / config.lr
    with torch.no_grad():
        torch._foreach_mul_(params, 1.0 - config.weight_decay * lr_multiplier)


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """onecycle and cosine step per batch; plateau steps per epoch on the validation loss."""
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
        )
    multiplier = _onecycle_multiplier if config.schedule == "onecycle" else _cosine_multiplier
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: multiplier(step, total_steps))


def _onecycle_multiplier(step: int, total_steps: int) -> float:
    """Linear warm-up from 1/25 of the peak over the first 20% of steps, then cosine down to 0."""
    warmup = max(1, round(ONECYCLE_WARMUP_FRACTION * total_steps))
    if step < warmup:
        return ONECYCLE_START + (1 - ONECYCLE_START) * step / warmup
    return _cosine_multiplier(step - warmup, total_steps - warmup)


def _cosine_multiplier(step: int, total_steps: int) -> float:
    """Half a cosine from 1 at step 0 to 0 at total_steps."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


@contextlib.contextmanager
def _global_rng_seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNG (dropout, drop-path) for the duration, restoring the caller's RNG state after."""
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        # offset so dropout masks are not drawn from the same stream as the shuffling generator
        torch.manual_seed(seed + 0x5EED)
        yield


@torch.inference_mode()
def _logits(model: nn.Module, images: Tensor, plan: ComputePlan, batch_size: int = EVAL_BATCH_SIZE) -> Tensor:
    """(N, 1, 28, 28) uint8 -> (N, 10) float32 logits in eval mode; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        pixels = images[start : start + batch_size].float().div_(255)  # (b, 1, 28, 28)
        with plan.context():
            chunks.append(model(plan.inputs(pixels)).float())  # (b, 10)
    model.train(was_training)
    if not chunks:
        return torch.zeros(0, NUM_CLASSES, device=plan.device)
    return torch.cat(chunks)


def _loss_and_accuracy(logits: Tensor, labels: Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss.item(), accuracy.item()


def _probabilities(logits: Tensor) -> np.ndarray:
    return torch.softmax(logits, dim=1).cpu().numpy().astype(np.float32, copy=False)


def _check_images(name: str, images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{name} must be (N, 1, 28, 28) uint8, got {tuple(images.shape)} {images.dtype}")
