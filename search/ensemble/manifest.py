"""The manifest of a saved ensemble: its records, their validation, and finding the newest saved ensemble.

A manifest is checked as a whole before anything in its folder is used: a saved ensemble is
loaded by `predict`, the report and the Python API, and may have come from someone else. Every
path in it must stay inside its folder (after following symlinks), so loading one never reads a
file elsewhere; a member's space is a built-in family unless the family file travels inside the
folder, which then carries code, like a Python package.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from search.config import METHODS
from search.ensemble.selection import check_temperature
from search.errors import UserError
from search.io import is_temporary, remove_stale_temporaries
from spaces.registry import ALL, FAMILIES

MANIFEST = "manifest.json"
FORMAT = 1  # the marker of a folder digit-search wrote; bump when the layout changes
MAX_MANIFEST_BYTES = 16 * 2**20  # a real one is a few kB per member


class ManifestError(UserError):
    """A folder that is not a whole, valid saved ensemble; one line naming the file and what is wrong."""

    def __init__(self, where: Path, reason: str, hint: str = "") -> None:
        self.reason = reason
        super().__init__(f"{where}: {reason}{'; ' + hint if hint else ''}")


@dataclass(frozen=True)
class ManifestMember:
    """One member as a manifest records it: enough to rebuild its model without the study database."""

    study: str
    trial: int
    family: str
    space: str  # the study's space: a built-in family, "all", or a user file's stem
    params: dict[str, Any]  # the trial's Optuna params
    weight: float  # >= 0; the ensemble's weights need not sum to one
    weights_file: str  # relative to the ensemble folder
    temperature: float = 1.0  # ensembles saved before calibration existed record none
    space_file: str | None = None  # relative to the folder: a copy of the user's family file
    val_accuracy: float | None = None

    @property
    def label(self) -> str:
        return f"{self.study}#{self.trial}"

    @classmethod
    def from_json(cls, record: Any, folder: str | Path) -> ManifestMember:
        """A member read from its JSON object; ValueError saying what is wrong.

        `folder` is the ensemble's: both file paths must resolve inside it.
        """
        if not isinstance(record, dict):
            raise ValueError(f"a member must be a JSON object, got {_show(record)}")
        space_file = record.get("space_file")
        space = _text(record, "space")
        if space_file is not None:
            space_file = inside_folder(folder, space_file, "space_file")
        elif space != ALL and space not in FAMILIES:
            raise ValueError(
                f"space {space!r} is not a built-in family ({', '.join([*FAMILIES, ALL])}) and no space_file inside the folder is given"
            )
        params = record.get("params")
        if not isinstance(params, dict):
            raise ValueError(f"params must be a JSON object, got {_show(params)}")
        return cls(
            study=_text(record, "study"),
            trial=_whole(record.get("trial"), "trial"),
            family=_text(record, "family"),
            space=space,
            params=params,
            weight=_weight(record.get("weight")),
            weights_file=inside_folder(folder, record.get("weights_file"), "weights_file"),
            temperature=_temperature(record.get("temperature", 1.0)),
            space_file=space_file,
            val_accuracy=_optional_number(record.get("val_accuracy"), "val_accuracy"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial": self.trial,
            "family": self.family,
            "space": self.space,
            "space_file": self.space_file,
            "params": self.params,
            "weight": self.weight,
            "temperature": self.temperature,
            "val_accuracy": self.val_accuracy,
            "weights_file": self.weights_file,
        }


@dataclass(frozen=True)
class Manifest:
    """What a saved ensemble is: how it was chosen, on which data, and its members."""

    created: datetime  # timezone-aware
    method: str
    tta: bool
    studies: tuple[str, ...]
    data_hash: str
    split: str  # fingerprint of the validation split
    members: tuple[ManifestMember, ...]
    calibration: str | None = None  # None: saved before calibration existed
    val_accuracy: float | None = None
    val_log_loss: float | None = None
    format: int = FORMAT

    @property
    def weights(self) -> np.ndarray:
        """(M,) the members' weights."""
        return np.array([member.weight for member in self.members], dtype=np.float64)

    @property
    def temperatures(self) -> np.ndarray:
        """(M,) the members' temperatures."""
        return np.array([member.temperature for member in self.members], dtype=np.float64)

    @classmethod
    def from_json(cls, data: Any, folder: str | Path) -> Manifest:
        """A whole manifest, every member and path checked; ValueError saying what is wrong first."""
        if not isinstance(data, dict):
            raise ValueError(f"a manifest must be a JSON object, got {_show(data)}")
        if data.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} saved ensemble (format {_show(data.get('format'))})")
        records = data.get("members")
        if not isinstance(records, list) or not records:
            raise ValueError(f"members must be a non-empty list, got {_show(records)}")
        members = []
        for position, record in enumerate(records, start=1):
            try:
                members.append(ManifestMember.from_json(record, folder))
            except ValueError as err:
                raise ValueError(f"member {position}{_member_label(record)}: {err}") from None
        if not any(member.weight > 0 for member in members):
            raise ValueError("the members' weights are all zero")
        studies = data.get("studies")
        if not isinstance(studies, list) or not studies or not all(isinstance(name, str) and name for name in studies):
            raise ValueError(f"studies must be a non-empty list of names, got {_show(studies)}")
        tta = data.get("tta", False)
        if not isinstance(tta, bool):
            raise ValueError(f"tta must be true or false, got {_show(tta)}")
        calibration = data.get("calibration")
        if calibration is not None and not isinstance(calibration, str):
            raise ValueError(f"calibration must be a name, got {_show(calibration)}")
        method = _text(data, "method")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        return cls(
            created=_aware_time(data.get("created")),
            method=method,
            tta=tta,
            studies=tuple(studies),
            data_hash=_text(data, "data_hash"),
            split=_text(data, "split"),
            members=tuple(members),
            calibration=calibration,
            val_accuracy=_optional_number(data.get("val_accuracy"), "val_accuracy"),
            val_log_loss=_optional_number(data.get("val_log_loss"), "val_log_loss"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created": self.created.isoformat(),
            "method": self.method,
            "calibration": self.calibration,
            "tta": self.tta,
            "studies": list(self.studies),
            "data_hash": self.data_hash,
            "split": self.split,
            "val_accuracy": self.val_accuracy,
            "val_log_loss": self.val_log_loss,
            "members": [member.to_json() for member in self.members],
        }

    def files(self) -> set[str]:
        """Every file of the folder the manifest names, itself included (relative paths)."""
        named = {
            MANIFEST,
            *(m.weights_file for m in self.members),
            *(m.space_file for m in self.members if m.space_file),
        }
        return {PurePath(name).as_posix() for name in named}


def read_manifest(folder: str | Path) -> Manifest:
    """The validated manifest of a saved ensemble folder; ManifestError (one line) when there is none or it is invalid."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(path, f"larger than {MAX_MANIFEST_BYTES // 2**20} MB, so not one digit-search wrote")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(
            folder, f"no readable {MANIFEST}", "give a folder written by digit-search ensemble"
        ) from None
    except OSError as err:
        raise ManifestError(path, f"cannot be read ({err.strerror or err})") from None
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, or nested beyond reason
        raise ManifestError(path, f"not valid JSON ({type(err).__name__})") from None
    try:
        return Manifest.from_json(data, folder)
    except ValueError as err:
        raise ManifestError(path, str(err)) from None


def inside_folder(folder: str | Path, relative: Any, key: str) -> str:
    """`relative` as given, checked to be a relative path that stays inside `folder` after following symlinks."""
    if not isinstance(relative, str) or not relative.strip():
        raise ValueError(f"{key} must be a relative path inside the ensemble folder, got {_show(relative)}")
    if PurePath(relative).is_absolute() or ".." in PurePath(relative).parts or "\\" in relative:
        raise ValueError(f"{key} {relative!r} must be a relative path inside the ensemble folder, without '..'")
    root = Path(folder).resolve()
    if root not in (root / relative).resolve().parents:  # a symbolic link on the way leads out
        raise ValueError(f"{key} {relative!r} leads outside the ensemble folder")
    return relative


def folder_problem(folder: str | Path) -> str | None:
    """Why `folder` is not a saved ensemble that digit-search wrote and may replace, or None when it is one.

    It must hold a valid manifest and nothing but the files that manifest names: a file a user put
    there, or a link, makes it theirs.
    """
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ManifestError as err:
        return err.reason
    files = manifest.files()
    folders = {parent.as_posix() for name in files for parent in PurePath(name).parents} - {"."}
    for top, dirs, names in os.walk(folder):
        for name in [*dirs, *names]:
            path = Path(top) / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                return f"it holds a symbolic link, {relative}"
            if relative not in (folders if name in dirs else files):
                return f"it holds {relative}, which its {MANIFEST} does not name"
    return None


def newest_ensemble(root: str | Path, accept: Callable[[Manifest], bool] | None = None) -> tuple[Path, Manifest] | None:
    """The saved ensemble under `root` with the newest `created` time among those `accept` takes; None if none.

    Hidden and temporary folders (a save in progress, or one a kill interrupted) are never
    candidates, and stale ones are removed; a folder whose manifest is missing or invalid is skipped.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    try:
        remove_stale_temporaries(root)
    except OSError:
        pass  # a read-only root: its leftovers are skipped below all the same
    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or is_temporary(folder) or not folder.is_dir():
            continue
        try:
            manifest = read_manifest(folder)
        except ManifestError:
            continue
        if accept is None or accept(manifest):
            found.append((manifest.created, folder.name, folder, manifest))
    if not found:
        return None
    _, _, folder, manifest = max(found, key=lambda item: item[:2])
    return folder, manifest


# ---- checking JSON values ----------------------------------------------------------------------


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _member_label(record: Any) -> str:
    """' (cnn#4)' for a record that names its study and trial, else ''."""
    if isinstance(record, dict) and isinstance(record.get("study"), str) and isinstance(record.get("trial"), int):
        return f" ({record['study'][:40]}#{record['trial']})"
    return ""


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string, got {_show(value)}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a whole number >= 0, got {_show(value)}")
    return value


def _weight(value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {_show(value)}")
    return float(value)


def _temperature(value: Any) -> float:
    try:
        if not _is_number(value):
            raise ValueError
        return check_temperature(value)
    except ValueError:
        raise ValueError(f"temperature must be a finite number above 0, got {_show(value)}") from None


def _optional_number(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number or null, got {_show(value)}")
    return float(value)


def _aware_time(value: Any) -> datetime:
    try:
        created = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        created = None
    if created is None or created.tzinfo is None or created.utcoffset() is None:
        raise ValueError(
            f"created must be an ISO time with a timezone, e.g. 2025-01-01T12:00:00+00:00, got {_show(value)}"
        )
    return created
