"""The Kaggle submission file (`ImageId,Label`) and the lineage JSON written beside it.

Both are written to a temporary file in the target directory, checked, then renamed into place,
so a failed or interrupted run never leaves a partial submission behind.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from search.errors import UserError

HEADER = "ImageId,Label"
NUM_CLASSES = 10


def lineage_path(submission: str | Path) -> Path:
    """Where the lineage of `submission` goes: same folder and stem, `.json`."""
    return Path(submission).with_suffix(".json")


def check_out_path(path: str | Path) -> Path:
    """Refuse, before any work, an --out whose folder is missing or which names a folder."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"--out {str(path)!r}: directory {str(folder)!r} does not exist; create it or choose another path")
    if path.is_dir():
        raise UserError(f"--out {str(path)!r} is a directory; give a file name, e.g. {path / 'submission.csv'}")
    if path.suffix == ".json":
        raise UserError(f"--out {str(path)!r}: the lineage goes beside the submission as .json; give a .csv name")
    if not os.access(folder, os.W_OK):
        raise UserError(f"--out {str(path)!r}: directory {str(folder)!r} is not writable")
    return path


def submission_text(labels: np.ndarray) -> str:
    """`ImageId,Label` then one row per test image, ImageId counting from 1."""
    labels = np.asarray(labels)
    rows = (f"{image_id},{int(label)}" for image_id, label in enumerate(labels, start=1))
    return "\n".join([HEADER, *rows]) + "\n"


def check_submission(path: Path, rows: int) -> None:
    """Raise ValueError unless `path` is a well-formed submission of exactly `rows` images."""
    lines = path.read_text(encoding="ascii").splitlines()
    if not lines or lines[0] != HEADER:
        raise ValueError(f"{path}: the first line must be {HEADER!r}")
    if len(lines) - 1 != rows:
        raise ValueError(f"{path}: {len(lines) - 1} rows, expected {rows}")
    for image_id, line in enumerate(lines[1:], start=1):
        id_text, _, label_text = line.partition(",")
        if id_text != str(image_id) or not label_text.isdigit() or not 0 <= int(label_text) < NUM_CLASSES:
            raise ValueError(f"{path} line {image_id + 1}: expected '{image_id},<digit>', got {line!r}")


def write_submission(path: str | Path, labels: np.ndarray, lineage: dict[str, Any]) -> tuple[Path, Path]:
    """Write the submission and its lineage atomically; returns (csv path, json path)."""
    path = check_out_path(path)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    json_path = lineage_path(path)
    json_text = json.dumps({"submission": path.name, "rows": len(labels), **lineage}, indent=2, default=_plain) + "\n"
    with _staged(path) as staged_csv, _staged(json_path) as staged_json:
        staged_csv.write_text(submission_text(labels), encoding="ascii")
        check_submission(staged_csv, len(labels))
        staged_json.write_text(json_text, encoding="utf-8")
        os.replace(staged_json, json_path)
        os.replace(staged_csv, path)
    return path, json_path


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape a prediction."""
    found = {"python": platform.python_version()}
    for package in ("digit-search", "torch", "numpy", "optuna"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "unknown"
    return found


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A temporary file beside `target` (same file system, so renaming is atomic), removed unless renamed."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp makes files private; a submission need not be
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays, which json.dumps does not know."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
