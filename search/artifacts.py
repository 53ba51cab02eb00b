"""A trial's artifacts: weights (safetensors, loads without running code) and its probabilities.

They go through Optuna's artifact store, so optuna-dashboard lists them on the trial page and an
ensemble can be built later without re-training anything.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import safetensors.torch
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

ARTIFACT_ATTR = "artifacts"  # trial user attr: {"weights": id, "val_probs": id, "test_probs": id}


def open_artifact_store(directory: str | Path) -> FileSystemArtifactStore:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def store_trial_artifacts(
    trial: optuna.Trial,
    store: FileSystemArtifactStore,
    model: torch.nn.Module,
    metadata: dict[str, Any],
    val_probs: np.ndarray,
    test_probs: np.ndarray,
) -> dict[str, str]:
    """Upload weights and probabilities for `trial`; records and returns their artifact ids."""
    with tempfile.TemporaryDirectory(prefix="digit-search-") as tmp:
        files = {
            "weights": _write_weights(Path(tmp) / f"trial-{trial.number}-weights.safetensors", model, metadata),
            "val_probs": _write_array(Path(tmp) / f"trial-{trial.number}-val-probs.npy", val_probs),
            "test_probs": _write_array(Path(tmp) / f"trial-{trial.number}-test-probs.npy", test_probs),
        }
        ids = {key: upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial) for key, path in files.items()}
    trial.set_user_attr(ARTIFACT_ATTR, ids)
    return ids


def load_weights(store: FileSystemArtifactStore, artifact_id: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A stored state dict and the metadata saved with it (family, params, ...)."""
    with tempfile.TemporaryDirectory(prefix="digit-search-") as tmp:
        path = Path(tmp) / "weights.safetensors"
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        state = safetensors.torch.load_file(str(path))
        with safetensors.safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    return state, {key: json.loads(value) for key, value in raw.items()}


def load_probabilities(store: FileSystemArtifactStore, artifact_id: str) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="digit-search-") as tmp:
        path = Path(tmp) / "probs.npy"
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        return np.load(path, allow_pickle=False)


def _write_weights(path: Path, model: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    # channels_last tensors are not contiguous in the default layout safetensors expects
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    safetensors.torch.save_file(state, str(path), metadata={key: json.dumps(value) for key, value in metadata.items()})
    return path


def _write_array(path: Path, array: np.ndarray) -> Path:
    np.save(path, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return path
