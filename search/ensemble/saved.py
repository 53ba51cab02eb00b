"""A saved ensemble: one folder with each member's weights, config and ensemble weight.

Layout of a folder:
    manifest.json            created (UTC), method, calibration, tta, data identity, members
                             (each with its weight and temperature)
    member-00.safetensors    weights, with family and params as metadata (no code is run to load)
    spaces/NAME.py           copies of user family files, so the ensemble loads without them

`predict` uses the newest folder under studies/ensembles by the manifest's `created` time. A member
without a temperature (saved before calibration existed) is used at T = 1, as it was then.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from search.config import DEFAULT_ENSEMBLES
from search.ensemble.selection import apply_temperature, check_temperature
from search.errors import UserError
from search.train.inference import class_probabilities
from search.train.models import rebuild_model
from search.train.weights import WeightsError, load_weights_file, save_weights
from spaces import Space, SpaceError, load_space

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class MemberToSave:
    """What a member needs to be rebuilt without the study database."""

    study: str
    trial: int
    family: str
    space: str  # the study's space name
    space_file: str | None  # path of a user's family file, copied into the ensemble
    params: dict[str, Any]
    weight: float
    state: dict[str, torch.Tensor]
    val_accuracy: float
    temperature: float = 1.0


@dataclass
class LoadedEnsemble:
    directory: Path
    manifest: dict[str, Any]
    models: list[torch.nn.Module]
    weights: list[float]
    temperatures: list[float]

    @property
    def tta(self) -> bool:
        return bool(self.manifest.get("tta", False))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 10) float64 ensemble probabilities of uint8 (N, 1, 28, 28) images, each member at its temperature."""
        total = None
        for model, weight, temperature in zip(self.models, self.weights, self.temperatures):
            calibrated = apply_temperature(class_probabilities(model, images, self.tta), temperature)
            probs = torch.from_numpy(calibrated) * weight
            total = probs if total is None else total + probs
        return total / sum(self.weights)


def new_ensemble_dir(root: str | Path, method: str) -> Path:
    """A fresh folder name under root: UTC time and method, e.g. 20250101-120000-greedy."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / f"{stamp}-{method}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path(root) / f"{stamp}-{method}-{suffix}"
    return candidate


def check_save_dir(directory: str | Path) -> Path:
    """Refuse a --save folder that holds something other than an older saved ensemble (which is replaced)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir()) and not (directory / MANIFEST).is_file())):
        raise UserError(f"--save {str(directory)!r} exists and is not a saved ensemble; choose a new directory")
    return directory


def save_ensemble(directory: str | Path, members: list[MemberToSave], manifest: dict[str, Any]) -> Path:
    """Write the ensemble into `directory` (staged beside it, then renamed); replaces an older saved ensemble there."""
    directory = check_save_dir(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    except OSError as err:
        raise UserError(f"--save {str(directory)!r}: cannot create it ({err.strerror or err})") from None
    try:
        records = [_write_member(staging, index, member) for index, member in enumerate(members)]
        full = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(), **manifest, "members": records}
        (staging / MANIFEST).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp makes folders private
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _write_member(folder: Path, index: int, member: MemberToSave) -> dict[str, Any]:
    weights_file = f"member-{index:02d}.safetensors"
    metadata = {"family": member.family, "params": member.params, "study": member.study, "trial": member.trial}
    save_weights(folder / weights_file, member.state, metadata)
    space_file = None
    if member.space_file is not None:
        space_file = f"spaces/{Path(member.space_file).name}"
        (folder / "spaces").mkdir(exist_ok=True)
        shutil.copyfile(member.space_file, folder / space_file)
    return {
        "study": member.study,
        "trial": member.trial,
        "family": member.family,
        "space": member.space,
        "space_file": space_file,
        "params": member.params,
        "weight": member.weight,
        "temperature": member.temperature,
        "val_accuracy": member.val_accuracy,
        "weights_file": weights_file,
    }


def latest_ensemble(root: str | Path = DEFAULT_ENSEMBLES) -> Path:
    """The saved ensemble under `root` with the newest manifest `created` time."""
    root = Path(root)
    found = []
    for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else []:
        try:
            created = datetime.fromisoformat(json.loads(manifest.read_text(encoding="utf-8"))["created"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a broken or foreign folder is not a candidate for "most recent"
        found.append((created, manifest.parent))
    if not found:
        raise UserError(f"no saved ensemble under {root}; run digit-search ensemble first, or pass --ensemble DIR")
    return max(found)[1]


def load_ensemble(directory: str | Path, device: torch.device) -> LoadedEnsemble:
    """Rebuild every member of a saved ensemble on `device`; UserError naming what is wrong."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        records = manifest["members"]
    except FileNotFoundError:
        raise UserError(f"--ensemble {str(directory)!r}: no {MANIFEST}; give a folder written by digit-search ensemble") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{manifest_path}: unreadable ({type(err).__name__}: {err})") from None
    if manifest.get("format") != FORMAT or not records:
        raise UserError(f"{manifest_path}: not a format-{FORMAT} ensemble with members")
    models, weights, temperatures = [], [], []
    for record in records:
        label = f"{directory}: member {record.get('study')}#{record.get('trial')}"
        space = _member_space(directory, record, label)
        try:
            state, _ = load_weights_file(directory / record["weights_file"])
        except (WeightsError, KeyError) as err:
            raise UserError(f"{label}: cannot read its weights ({err})") from None
        models.append(rebuild_model(space, record["params"], state, device, label))
        weights.append(float(record["weight"]))
        temperatures.append(member_temperature(record, label))
    return LoadedEnsemble(directory, manifest, models, weights, temperatures)


def member_temperature(record: dict[str, Any], label: str) -> float:
    """The member's temperature; 1 for ensembles saved before members were calibrated."""
    value = record.get("temperature", 1.0)
    try:
        return check_temperature(value)
    except (TypeError, ValueError):
        raise UserError(f"{label}: its temperature {value!r} is not a number above 0") from None


def _member_space(directory: Path, record: dict[str, Any], label: str) -> Space:
    try:
        if record.get("space_file"):
            return load_space(str(directory / record["space_file"]))
        return load_space(record["space"])
    except (SpaceError, KeyError) as err:
        raise UserError(f"{label}: cannot load its space ({err})") from None
