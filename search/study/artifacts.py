"""A trial's artifacts: weights (safetensors, loads without running code) and its probabilities.

They go through Optuna's artifact store, so optuna-dashboard lists them on the trial page and an
ensemble can be built later without re-training anything.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from search.errors import UserError, require_extra
from search.io import write_atomically
from search.study.optuna_internals import ArtifactStore
from search.study.storage import default_artifact_dir
from search.train.weights import load_weights_file, save_weights

ARTIFACT_ATTR = "artifacts"  # trial user attr: {"weights": id, "val_probs": id, "test_probs": id}


def artifact_location(option: str | None, storage: str) -> str:
    """--artifacts as given, else the default for the storage URL (beside a SQLite file)."""
    return option or str(default_artifact_dir(storage))


def is_s3_url(location: str) -> bool:
    return location.startswith("s3://")


def open_artifact_store(location: str | Path, *, must_exist: bool = False) -> ArtifactStore:
    """A directory (created unless it must exist) or `s3://bucket/prefix` (credentials from the environment)."""
    location = str(location)
    if is_s3_url(location):
        return _s3_store(location)
    path = Path(location)
    if must_exist and not path.is_dir():
        raise UserError(f"artifact store {path} does not exist; pass the --artifacts the studies were run with")
    path.mkdir(parents=True, exist_ok=True)
    return AtomicFileSystemArtifactStore(str(path))


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's folder store with each artifact written through search.io: a full disk or a kill leaves no half file."""

    def __init__(self, base_path: str) -> None:
        super().__init__(base_path)
        self.folder = Path(base_path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if Path(artifact_id).name != artifact_id or artifact_id in ("", ".", ".."):  # ids are flat names (uuid4)
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        write_atomically(self.folder / artifact_id, lambda stream: shutil.copyfileobj(content_body, stream))


def check_artifact_store(location: str) -> None:
    """Write and delete a small probe, so a store that can't be written (a path through a file, a bucket
    without credentials) is refused in one line before any trial trains, not after each one has."""
    try:
        store = open_artifact_store(location)
        probe = f".digit-search-probe-{uuid.uuid4().hex}"
        store.write(probe, io.BytesIO(b"probe"))
        store.remove(probe)
    except UserError:
        raise
    except Exception as err:  # OSError, botocore's NoCredentialsError and ClientError, ...
        reason = " ".join(str(err).split())[:300]
        raise UserError(f"--artifacts {location}: cannot write there ({type(err).__name__}: {reason})") from None


class PrefixedArtifactStore:
    """Keeps every artifact of a run under one key prefix of a shared bucket."""

    def __init__(self, inner: ArtifactStore, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.inner.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self.prefix + artifact_id)


def _s3_store(url: str) -> ArtifactStore:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise UserError(f"--artifacts {url!r}: no bucket; use s3://BUCKET or s3://BUCKET/PREFIX")
    require_extra("boto3", "s3", f"--artifacts {url}")
    from optuna.artifacts import Boto3ArtifactStore

    store = Boto3ArtifactStore(bucket)
    prefix = prefix.strip("/")
    return PrefixedArtifactStore(store, prefix + "/") if prefix else store


def store_trial_artifacts(
    trial: optuna.Trial,
    store: ArtifactStore,
    model: torch.nn.Module,
    metadata: dict[str, Any],
    val_probs: np.ndarray,
    test_probs: np.ndarray,
) -> dict[str, str]:
    """Upload weights and probabilities for `trial`; records and returns their artifact ids."""
    with tempfile.TemporaryDirectory(prefix="digit-search-") as tmp:
        files = {
            "weights": save_weights(
                Path(tmp) / f"trial-{trial.number}-weights.safetensors", model.state_dict(), metadata
            ),
            "val_probs": _write_array(Path(tmp) / f"trial-{trial.number}-val-probs.npy", val_probs),
            "test_probs": _write_array(Path(tmp) / f"trial-{trial.number}-test-probs.npy", test_probs),
        }
        ids = {
            key: upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            for key, path in files.items()
        }
    trial.set_user_attr(ARTIFACT_ATTR, ids)
    return ids


def load_weights(store: ArtifactStore, artifact_id: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A stored state dict and the metadata saved with it (family, params, ...); WeightsError if unreadable."""
    with tempfile.TemporaryDirectory(prefix="digit-search-") as tmp:
        path = Path(tmp) / "weights.safetensors"
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        return load_weights_file(path)


def load_probabilities(store: ArtifactStore, artifact_id: str) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="digit-search-") as tmp:
        path = Path(tmp) / "probs.npy"
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        return np.load(path, allow_pickle=False)


def stored_probabilities(store: ArtifactStore, artifact_ids: dict[str, str] | None, key: str) -> np.ndarray | None:
    """The trial's stored `key` probabilities ("val_probs" or "test_probs"), or None when missing."""
    artifact_id = (artifact_ids or {}).get(key)
    if artifact_id is None:
        return None
    try:
        return load_probabilities(store, artifact_id)
    except ArtifactNotFound:
        return None


def _write_array(path: Path, array: np.ndarray) -> Path:
    np.save(path, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return path
