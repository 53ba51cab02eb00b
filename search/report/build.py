"""`digit-search report`: read the studies once, collect the report's data, write the page and the trials CSV."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.trial import FrozenTrial

from search.config import LeaderboardSpec, ReportSpec
from search.data.digits import EMBEDDED_SOURCE
from search.ensemble.candidates import load_matching_data, read_stored_probabilities
from search.ensemble.manifest import Manifest, ManifestError, newest_ensemble, read_manifest
from search.ensemble.saved import load_ensemble
from search.ensemble.selection import calibrated_blend
from search.errors import UserError
from search.io import write_text
from search.report.data import (
    EnsembleData,
    compute_seconds,
    ensemble_data,
    plain_float,
    study_data,
    trial_points,
    trials_table,
)
from search.report.page import Report, render_page
from search.study.artifacts import ARTIFACT_ATTR, artifact_location, open_artifact_store
from search.study.storage import check_database_exists, check_study_names, open_storage, parse_storage_url, redacted


@dataclass(frozen=True)
class ReportFiles:
    page: Path
    table: Path
    seconds: float


@dataclass(frozen=True)
class LoadedStudy:
    name: str
    attrs: dict[str, Any]
    direction: optuna.study.StudyDirection
    trials: list[FrozenTrial]


def run_report(spec: ReportSpec, out: TextIO | None = None) -> ReportFiles:
    """Write `report-<time>.html` and `trials-<time>.csv` into spec.out; returns their paths."""
    out = out or sys.stdout
    started = time.perf_counter()
    out_dir = check_out_dir(spec.out)
    studies = load_studies(spec)
    trials_by_study = {s.name: s.trials for s in studies}

    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    page_path, table_path = out_dir / f"report-{stamp}.html", out_dir / f"trials-{stamp}.csv"
    ensemble, ensemble_note = find_ensemble(spec, studies)
    report = Report(
        generated=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        storage=redacted(parse_storage_url(spec.storage)),
        studies=[study_data(s.name, s.attrs, s.trials, s.direction) for s in studies],
        points=trial_points(trials_by_study),
        compute={s.name: compute_seconds(s.trials) for s in studies},
        ensemble=ensemble,
        ensemble_note=ensemble_note,
        table_file=table_path.name,
    )
    write_files(out_dir, {table_path: csv_text(trials_table(trials_by_study)), page_path: render_page(report)})
    seconds = time.perf_counter() - started
    total = sum(len(s.trials) for s in studies)
    out.write(
        f"wrote {page_path} ({len(studies)} studies, {total} trials, {page_path.stat().st_size / 1e6:.1f} MB) "
        f"and {table_path} in {seconds:.1f}s\n"
    )
    return ReportFiles(page_path, table_path, seconds)


def check_out_dir(text: str, option: str = "--out") -> Path:
    """The output folder, checked before any work: UserError when it is a file or cannot be created or written.

    Nothing is created here: the folder is made when the files are written, so a failed report leaves none.
    """
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {text!r} is a file; give a directory, e.g. reports/")
    existing = next(p for p in [folder.absolute(), *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"{option} {text!r}: cannot create it ({existing} is not a directory)")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder.absolute():
            raise UserError(f"{option} {text!r} is not writable; choose another directory")
        raise UserError(f"{option} {text!r}: cannot create it (no permission to write in {existing})")
    return folder


def load_studies(spec: ReportSpec | LeaderboardSpec) -> list[LoadedStudy]:
    """The chosen studies (all when none named), each with its trials read once; UserError for a missing database or study."""
    check_database_exists(spec.storage)
    storage = open_storage(spec.storage)
    loaded = []
    for name in check_study_names(storage, spec.study_names, spec.storage):
        study_id = storage.get_study_id_from_name(name)
        loaded.append(
            LoadedStudy(
                name=name,
                attrs=storage.get_study_user_attrs(study_id),
                direction=storage.get_study_directions(study_id)[0],
                trials=storage.get_all_trials(study_id, deepcopy=False),
            )
        )
    return loaded


# ---- the ensemble section ----------------------------------------------------------------------


def find_ensemble(spec: ReportSpec, studies: list[LoadedStudy]) -> tuple[EnsembleData | None, str]:
    """The ensemble section's data, or None and a sentence saying why there is none."""
    if spec.ensemble:
        directory = Path(spec.ensemble)
        try:
            manifest = read_manifest(directory)
        except ManifestError as err:
            raise UserError(f"--ensemble {err}") from None
        problem = ensemble_mismatch(manifest, studies)
        if problem:
            raise UserError(f"--ensemble {spec.ensemble!r}: {problem}")
    else:
        found = newest_matching_ensemble(Path(spec.ensembles), studies)
        if found is None:
            names = ",".join(s.name for s in studies)
            return (
                None,
                f"no saved ensemble of these studies under {spec.ensembles}; run digit-search ensemble --studies {names}",
            )
        directory, manifest = found
    try:
        return score_ensemble(spec, directory, manifest, studies), ""
    except UserError as err:
        return None, f"the ensemble in {directory} could not be scored: {err}"


