"""Ensemble candidates: the top completed trials of named studies, with their class probabilities.

Studies are only mixed when they were built on the same data and validation split. Stored
probabilities are used as they are; a trial's model is rebuilt from its stored weights only when
they are missing, or for test-time augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from search.config import NUM_CLASSES
from search.data.digits import EMBEDDED_SOURCE, load_digits
from search.errors import UserError
from search.study.artifacts import ARTIFACT_ATTR, load_weights, stored_probabilities
from search.study.optuna_internals import ArtifactStore
from search.study.storage import check_study_names
from search.study.trial_attrs import EPOCHS_ATTR
from search.train.inference import class_probabilities
from search.train.models import rebuild_model
from search.train.prepared import PreparedData, prepare_digits
from search.train.weights import WeightsError
from spaces import Space, load_space
from spaces.registry import ALL, FAMILIES

# Identity of the data a study was built on; studies in one ensemble must agree on all of it.
DATA_ATTRS = ("data_hash", "split")


@dataclass
class CandidateTrial:
    """One candidate trial of a study and, once loaded, its validation and test probabilities."""

    study: str
    number: int
    value: float  # validation accuracy recorded by the search
    family: str
    space: str  # the study's space name
    params: dict[str, Any]
    artifacts: dict[str, str]
    # how it trained, as the trial recorded it (None for trials that did not)
    seed: int | None = None
    epochs: int | None = None  # the epoch budget
    images_per_second: float | None = None
    val_probs: np.ndarray | None = field(default=None, repr=False)  # (V, 10)
    test_probs: np.ndarray | None = field(default=None, repr=False)  # (T, 10)

    @property
    def label(self) -> str:
        return f"{self.study}#{self.number}"


def load_studies(storage: optuna.storages.BaseStorage, names: list[str], storage_url: str) -> list[optuna.Study]:
    """The named studies; UserError naming an unknown one and the studies that do exist."""
    return [
        optuna.load_study(study_name=name, storage=storage) for name in check_study_names(storage, names, storage_url)
    ]


def check_same_data(studies: list[optuna.Study]) -> dict[str, Any]:
    """The data identity the studies share (hash, split, source, rows); UserError if they differ."""
    first = studies[0]
    for study in studies:
        missing = [key for key in DATA_ATTRS if key not in study.user_attrs]
        if missing:
            raise UserError(f"study {study.study_name!r} records no {missing[0]}; was it created by digit-search run?")
    for study in studies[1:]:
        if any(study.user_attrs[key] != first.user_attrs[key] for key in DATA_ATTRS):
            raise UserError(
                f"studies {first.study_name!r} and {study.study_name!r} were built on different data or validation splits "
                f"({_describe_data(first.user_attrs)} vs {_describe_data(study.user_attrs)}); "
                f"ensemble only studies run with the same --data, --limit, --val-fraction and --split-seed"
            )
    return dict(first.user_attrs)


def _describe_data(attrs: dict[str, Any]) -> str:
    return f"data {str(attrs['data_hash'])[:12]}, {attrs.get('train_rows', '?')}+{attrs.get('val_rows', '?')} rows, split {attrs['split']}"


def top_candidates(study: optuna.Study, top: int) -> list[CandidateTrial]:
    """The `top` completed trials with stored artifacts, best validation accuracy first."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and isinstance(t.user_attrs.get(ARTIFACT_ATTR), dict)
    ]
    if not trials:
        raise UserError(
            f"study {study.study_name!r} has no completed trials with stored weights; run digit-search run --study {study.study_name} first"
        )
    trials.sort(key=lambda t: (-t.value, t.user_attrs.get("val_loss", np.inf), t.number))
    space = str(study.user_attrs.get("space", ""))
    return [_candidate(study.study_name, space, trial) for trial in trials[:top]]


def _candidate(study_name: str, space: str, trial: FrozenTrial) -> CandidateTrial:
    return CandidateTrial(
        study=study_name,
        number=trial.number,
        value=float(trial.value),
        family=str(trial.user_attrs.get("family", "?")),
        space=space,
        params=dict(trial.params),
        artifacts=dict(trial.user_attrs[ARTIFACT_ATTR]),
        seed=trial.user_attrs.get("seed"),
        epochs=trial.user_attrs.get(EPOCHS_ATTR),
        images_per_second=trial.user_attrs.get("images_per_second"),
    )


def resolve_space(name: str, study: str, space_files: tuple[str, ...] = ()) -> tuple[Space, str | None]:
    """The Space a study searched, and the path of its family file when it was a user's file.

    A study records only a user file's name (its stem), so such a file must be given again.
    """
    if not name:
        raise UserError(f"study {study!r} records no space; was it created by digit-search run?")
    if name == ALL or name in FAMILIES:
        return load_space(name), None
    for path in space_files:
        if Path(path).stem == name:
            return load_space(path), str(path)
    raise UserError(
        f"study {study!r} searched the space file '{name}.py', whose location is not recorded; "
        f"pass --space-file path/to/{name}.py"
    )


