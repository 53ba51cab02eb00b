"""Plain convolutional nets: a stack of conv blocks, each halving the resolution, then an MLP head.

The block and the whole net are reused by the `stn` family, which is why `suggest` and `params_of`
take a param-name prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search.config import IMAGE_SIDE, NUM_CLASSES
from spaces.base import Reference
from spaces.training import TrainConfig

NAME = "cnn"
KERNELS = (3, 5, 7)
CONVS = (1, 2)
DOWNSAMPLES = ("maxpool", "stride")


@dataclass(frozen=True)
class Config:
    widths: tuple[int, ...] = (32, 64)  # output channels of each block; len = number of blocks
    kernels: tuple[int, ...] = (3, 3)  # kernel size of each block's convs
    convs: int = 2  # convs per block
    batch_norm: bool = True  # after every conv and the hidden head layer
    downsample: str = "maxpool"  # "maxpool" after a block, or "stride": its last conv has stride 2
    dropout: float = 0.25  # after every block
    head_width: int = 256
    head_dropout: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        if not 1 <= len(self.widths) <= 4:
            raise ValueError(f"widths must name 1 to 4 blocks (28 px halves 4 times), got {self.widths}")
        if len(self.kernels) != len(self.widths):
            raise ValueError(f"kernels must have one entry per block ({len(self.widths)}), got {self.kernels}")
        if any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive, got {self.widths}")
        if any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd and positive (padding k//2 keeps the size), got {self.kernels}")
        if self.convs < 1:
            raise ValueError(f"convs must be >= 1, got {self.convs}")
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {self.downsample!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.head_width < 1:
            raise ValueError(f"head_width must be positive, got {self.head_width}")
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")

    @property
    def feature_size(self) -> int:
        """Side length of the last block's output map."""
        size = IMAGE_SIDE
        for _ in self.widths:
            # max-pool floors, a stride-2 conv with odd kernel and padding k//2 rounds up
            size = size // 2 if self.downsample == "maxpool" else (size + 1) // 2
        return size


def suggest(trial, prefix: str = f"{NAME}.") -> Config:
    """Sample a Config; param names are `<prefix><field>` (prefix "cnn." here, "stn.cnn_" in stn)."""
    blocks = trial.suggest_int(f"{prefix}blocks", 2, 4)
    return Config(
        # the first block runs at full resolution, so it is kept narrower; 6 admits LeNet
        widths=tuple(
            trial.suggest_int(f"{prefix}width_{i}", 6, 64, log=True)
            if i == 0
            else trial.suggest_int(f"{prefix}width_{i}", 8, 128, log=True)
            for i in range(blocks)
        ),
        kernels=tuple(trial.suggest_categorical(f"{prefix}kernel_{i}", KERNELS) for i in range(blocks)),
        convs=trial.suggest_categorical(f"{prefix}convs", CONVS),
        batch_norm=trial.suggest_categorical(f"{prefix}batch_norm", (True, False)),
        downsample=trial.suggest_categorical(f"{prefix}downsample", DOWNSAMPLES),
        # dropout after every block: 0.3 (not 0.5) so 3-4 blocks still learn within a pruned first epoch (bench/trainable.py)
        dropout=trial.suggest_float(f"{prefix}dropout", 0.0, 0.3),
        head_width=trial.suggest_int(f"{prefix}head_width", 32, 512, log=True),
        head_dropout=trial.suggest_float(f"{prefix}head_dropout", 0.0, 0.5),
    )


def params_of(config: Config, prefix: str = f"{NAME}.") -> dict[str, Any]:
    """The Optuna params that make suggest(trial, prefix) return `config`."""
    params: dict[str, Any] = {f"{prefix}blocks": len(config.widths)}
    for i, (width, kernel) in enumerate(zip(config.widths, config.kernels)):
        params[f"{prefix}width_{i}"] = width
        params[f"{prefix}kernel_{i}"] = kernel
    params.update(
        {
            f"{prefix}convs": config.convs,
            f"{prefix}batch_norm": config.batch_norm,
            f"{prefix}downsample": config.downsample,
            f"{prefix}dropout": config.dropout,
            f"{prefix}head_width": config.head_width,
            f"{prefix}head_dropout": config.head_dropout,
        }
    )
    return params


class ConvBlock(nn.Sequential):
    """`convs` x [conv k x k, BN?, ReLU], then halve the resolution (max-pool or last conv strided), dropout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        convs: int = 1,
        batch_norm: bool = False,
        downsample: str = "maxpool",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        for i in range(convs):
            stride = 2 if downsample == "stride" and i == convs - 1 else 1
            channels = in_channels if i == 0 else out_channels
            layers.append(nn.Conv2d(channels, out_channels, kernel, stride, kernel // 2, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        if downsample == "maxpool":
            layers.append(nn.MaxPool2d(2))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class ConvNet(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        c = config
        blocks = []
        for in_channels, out_channels, kernel in zip((1, *c.widths[:-1]), c.widths, c.kernels):
            blocks.append(ConvBlock(in_channels, out_channels, kernel, c.convs, c.batch_norm, c.downsample, c.dropout))
        self.features = nn.Sequential(*blocks)
        hidden: list[nn.Module] = [nn.Linear(c.widths[-1] * c.feature_size**2, c.head_width, bias=not c.batch_norm)]
        if c.batch_norm:
            hidden.append(nn.BatchNorm1d(c.head_width))
        hidden.append(nn.ReLU(inplace=True))
        if c.head_dropout > 0:
            hidden.append(nn.Dropout(c.head_dropout))
        self.head = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(c.head_width, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 1, 28, 28) -> (B, widths[-1], S, S), S = feature_size
        return self.head(x)  # (B, 10)


def build(config: Config) -> nn.Module:
    """The ConvNet for `config`: (B, 1, 28, 28) images -> (B, 10) logits."""
    return ConvNet(config)


# Classic LeNet-5 shape on 28 px inputs with "same" padding, ReLU and max-pool instead of tanh and
# average-pool, and one 120-unit hidden layer where the original had 120 then 84.
LENET = Config(widths=(6, 16), kernels=(5, 5), convs=1, batch_norm=False, dropout=0.0, head_width=120, head_dropout=0.0)
# The well-known Kaggle digit-recognizer CNN: [conv3x3 32, BN, ReLU] x2, max-pool, dropout .25,
# [conv3x3 64, BN, ReLU] x2, max-pool, dropout .25, dense 256 + BN + ReLU, dropout .5, dense 10.
BN_CNN = Config()
# Tuned for short runs: lighter augmentation and a higher lr reached 99.5% in 4 epochs on more
# seeds than the notebook's recipe (BENCHMARKS.md, "Reference recipe").
BN_CNN_TRAIN = TrainConfig(lr=4e-3, rotation=5.0, shift=0.05, zoom=0.05)
# Three 5x5 blocks, 28 -> 14 -> 7 -> 3 px.
BIG_KERNEL = Config(widths=(32, 48, 64), kernels=(5, 5, 5))

REFERENCES = {
    r.name: r
    for r in (
        Reference("lenet", LENET),
        Reference("bn-cnn", BN_CNN, BN_CNN_TRAIN),
        Reference("big-kernel", BIG_KERNEL),
    )
}
