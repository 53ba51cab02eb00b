"""Batched random affine augmentation on the device: one sampled transform per image, one grid_sample per batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_affine(images: Tensor, *, rotation: float, shift: float, zoom: float, generator: torch.Generator) -> Tensor:
    """Rotate, shift and zoom every image by its own random amount; never flips.

    images: (B, C, H, W) float with background 0 (e.g. pixels / 255), on the generator's device.
    rotation: max degrees either way; shift: max fraction of the image size either way, per axis;
    zoom: max relative scale change either way. Returns the input itself when all three are 0.
    """
    if rotation == 0 and shift == 0 and zoom == 0:
        return images
    theta = random_affine_matrices(len(images), rotation, shift, zoom, generator, images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine_matrices(
    count: int,
    rotation: float,
    shift: float,
    zoom: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(count, 2, 3) matrices for F.affine_grid, mapping output to input coordinates in [-1, 1] units."""
    uniform = torch.rand(count, 4, generator=generator, device=device, dtype=dtype) * 2 - 1  # (count, 4) in [-1, 1)
    angle = uniform[:, 0] * math.radians(rotation)
    scale = 1 + uniform[:, 1] * zoom  # > 1 enlarges the digit
    # the [-1, 1] coordinate span is 2 image sizes, so a shift of f image sizes is 2f units
    translation = uniform[:, 2:] * (2 * shift)  # (count, 2)

    # forward map: out = scale * R(angle) @ in + t; affine_grid wants its inverse, in = R(-angle) / scale @ (out - t)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse_linear = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (count, 2, 2)
    inverse_offset = -(inverse_linear @ translation.unsqueeze(-1))  # (count, 2, 1)
    return torch.cat([inverse_linear, inverse_offset], dim=-1)  # (count, 2, 3)