def load_candidate_probabilities(
    candidate: CandidateTrial,
    store: ArtifactStore,
    prepared: PreparedData,
    space: Space,
    *,
    tta: bool,
    device: torch.device,
) -> bool:
    """Fill candidate.val_probs and candidate.test_probs; returns True when they had to be recomputed."""
    probs = None if tta else _stored_probabilities(store, candidate)
    recomputed = probs is None
    if recomputed:
        model = load_candidate_model(candidate, store, space, device)
        probs = (
            class_probabilities(model, prepared.tensors.val_images, tta),
            class_probabilities(model, prepared.tensors.test_images, tta),
        )
    expected = (len(prepared.split.val_index), NUM_CLASSES), (len(prepared.digits.test_images), NUM_CLASSES)
    for name, array, shape in zip(("validation", "test"), probs, expected):
        if array.shape != shape:
            raise UserError(
                f"{candidate.label}: its stored {name} probabilities have shape {array.shape}, expected {shape}; "
                f"the artifact store does not belong to this study"
            )
    candidate.val_probs, candidate.test_probs = probs
    return recomputed


def load_candidate_model(
    candidate: CandidateTrial, store: ArtifactStore, space: Space, device: torch.device
) -> torch.nn.Module:
    """The trained model of a candidate, rebuilt from its stored weights."""
    return rebuild_model(space, candidate.params, load_candidate_state(candidate, store), device, candidate.label)


def load_candidate_state(candidate: CandidateTrial, store: ArtifactStore) -> dict[str, torch.Tensor]:
    """A candidate's stored state dict; UserError when the weights are gone or unreadable."""
    artifact_id = candidate.artifacts.get("weights")
    try:
        if artifact_id is None:
            raise ArtifactNotFound("no weights id recorded")
        state, _ = load_weights(store, artifact_id)
    except ArtifactNotFound:
        raise UserError(
            f"{candidate.label}: its weights are not in the artifact store; pass the --artifacts DIR the study was run with"
        ) from None
    except WeightsError as err:  # its message names a temporary download; the artifact id is what the user can find
        raise UserError(
            f"{_artifact_label(candidate.study, candidate.number, 'weights', artifact_id)}: {str(err).partition(': ')[2]}"
        ) from None
    return state


def read_stored_probabilities(
    store: ArtifactStore, study: str, number: int, artifact_ids: dict[str, str] | None, key: str
) -> np.ndarray | None:
    """A trial's stored (N, 10) `key` probabilities ("val_probs" or "test_probs"), or None when missing.

    UserError naming the study, trial and artifact when the file is not an array of probabilities
    (truncated, garbage, NaN): such a file is a fault to look at, not something to paper over.
    """
    try:
        probs = stored_probabilities(store, artifact_ids, key)
    except (ValueError, OSError, EOFError, SyntaxError, MemoryError) as err:  # np.load on a damaged .npy
        reason = " ".join(str(err).split())[:150]
        raise UserError(
            f"{_artifact_label(study, number, key, artifact_ids[key])} is not a readable .npy file ({type(err).__name__}: {reason})"
        ) from None
    if probs is not None and (probs.dtype.kind not in "fiu" or not np.isfinite(probs).all() or (probs < 0).any()):
        raise UserError(
            f"{_artifact_label(study, number, key, artifact_ids[key])} holds {probs.dtype} values that are not finite probabilities >= 0"
        )
    return probs


def _artifact_label(study: str, number: int, key: str, artifact_id: str) -> str:
    return f"study {study!r}, trial {number}: its {key} artifact {artifact_id}"


def _stored_probabilities(store: ArtifactStore, candidate: CandidateTrial) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored (validation, test) probabilities, or None when either is missing."""
    val, test = (
        read_stored_probabilities(store, candidate.study, candidate.number, candidate.artifacts, key)
        for key in ("val_probs", "test_probs")
    )
    return None if val is None or test is None else (val, test)


def load_matching_data(
    data_dir: str | None,
    limit: int | None,
    identity: dict[str, Any],
    device: torch.device,
) -> tuple[PreparedData, int | None]:
    """The studies' data and split, checked against the recorded hash; and the --limit that matched.

    The limit a study ran with is not recorded, but its row count is; without --limit both the
    whole data and that many rows are tried.
    """
    digits = load_digits(data_dir)
    recorded_rows = int(identity.get("train_rows", 0)) + int(identity.get("val_rows", 0))
    tries = [limit] if limit is not None else [None, recorded_rows or None]
    matching = [rows for rows in tries if digits.limited(rows).data_hash == identity["data_hash"]]
    if not matching:
        source = identity.get("data_source", "unknown")
        if limit is not None and recorded_rows and digits.limited(recorded_rows).data_hash == identity["data_hash"]:
            hint = f"pass --limit {recorded_rows}, or leave --limit out"
        elif data_dir is None and Path(str(source)).is_dir():
            hint = f"pass --data {source}"
        elif data_dir is not None and source == EMBEDDED_SOURCE:
            hint = "leave --data out: they used the embedded sample"
        else:
            hint = "pass the --data and --limit the studies were run with"
        raise UserError(
            f"the studies were built on other data ({source}, {recorded_rows} training rows, hash {str(identity['data_hash'])[:12]}) "
            f"than --data {data_dir or '(embedded sample)'} --limit {limit or '(all rows)'} gives (hash {digits.limited(limit).data_hash[:12]}); {hint}"
        )
    prepared = prepare_digits(
        digits,
        limit=matching[0],
        val_fraction=float(identity["val_fraction"]),
        split_seed=int(identity["split_seed"]),
        device=device,
    )
    if prepared.split.fingerprint() != identity["split"]:
        raise UserError(
            f"the validation split rebuilt from the study attrs ({prepared.split.fingerprint()}) differs from the recorded one ({identity['split']})"
        )
    return prepared, matching[0]
