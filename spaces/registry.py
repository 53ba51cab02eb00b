"""Named search spaces: one family, all families, or a user's family file, plus the training space."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from search.errors import UserError
from spaces import cnn, resnet, stn, training, vit
from spaces.base import REQUIRED_ATTRIBUTES
from spaces.training import TrainConfig

FAMILIES: dict[str, ModuleType] = {m.NAME: m for m in (cnn, resnet, stn, vit)}
ALL = "all"
FAMILY_PARAM = "space.family"  # only in multi-family spaces


class SpaceError(UserError, ValueError):
    """A one-line user error: unknown space name, missing or invalid space file."""


@dataclass(frozen=True)
class Candidate:
    """One point of a space: which family, its model config, and the training config."""

    family: str
    model: Any  # the family's Config
    train: TrainConfig


class Space:
    """A set of families (one, or several chosen by the `space.family` param) times the training space."""

    def __init__(self, name: str, families: dict[str, ModuleType]) -> None:
        if not families:
            raise SpaceError(f"space {name!r} has no families")
        self.name = name
        self.families = dict(families)

    def __repr__(self) -> str:
        return f"Space({self.name!r}, families={sorted(self.families)})"

    @property
    def multi_family(self) -> bool:
        return len(self.families) > 1

    def suggest(self, trial) -> Candidate:
        """Sample a Candidate: the family (multi-family spaces only), its model params, then `train.*`."""
        if self.multi_family:
            name = trial.suggest_categorical(FAMILY_PARAM, sorted(self.families))
        else:
            (name,) = self.families
        family = self.families[name]
        return Candidate(family.NAME, family.suggest(trial), training.suggest(trial))

    def build(self, candidate: Candidate) -> nn.Module:
        """The untrained model for `candidate`: (B, 1, 28, 28) images -> (B, 10) logits."""
        if candidate.family not in self.families:
            known = ", ".join(sorted(self.families))
            raise SpaceError(f"family {candidate.family!r} is not in space {self.name!r} ({known})")
        return self.families[candidate.family].build(candidate.model)

    def references(self) -> dict[str, tuple[Candidate, dict[str, Any]]]:
        """Reference name -> (candidate, the full Optuna params that suggest() turns into it)."""
        refs: dict[str, tuple[Candidate, dict[str, Any]]] = {}
        for name in sorted(self.families):
            family = self.families[name]
            for ref_name, ref in getattr(family, "REFERENCES", {}).items():
                if ref_name in refs:
                    raise SpaceError(f"reference {ref_name!r} is defined by two families in space {self.name!r}")
                params = {FAMILY_PARAM: name} if self.multi_family else {}
                params.update(family.params_of(ref.model))
                params.update(training.params_of(ref.train))
                refs[ref_name] = (Candidate(name, ref.model, ref.train), params)
        return refs

    def reference_name(self, params: dict[str, Any]) -> str | None:
        """The name of the reference whose Optuna params these are exactly, else None (a sampled config)."""
        wanted = sorted(params.items())
        return next(
            (name for name, (_, ref_params) in self.references().items() if sorted(ref_params.items()) == wanted), None
        )

    def candidate_from_params(self, params: dict[str, Any]) -> Candidate:
        """The Candidate that suggest() returns for these params (e.g. a stored trial's)."""
        from optuna.trial import FixedTrial  # only here: spaces import without Optuna

        return self.suggest(FixedTrial(params))


def load_space(name_or_path: str) -> Space:
    """A built-in space ("all" or a family name) or a .py file defining one family module."""
    if name_or_path == ALL:
        return Space(ALL, FAMILIES)
    if name_or_path in FAMILIES:
        return Space(name_or_path, {name_or_path: FAMILIES[name_or_path]})
    path = Path(name_or_path)
    if path.suffix != ".py":
        known = ", ".join([ALL, *sorted(FAMILIES)])
        raise SpaceError(f"unknown space {name_or_path!r}; known: {known}, or a path to a .py family file")
    family = load_family_file(path)
    return Space(path.stem, {family.NAME: family})


def load_family_file(path: Path) -> ModuleType:
    """Import a user's family module from `path` and check it provides the family protocol."""
    if not path.is_file():
        raise SpaceError(f"space file not found: {path}")
    module_name = f"_digit_search_space_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpaceError(f"cannot import space file {path}")
    module = importlib.util.module_from_spec(spec)
    # registered before exec: dataclasses (and pickle) look the module up by name
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise SpaceError(f"space file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    try:
        _check_family(module, path)
    except SpaceError:
        del sys.modules[module_name]
        raise
    return module


def _check_family(module: ModuleType, path: Path) -> None:
    missing = [attr for attr in REQUIRED_ATTRIBUTES if not hasattr(module, attr)]
    if getattr(module, "REFERENCES", None) and not hasattr(module, "params_of"):
        missing.append("params_of (needed by its REFERENCES)")
    if missing:
        raise SpaceError(f"space file {path} is not a family module: missing {', '.join(missing)}")
    if not isinstance(module.NAME, str) or not module.NAME:
        raise SpaceError(f"space file {path}: NAME must be a non-empty string, got {module.NAME!r}")
    if not dataclasses.is_dataclass(module.Config):
        raise SpaceError(f"space file {path}: Config must be a dataclass")
