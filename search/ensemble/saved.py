"""A saved ensemble: one folder with each member's weights, config and ensemble weight.

Layout of a folder:
    manifest.json            format, created (UTC), method, calibration, tta, data identity, members
                             (each with its weight and temperature); see search.ensemble.manifest
    member-00.safetensors    weights, with family and params as metadata (no code is run to load)
    spaces/NAME.py           copies of user family files, so the ensemble loads without them

`predict` uses the newest folder under studies/ensembles by the manifest's `created` time. A member
without a temperature (saved before calibration existed) is used at T = 1, as it was then. Only a
folder digit-search wrote is ever replaced, and only by rename-aside, rename-in (search.io).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from search.config import DEFAULT_ENSEMBLES, IMAGE_SIDE
from search.ensemble.inputs import load_inputs
from search.ensemble.manifest import MANIFEST, Manifest, ManifestMember, folder_problem, newest_ensemble, read_manifest
from search.ensemble.selection import calibrated_blend
from search.errors import UserError
from search.io import replace_folder, staged_folder, write_bytes, write_text
from search.train.inference import class_probabilities
from search.train.models import rebuild_model
from search.train.weights import WeightsError, load_weights_file, save_weights
from spaces import Space, SpaceError, load_space


@dataclass(frozen=True)
class Prediction:
    name: str  # the file, or file:row for a CSV row
    digit: int
    probability: float


@dataclass(frozen=True)
class LoadedEnsemble:
    """A saved ensemble with its members' models rebuilt, ready to classify arrays or files."""

    directory: Path
    manifest: Manifest
    models: list[torch.nn.Module]  # one per manifest member, in eval mode

    @property
    def tta(self) -> bool:
        return self.manifest.tta

    @property
    def weights(self) -> list[float]:
        return self.manifest.weights.tolist()

    @property
    def temperatures(self) -> list[float]:
        return self.manifest.temperatures.tolist()

    def member_probabilities(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(M, N, 10) each member's probabilities of (N, 28, 28) or (N, 1, 28, 28) uint8 images, before calibration."""
        batch = image_batch(images)
        return np.stack([class_probabilities(model, batch, self.tta) for model in self.models])

    def predict_proba(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, 10) float64 ensemble probabilities of (N, 28, 28) or (N, 1, 28, 28) uint8 images."""
        return calibrated_blend(self.member_probabilities(images), self.manifest.weights, self.manifest.temperatures)

    def predict(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N,) int64 digits of (N, 28, 28) or (N, 1, 28, 28) uint8 images."""
        return self.predict_proba(images).argmax(axis=1)

    def predict_files(self, paths: Iterable[str | Path]) -> list[Prediction]:
        """One Prediction per image file (PNG, JPEG) or CSV pixel row; every file is read before any is classified."""
        names, images = load_inputs(tuple(paths))
        probs = self.predict_proba(images)  # (N, 10)
        return [Prediction(name, int(p.argmax()), float(p.max())) for name, p in zip(names, probs)]


def image_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) uint8 tensor of (N, 28, 28) or (N, 1, 28, 28) uint8 images; UserError naming `images`."""
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    side = (IMAGE_SIDE, IMAGE_SIDE)
    if tensor.dtype != torch.uint8:
        raise UserError(f"images must be uint8 gray levels 0..255, got {tensor.dtype}")
    if tensor.ndim == 3 and tuple(tensor.shape[1:]) == side:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != (1, *side) or len(tensor) == 0:
        raise UserError(
            f"images must be (N, 28, 28) or (N, 1, 28, 28) with N >= 1, got {tuple(tensor.shape)}; one digit is images[None]"
        )
    return tensor


# ---- saving ------------------------------------------------------------------------------------


def weights_file_name(index: int) -> str:
    """Where the index-th member's weights go inside the folder."""
    return f"member-{index:02d}.safetensors"


def space_file_name(source: str | Path) -> str:
    """Where the copy of a user's family file goes inside the folder."""
    return f"spaces/{Path(source).name}"


