"""Weights on disk: safetensors (loading runs no code) with JSON metadata (family, params, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from search.io import write_bytes


class WeightsError(ValueError):
    """A weights file that is missing, truncated or not safetensors; the message says which file and why."""


def save_weights(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write a state dict and its metadata atomically."""
    # channels_last tensors are not contiguous in the default layout safetensors expects
    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    data = safetensors.torch.save(plain, metadata={key: json.dumps(value) for key, value in metadata.items()})
    return write_bytes(path, data)


def load_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and metadata of a weights file; WeightsError when it cannot be read as one."""
    path = Path(path)
    try:
        state = safetensors.torch.load_file(str(path))
        with safetensors.safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        return state, {key: json.loads(value) for key, value in raw.items()}
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        reason = " ".join(str(err).split())[:200]
        raise WeightsError(f"{path}: not a readable safetensors file ({type(err).__name__}: {reason})") from None
