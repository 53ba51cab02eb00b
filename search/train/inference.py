"""Class probabilities of a trained model, optionally averaged over one-pixel shifts (test-time augmentation)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from search.train.trainer import predict_proba

# The image itself and its shifts by one pixel up, down, left, right.
TTA_SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def shift_images(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(N, C, H, W) images moved by (dy, dx) pixels, the vacated border filled with zeros (background)."""
    if dy == 0 and dx == 0:
        return images
    height, width = images.shape[-2:]
    shifted = torch.zeros_like(images)
    shifted[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = images[
        ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return shifted


def class_probabilities(model: nn.Module, images: torch.Tensor, tta: bool) -> np.ndarray:
    """(N, 10) float32 probabilities of uint8 (N, 1, 28, 28) images, averaged over TTA_SHIFTS if tta."""
    if not tta:
        return predict_proba(model, images)
    total = None
    for dy, dx in TTA_SHIFTS:
        probs = predict_proba(model, shift_images(images, dy, dx))
        total = probs.astype(np.float64) if total is None else total + probs
    return (total / len(TTA_SHIFTS)).astype(np.float32)