def new_ensemble_dir(root: str | Path, method: str) -> Path:
    """A fresh folder name under root: UTC time and method, e.g. 20250101-120000-greedy."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / f"{stamp}-{method}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path(root) / f"{stamp}-{method}-{suffix}"
    return candidate


def check_save_dir(directory: str | Path, protected: Iterable[str | Path] = ()) -> Path:
    """Refuse a --save folder that digit-search may not replace; returns it as a Path.

    A new or empty folder is fine, and so is a saved ensemble it wrote (which is replaced). Never
    the working directory or a folder holding it, nor a folder holding a `protected` file (the
    study database), whatever they contain.
    """
    directory = Path(directory)
    where = f"--save {str(directory)!r}"
    resolved, cwd = directory.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UserError(
            f"{where} is the working directory or holds it; choose a new directory, e.g. {DEFAULT_ENSEMBLES}/NAME"
        )
    for path in map(Path, protected):
        if resolved in path.resolve().parents:
            raise UserError(f"{where} holds the study database {path}; choose a new directory")
    try:
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            raise UserError(f"{where} exists and is not a saved ensemble (not a folder); choose a new directory")
        problem = folder_problem(directory) if directory.is_dir() and any(directory.iterdir()) else None
    except OSError as err:
        raise UserError(f"{where} cannot be read ({err.strerror or err}); choose a new directory") from None
    if problem:
        raise UserError(f"{where} exists and is not a saved ensemble ({problem}); choose a new directory")
    return directory


def save_ensemble(
    directory: str | Path,
    manifest: Manifest,
    states: Sequence[dict[str, torch.Tensor]],
    space_sources: Mapping[str, str | Path],
    protected: Iterable[str | Path] = (),
) -> Path:
    """Write the ensemble into `directory`, staged beside it and then moved in; replaces an older saved ensemble there.

    `states` holds each member's state dict, in the manifest's order; `space_sources` maps a
    member's space_file to the user's family file it copies.
    """
    directory = check_save_dir(directory, protected)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with staged_folder(directory) as staging:
            for member, state in zip(manifest.members, states, strict=True):
                metadata = {
                    "family": member.family,
                    "params": member.params,
                    "study": member.study,
                    "trial": member.trial,
                }
                save_weights(staging / member.weights_file, state, metadata)
            for relative, source in space_sources.items():
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                write_bytes(staging / relative, Path(source).read_bytes())
            write_text(staging / MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")
            read_manifest(staging)  # what is moved in is what a reader will accept
            replace_folder(staging, directory)
    except OSError as err:
        raise UserError(f"--save {str(directory)!r}: cannot write it ({err.strerror or err})") from None
    return directory


# ---- loading -----------------------------------------------------------------------------------


def latest_ensemble(root: str | Path = DEFAULT_ENSEMBLES) -> Path:
    """The saved ensemble under `root` with the newest manifest `created` time; UserError when there is none."""
    found = newest_ensemble(root)
    if found is None:
        raise UserError(f"no saved ensemble under {root}; run digit-search ensemble first, or pass --ensemble DIR")
    return found[0]


def load_ensemble(directory: str | Path, device: torch.device) -> LoadedEnsemble:
    """Rebuild every member of a saved ensemble on `device`; UserError naming what is wrong."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    return LoadedEnsemble(
        directory, manifest, [_member_model(directory, member, device) for member in manifest.members]
    )


def _member_model(directory: Path, member: ManifestMember, device: torch.device) -> torch.nn.Module:
    label = f"{directory}: member {member.label}"
    space = _member_space(directory, member, label)
    try:
        state, _ = load_weights_file(directory / member.weights_file)
    except WeightsError as err:
        raise UserError(f"{label}: cannot read its weights ({err})") from None
    return rebuild_model(space, member.params, state, device, label)


def _member_space(directory: Path, member: ManifestMember, label: str) -> Space:
    try:
        return load_space(str(directory / member.space_file) if member.space_file else member.space)
    except SpaceError as err:
        raise UserError(f"{label}: cannot load its space ({err})") from None
