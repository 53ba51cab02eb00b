"""The baseline: the training loop as the popular digit-recognizer notebooks write it.

fp32; a torch Dataset that augments ONE image at a time in __getitem__ (Pillow random affine:
rotation 10 deg, translate 0.1, scale 0.9..1.1, i.e. torchvision's RandomAffine, written with
Pillow because torchvision is not installed), then to tensor and normalise; a DataLoader with
batch 64, shuffle and the default num_workers=0; Adam lr 1e-3 with ReduceLROnPlateau; evaluation
after every epoch. On a GPU (`device`) the model lives there and each batch is moved to it as it
leaves the DataLoader, as the notebooks do. Both benchmarks import it, and the data and model
helpers below.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(REPO))

from search.data.digits import load_digits, stratified_split  # noqa: E402
from spaces import load_space  # noqa: E402
from spaces.training import TrainConfig  # noqa: E402

DEFAULT_DATA_DIR = Path("/work/shared/data/digit-recognizer")
MEAN, STD = 0.1307, 0.3081
BATCH_SIZE = 64
LR = 1e-3
ROTATION, TRANSLATE, SCALE = 10.0, 0.1, (0.9, 1.1)


# --- shared by the benchmarks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Kaggle train.csv split 90/10, stratified, as numpy arrays: images (N, 28, 28) uint8, labels (N,) int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def load_split(data_dir: Path = DEFAULT_DATA_DIR, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """The labelled Kaggle digits split into train and validation the way the project splits them."""
    digits = load_digits(data_dir)
    split = stratified_split(digits.train_labels, val_fraction, seed)
    return Split(
        digits.train_images[split.train_index],
        digits.train_labels[split.train_index],
        digits.train_images[split.val_index],
        digits.train_labels[split.val_index],
    )


def build_reference(name: str, seed: int = 0) -> tuple[nn.Module, TrainConfig]:
    """A freshly initialised reference model (e.g. "bn-cnn", "vit-seed") and its reference TrainConfig."""
    space = load_space("all")
    candidate, _ = space.references()[name]
    torch.manual_seed(seed)
    return space.build(candidate), candidate.train


# --- the notebook-style loop ----------------------------------------------------------------------


def inverse_affine_matrix(
    center: tuple[float, float], angle: float, translate: tuple[int, int], scale: float
) -> list[float]:
    """Pillow's AFFINE data (output -> input pixel map) for rotate-about-centre, scale, translate; as torchvision."""
    rot = math.radians(angle)
    cx, cy = center
    tx, ty = translate
    m = [math.cos(rot) / scale, math.sin(rot) / scale, 0.0, -math.sin(rot) / scale, math.cos(rot) / scale, 0.0]
    m[2] = m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] = m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


def random_affine_pil(image: Image.Image) -> Image.Image:
    """torchvision.transforms.RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)) on one PIL image."""
    width, height = image.size
    angle = float(torch.empty(1).uniform_(-ROTATION, ROTATION))
    tx = int(round(float(torch.empty(1).uniform_(-TRANSLATE * width, TRANSLATE * width))))
    ty = int(round(float(torch.empty(1).uniform_(-TRANSLATE * height, TRANSLATE * height))))
    scale = float(torch.empty(1).uniform_(*SCALE))
    matrix = inverse_affine_matrix((width * 0.5, height * 0.5), angle, (tx, ty), scale)
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST, fillcolor=0)


class DigitDataset(Dataset):
    """One (image, label) at a time: PIL image -> optional random affine -> float tensor -> normalise."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index])  # (28, 28) uint8 -> mode "L"
        if self.augment:
            image = random_affine_pil(image)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)  # (1, 28, 28)
        return (x - MEAN) / STD, int(self.labels[index])


@dataclass(frozen=True)
class PlainEpoch:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float  # wall time since the loop started


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over the loader, each batch moved to `device` (the model's)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)  # no-ops on CPU
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
    return loss_sum / count, correct / count


def train_plain(
    model: nn.Module,
    split: Split,
    *,
    epochs: int,
    on_epoch: Callable[[PlainEpoch], None] | None = None,
    device: torch.device | str = "cpu",
) -> list[PlainEpoch]:
    """Train the notebook way for `epochs` epochs on `device`, evaluating after each; returns the history."""
    started = time.perf_counter()
    model.to(device)
    train_loader = DataLoader(
        DigitDataset(split.train_images, split.train_labels, augment=True), batch_size=BATCH_SIZE, shuffle=True
    )
    val_loader = DataLoader(DigitDataset(split.val_images, split.val_labels, augment=False), batch_size=BATCH_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum, steps = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            steps += 1
        val_loss, val_accuracy = evaluate(model, val_loader, device)
        scheduler.step(val_loss)
        history.append(PlainEpoch(epoch, loss_sum / steps, val_loss, val_accuracy, time.perf_counter() - started))
        if on_epoch is not None:
            on_epoch(history[-1])
    return history


def plain_images_per_second(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    warmup_batches: int = 5,
    device: torch.device | str = "cpu",
) -> float:
    """Training images/s of the loop above (loading + augmenting + moving to `device` + stepping) over
    `images` after a warm-up. Each step reads its loss with .item(), as the loop does, so on a GPU the
    clock stops only after the last step has run."""
    loader = DataLoader(DigitDataset(images, labels, augment=True), batch_size=BATCH_SIZE, shuffle=True)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    batches = iter(loader)
    for _ in range(warmup_batches):
        x, y = next(batches)
        _plain_step(model, optimizer, x.to(device), y.to(device))
    started, count = time.perf_counter(), 0
    for x, y in batches:
        _plain_step(model, optimizer, x.to(device), y.to(device))
        count += len(y)
    return count / (time.perf_counter() - started)


def _plain_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


if __name__ == "__main__":
    split = load_split()
    model, _ = build_reference("bn-cnn")
    train_plain(model, split, epochs=1, on_epoch=print)
