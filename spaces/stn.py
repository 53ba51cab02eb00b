"""A spatial transformer front end (learned affine warp of the input) before a `cnn` family body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search.config import IMAGE_SIDE
from spaces import cnn
from spaces.base import Reference

NAME = "stn"
BODY_PREFIX = f"{NAME}.cnn_"  # the body's params are the cnn family's, renamed stn.cnn_<field>
LOC_BLOCKS = 2


@dataclass(frozen=True)
class Config:
    loc_widths: tuple[int, ...] = (8, 10)  # localisation net: channels of each conv block
    loc_kernels: tuple[int, ...] = (7, 5)
    loc_hidden: int = 32  # hidden units of its fc regressor
    body: cnn.Config = field(default_factory=cnn.Config)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loc_widths", tuple(self.loc_widths))
        object.__setattr__(self, "loc_kernels", tuple(self.loc_kernels))
        if isinstance(self.body, dict):
            object.__setattr__(self, "body", cnn.Config(**self.body))
        if not 1 <= len(self.loc_widths) <= 4 or any(w < 1 for w in self.loc_widths):
            raise ValueError(f"loc_widths must name 1 to 4 blocks, all positive, got {self.loc_widths}")
        if len(self.loc_kernels) != len(self.loc_widths):
            raise ValueError(f"loc_kernels must have one entry per loc_widths block, got {self.loc_kernels}")
        if any(k < 1 or k % 2 == 0 for k in self.loc_kernels):
            raise ValueError(f"loc_kernels must be odd and positive, got {self.loc_kernels}")
        if self.loc_hidden < 1:
            raise ValueError(f"loc_hidden must be positive, got {self.loc_hidden}")
        if not isinstance(self.body, cnn.Config):
            raise ValueError(f"body must be a cnn.Config, got {type(self.body).__name__}")


def suggest(trial) -> Config:
    """Sample a Config; localisation params are `stn.loc_*`, the CNN body's `stn.cnn_*`."""
    return Config(
        loc_widths=tuple(trial.suggest_int(f"stn.loc_width_{i}", 4, 32, log=True) for i in range(LOC_BLOCKS)),
        loc_kernels=tuple(trial.suggest_categorical(f"stn.loc_kernel_{i}", cnn.KERNELS) for i in range(LOC_BLOCKS)),
        loc_hidden=trial.suggest_int("stn.loc_hidden", 16, 128, log=True),
        body=cnn.suggest(trial, prefix=BODY_PREFIX),
    )


def params_of(config: Config) -> dict[str, Any]:
    """The Optuna params that make suggest() return `config`."""
    if len(config.loc_widths) != LOC_BLOCKS:
        raise ValueError(f"loc_widths: the stn space has {LOC_BLOCKS} localisation blocks, got {config.loc_widths}")
    params: dict[str, Any] = {}
    for i, (width, kernel) in enumerate(zip(config.loc_widths, config.loc_kernels)):
        params[f"stn.loc_width_{i}"] = width
        params[f"stn.loc_kernel_{i}"] = kernel
    params["stn.loc_hidden"] = config.loc_hidden
    params.update(cnn.params_of(config.body, prefix=BODY_PREFIX))
    return params


class SpatialTransformer(nn.Module):
    """Regress an affine transform from the image and resample the image through it."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        c = config
        blocks = [cnn.ConvBlock(i, o, k) for i, o, k in zip((1, *c.loc_widths[:-1]), c.loc_widths, c.loc_kernels)]
        size = IMAGE_SIDE // 2 ** len(blocks)  # each block max-pools by 2
        self.localisation = nn.Sequential(*blocks, nn.Flatten())
        self.regressor = nn.Sequential(
            nn.Linear(c.loc_widths[-1] * size**2, c.loc_hidden), nn.ReLU(inplace=True), nn.Linear(c.loc_hidden, 6)
        )
        # start as the identity warp, so training begins from the plain body
        nn.init.zeros_(self.regressor[-1].weight)
        with torch.no_grad():
            self.regressor[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.regressor(self.localisation(x)).view(-1, 2, 3)  # (B, 1, 28, 28) -> (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, 28, 28, 2)
        # inputs are normalised, so background is not 0: pad with the edge (background) value instead
        return F.grid_sample(x, grid, padding_mode="border", align_corners=False)  # (B, 1, 28, 28)


class STNNet(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.transform = SpatialTransformer(config)
        self.body = cnn.build(config.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.transform(x))  # (B, 1, 28, 28) -> (B, 10)


def build(config: Config) -> nn.Module:
    """The STNNet for `config`: (B, 1, 28, 28) images -> (B, 10) logits."""
    return STNNet(config)


REFERENCES = {
    r.name: r
    for r in (
        # the PyTorch STN tutorial's localisation net (8@7x7, 10@5x5, fc 32) in front of bn-cnn
        Reference("stn-cnn", Config(loc_widths=(8, 10), loc_kernels=(7, 5), loc_hidden=32, body=cnn.BN_CNN)),
    )
}
