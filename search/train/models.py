"""Building a model of a space reproducibly, rebuilding a trained one from its weights, and its size."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from search.errors import UserError
from spaces import Candidate, Space, SpaceError


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(space: Space, candidate: Candidate, seed: int) -> nn.Module:
    """The untrained model of `candidate`, initialised from `seed`; the caller's global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return space.build(candidate)


def rebuild_model(
    space: Space, params: dict[str, Any], state: dict[str, torch.Tensor], device: torch.device, label: str
) -> nn.Module:
    """A trained model from its params and state dict, in eval mode on `device`; UserError naming `label`."""
    try:
        model = space.build(space.candidate_from_params(params))
        model.load_state_dict(state)
    except (SpaceError, ValueError, KeyError, TypeError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise UserError(
            f"{label}: its stored weights do not fit space {space.name!r} ({type(err).__name__}: {reason})"
        ) from None
    return model.to(device).eval()