def ensemble_mismatch(manifest: Manifest, studies: list[LoadedStudy]) -> str | None:
    """Why a saved ensemble does not belong to these studies, or None when it does."""
    by_name = {s.name: s for s in studies}
    outside = [name for name in manifest.studies if name not in by_name]
    if outside:
        return f"it was built from study {outside[0]!r}, which is not among the reported studies"
    for name in manifest.studies:
        attrs = by_name[name].attrs
        if attrs.get("data_hash") != manifest.data_hash or attrs.get("split") != manifest.split:
            return f"it was built on other data or another split than study {name!r}"
    for member in manifest.members:
        numbers = {t.number for t in by_name[member.study].trials} if member.study in by_name else set()
        if member.trial not in numbers:
            return f"its member {member.label} is not in the study database"
    return None


def newest_matching_ensemble(root: Path, studies: list[LoadedStudy]) -> tuple[Path, Manifest] | None:
    """The saved ensemble under `root` with the newest `created` time that belongs to these studies."""
    return newest_ensemble(root, lambda manifest: ensemble_mismatch(manifest, studies) is None)


def score_ensemble(spec: ReportSpec, directory: Path, manifest: Manifest, studies: list[LoadedStudy]) -> EnsembleData:
    """Rebuild the validation split and the ensemble's probabilities on it, then score them."""
    attrs = next(s.attrs for s in studies if s.name == manifest.studies[0])
    source = str(attrs.get("data_source", ""))
    data_dir = spec.data_dir or (source if source != EMBEDDED_SOURCE and Path(source).is_dir() else None)
    prepared, _ = load_matching_data(data_dir, None, attrs, torch.device("cpu"))
    val_index = prepared.split.val_index
    labels = prepared.digits.train_labels[val_index]
    images = prepared.digits.train_images[val_index]
    probs = stored_ensemble_probabilities(spec, manifest, studies) if not manifest.tta else None
    if probs is None:
        # Test-time augmentation or missing probabilities: predict with the saved models themselves.
        probs = load_ensemble(directory, torch.device("cpu")).predict_proba(prepared.tensors.val_images)
    if probs.shape != (len(labels), 10):
        raise UserError(
            f"its probabilities have shape {probs.shape}, the validation split {len(labels)} digits; pass the --artifacts DIR the studies were run with"
        )
    return ensemble_data(manifest.to_json(), str(directory), probs, labels, images, spec.gallery)


def stored_ensemble_probabilities(
    spec: ReportSpec, manifest: Manifest, studies: list[LoadedStudy]
) -> np.ndarray | None:
    """(N, 10) the members' stored validation probabilities blended as the ensemble predicts; None if any is missing.

    UserError naming the trial when a stored file is damaged.
    """
    trials = {(s.name, t.number): t for s in studies for t in s.trials}
    try:
        store = open_artifact_store(artifact_location(spec.artifacts, spec.storage), must_exist=True)
    except UserError:
        return None
    arrays = []
    for member in manifest.members:
        artifact_ids = trials[(member.study, member.trial)].user_attrs.get(ARTIFACT_ATTR)
        probs = read_stored_probabilities(store, member.study, member.trial, artifact_ids, "val_probs")
        if probs is None:
            return None
        arrays.append(probs)
    if len({a.shape for a in arrays}) != 1:
        return None
    return calibrated_blend(np.stack(arrays), manifest.weights, manifest.temperatures)  # (M, N, 10) -> (N, 10)


# ---- writing -----------------------------------------------------------------------------------


def csv_text(table: pd.DataFrame) -> str:
    """The trials table as CSV: empty cells for missing values, floats without float32 noise."""
    return table.to_csv(index=False, lineterminator="\n", float_format=plain_float)


def write_files(folder: Path, texts: dict[Path, str]) -> None:
    """Write each file into `folder` atomically, creating the folder; a failure removes what this call wrote and created."""
    folder = folder.absolute()
    created = [p for p in [folder, *folder.parents] if not p.exists()]  # deepest first
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, text in texts.items():
            written.append(write_text(path, text))
    except BaseException as err:
        for path in written:
            path.unlink(missing_ok=True)
        for path in created:
            try:
                path.rmdir()  # only ever empty: a folder someone else filled meanwhile stays
            except OSError:
                break
        if isinstance(err, OSError):
            raise UserError(f"--out {folder}: cannot write the report ({err.strerror or err})") from None
        raise
