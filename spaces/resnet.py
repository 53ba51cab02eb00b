"""Small ResNets: 3x3 stem, stages of basic residual blocks, global average pool, linear head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search.config import IMAGE_SIDE, NUM_CLASSES
from spaces.base import Reference

NAME = "resnet"
STRIDES = (1, 2)
# (smallest side, (widest width, most blocks)) of a stage, largest side first. Measured by bench/trainable.py: with every
# stage free to stay at 28 px, 3 blocks of 64-128 channels, a sampled resnet took 180 s per Kaggle
# epoch on CPU; a 3x3 conv's cost is width^2 x side^2, so the cap grows as the side halves.
STAGE_LIMITS = ((28, (32, 1)), (14, (64, 2)), (1, (128, 2)))


@dataclass(frozen=True)
class Config:
    stem_width: int = 32
    widths: tuple[int, ...] = (32, 64)  # channels of each stage; len = number of stages
    blocks: tuple[int, ...] = (1, 1)  # basic blocks per stage
    strides: tuple[int, ...] = (1, 2)  # stride of each stage's first block

    def __post_init__(self) -> None:
        for name in ("widths", "blocks", "strides"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.stem_width < 1:
            raise ValueError(f"stem_width must be positive, got {self.stem_width}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must name at least one stage, all positive, got {self.widths}")
        if len(self.blocks) != len(self.widths) or any(b < 1 for b in self.blocks):
            raise ValueError(f"blocks must have one entry >= 1 per stage ({len(self.widths)}), got {self.blocks}")
        if len(self.strides) != len(self.widths) or any(s not in STRIDES for s in self.strides):
            raise ValueError(f"strides must have one entry in {STRIDES} per stage, got {self.strides}")


def stage_limits(side: int) -> tuple[int, int]:
    """(widest width, most blocks) a stage may have when it runs at `side` px: cost falls with the area."""
    for min_side, limits in STAGE_LIMITS:
        if side >= min_side:
            return limits
    return STAGE_LIMITS[-1][1]


def suggest(trial) -> Config:
    """Sample a Config; param names are `resnet.<field>`, per-stage ones `resnet.<field>_<stage>`.

    Each stage's stride is drawn first, and its width and block ranges follow from the resolution it
    runs at (STAGE_LIMITS), so a stage at 28 px stays narrow and shallow. Every stage's stride keeps
    the choices (1, 2): Optuna refuses a study whose trials drew one categorical param from two
    choice sets, so narrowing them would break every resnet study created before.
    """
    stages = trial.suggest_int("resnet.stages", 2, 3)
    stem_width = trial.suggest_int("resnet.stem_width", 16, 32, log=True)
    side = IMAGE_SIDE
    widths, blocks, strides = [], [], []
    for i in range(stages):
        strides.append(trial.suggest_categorical(f"resnet.stride_{i}", STRIDES))
        side = (side + strides[-1] - 1) // strides[-1]  # 3x3 conv, padding 1: 28 -> 14 -> 7 -> 4
        max_width, max_blocks = stage_limits(side)
        widths.append(trial.suggest_int(f"resnet.width_{i}", 16, max_width, log=True))
        blocks.append(trial.suggest_int(f"resnet.blocks_{i}", 1, max_blocks))
    return Config(stem_width=stem_width, widths=tuple(widths), blocks=tuple(blocks), strides=tuple(strides))


def params_of(config: Config) -> dict[str, Any]:
    """The Optuna params that make suggest() return `config`."""
    params: dict[str, Any] = {"resnet.stages": len(config.widths), "resnet.stem_width": config.stem_width}
    for i, (width, blocks, stride) in enumerate(zip(config.widths, config.blocks, config.strides)):
        params[f"resnet.width_{i}"] = width
        params[f"resnet.blocks_{i}"] = blocks
        params[f"resnet.stride_{i}"] = stride
    return params


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (padding k//2, no bias) then BN; the ReLU is left to the caller."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)); 1x1-conv projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, 3, stride)
        self.conv2 = conv_bn(out_channels, out_channels, 3)
        same_shape = stride == 1 and in_channels == out_channels
        self.shortcut = nn.Identity() if same_shape else conv_bn(in_channels, out_channels, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))  # (B, C_out, H/s, W/s)
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        c = config
        self.stem = nn.Sequential(conv_bn(1, c.stem_width, 3), nn.ReLU(inplace=True))
        stages = []
        in_channels = c.stem_width
        for width, blocks, stride in zip(c.widths, c.blocks, c.strides):
            stage = [BasicBlock(in_channels, width, stride)]
            stage += [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_channels, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, 1, 28, 28) -> (B, widths[-1], H, W)
        return self.head(x.mean(dim=(2, 3)))  # (B, 10)


def build(config: Config) -> nn.Module:
    """The ResNet for `config`: (B, 1, 28, 28) images -> (B, 10) logits."""
    return ResNet(config)


REFERENCES = {
    r.name: r
    for r in (
        # stem conv 32 @ 28 px, one basic block at 32 @ 28 px, one at 64 @ 14 px (1x1 projection
        # shortcut): 5 weighted 3x3 convs, plus the projection and the linear head
        Reference("resnet5", Config(stem_width=32, widths=(32, 64), blocks=(1, 1), strides=(1, 2))),
    )
}
