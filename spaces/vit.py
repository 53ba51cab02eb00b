"""Vision transformers: non-overlapping patches, learned position embedding, pre-norm blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search.config import IMAGE_SIDE, NUM_CLASSES
from spaces.base import Reference
from spaces.training import TrainConfig

NAME = "vit"
PATCH_SIZES = (4, 7, 14)
WIDTHS = (48, 64, 96, 128, 192)  # all multiples of 8, so every choice of heads divides them
HEADS = (1, 2, 4, 8)
MLP_RATIOS = (2, 3, 4)
POOLS = ("cls", "mean")


@dataclass(frozen=True)
class Config:
    patch_size: int = 7
    width: int = 128  # embedding width = heads * per-head width
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1  # on the embedded tokens and the output of every attention and MLP
    drop_path: float = 0.1  # stochastic depth of the last block; rises linearly from 0 at the first
    pool: str = "cls"  # classify from a cls token, or from the mean of the patch tokens

    def __post_init__(self) -> None:
        if self.patch_size < 1 or IMAGE_SIDE % self.patch_size:
            raise ValueError(f"patch_size must divide {IMAGE_SIDE}, got {self.patch_size}")
        if self.heads < 1:
            raise ValueError(f"heads must be >= 1, got {self.heads}")
        if self.width < 1 or self.width % self.heads:
            raise ValueError(f"width must be a positive multiple of heads ({self.heads}), got {self.width}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.mlp_ratio < 1:
            raise ValueError(f"mlp_ratio must be >= 1, got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")

    @property
    def num_patches(self) -> int:
        return (IMAGE_SIDE // self.patch_size) ** 2


def suggest(trial) -> Config:
    """Sample a Config; param names are `vit.<field>`."""
    return Config(
        patch_size=trial.suggest_categorical("vit.patch_size", PATCH_SIZES),
        width=trial.suggest_categorical("vit.width", WIDTHS),
        depth=trial.suggest_int("vit.depth", 2, 6),
        heads=trial.suggest_categorical("vit.heads", HEADS),
        mlp_ratio=trial.suggest_categorical("vit.mlp_ratio", MLP_RATIOS),
        dropout=trial.suggest_float("vit.dropout", 0.0, 0.2),
        drop_path=trial.suggest_float("vit.drop_path", 0.0, 0.2),
        pool=trial.suggest_categorical("vit.pool", POOLS),
    )


def params_of(config: Config) -> dict[str, Any]:
    """The Optuna params that make suggest() return `config`."""
    return {
        "vit.patch_size": config.patch_size,
        "vit.width": config.width,
        "vit.depth": config.depth,
        "vit.heads": config.heads,
        "vit.mlp_ratio": config.mlp_ratio,
        "vit.dropout": config.dropout,
        "vit.drop_path": config.drop_path,
        "vit.pool": config.pool,
    }


class DropPath(nn.Module):
    """Drop the whole residual branch per sample with probability `rate` (stochastic depth)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1 - self.rate
        mask = x.new_empty(x.shape[0], *(1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, C/H)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, N, C/H)
        x = x.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.drop(self.proj(x))


class Mlp(nn.Sequential):
    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, mlp_ratio * width, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))  # (B, N, C)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        c = config
        self.patch_embed = nn.Conv2d(1, c.width, c.patch_size, c.patch_size)
        # a cls token exists only when it is used, so every parameter always gets a gradient
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width)) if c.pool == "cls" else None
        tokens = c.num_patches + (c.pool == "cls")
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, c.width))
        self.pos_drop = nn.Dropout(c.dropout)
        rates = torch.linspace(0, c.drop_path, c.depth).tolist()
        self.blocks = nn.Sequential(*(Block(c.width, c.heads, c.mlp_ratio, c.dropout, r) for r in rates))
        self.norm = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, NUM_CLASSES)
        self._init_weights()

    def _init_weights(self) -> None:
        # Linear layers keep torch's default init (std ~ 1/sqrt(3 fan_in), 0.05 at width 128): timm's
        # 0.02 is sized for width 768 and trained these small ViTs far slower (BENCHMARKS.md, "ViT references")
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, 1, 28, 28) -> (B, P, C), P = num_patches
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + P, C)
        x = self.pos_drop(x + self.pos_embed)
        x = self.norm(self.blocks(x))  # (B, N, C)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, C)
        return self.head(x)  # (B, 10)


def build(config: Config) -> nn.Module:
    """The VisionTransformer for `config`: (B, 1, 28, 28) images -> (B, 10) logits."""
    return VisionTransformer(config)


# Small ViTs want AdamW and far less decay than the CNN default (weight_decay is per-step
# shrinkage: 5e-5 = AdamW's 0.025 at lr 2e-3), and lighter augmentation (BENCHMARKS.md, "ViT references").
VIT_TRAIN = TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=5e-5, rotation=5.0, shift=0.05, zoom=0.05)

REFERENCES = {
    r.name: r
    for r in (
        # 16 tokens of 7x7 px + cls; the quick baseline, without dropout or drop-path, which
        # slowed it (BENCHMARKS.md, "ViT references")
        Reference(
            "vit-seed",
            Config(patch_size=7, width=128, depth=4, heads=4, mlp_ratio=4, dropout=0.0, drop_path=0.0),
            VIT_TRAIN,
        ),
        # 49 tokens of 4x4 px, narrow and deeper, mean-pooled
        Reference(
            "vit-s4",
            Config(patch_size=4, width=64, depth=6, heads=4, mlp_ratio=2, dropout=0.0, drop_path=0.1, pool="mean"),
            VIT_TRAIN,
        ),
    )
}
