"""The Kaggle submission file (`ImageId,Label`) and the lineage JSON written beside it.

Each is written through search.io (temporary file, checked, renamed into place), the submission
first: the lineage records the submission's SHA-256, so a lineage beside a submission it does not
describe (a run killed between the two renames) is detectable, never silently paired.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from search.config import NUM_CLASSES
from search.errors import UserError
from search.io import commit, staged_file, write_text

HEADER = "ImageId,Label"


def lineage_path(submission: str | Path) -> Path:
    """Where the lineage of `submission` goes: same folder and stem, `.json`."""
    return Path(submission).with_suffix(".json")


def check_out_path(path: str | Path) -> Path:
    """Refuse, before any work, an --out whose folder is missing or which names a folder."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise UserError(
            f"--out {str(path)!r}: directory {str(folder)!r} does not exist; create it or choose another path"
        )
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
    """Write the submission, then its lineage (with the submission's SHA-256), each atomically; returns (csv path, json path)."""
    path = check_out_path(path)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    csv_bytes = submission_text(labels).encode("ascii")
    json_path = lineage_path(path)
    record = {
        "submission": path.name,
        "rows": len(labels),
        "submission_sha256": hashlib.sha256(csv_bytes).hexdigest(),
        **lineage,
    }
    json_text = (
        json.dumps(record, indent=2, default=_plain) + "\n"
    )  # before any write: an unserialisable lineage writes nothing
    with staged_file(path) as staged_csv:
        staged_csv.write_bytes(csv_bytes)
        check_submission(staged_csv, len(labels))
        commit(staged_csv, path)
    write_text(json_path, json_text)
    return path, json_path


def lineage_problem(submission: str | Path) -> str | None:
    """Why the lineage beside `submission` does not describe it (missing, unreadable, another file's hash), or None."""
    submission = Path(submission)
    json_path = lineage_path(submission)
    try:
        recorded = json.loads(json_path.read_text(encoding="utf-8")).get("submission_sha256")
        actual = hashlib.sha256(submission.read_bytes()).hexdigest()
    except (OSError, ValueError, AttributeError) as err:
        return f"cannot compare {submission.name} with {json_path.name} ({type(err).__name__})"
    if recorded != actual:
        return f"{json_path.name} records another submission than {submission.name} (SHA-256 {str(recorded)[:12]}, file {actual[:12]})"
    return None


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


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays, which json.dumps does not know."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
