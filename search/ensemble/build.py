"""`digit-search ensemble`: the top trials of several studies -> weights -> Kaggle submission + saved ensemble."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from optuna.artifacts._protocol import ArtifactStore

from search.study.artifacts import artifact_location, open_artifact_store
from search.ensemble.candidates import (
    Member,
    check_same_data,
    load_matching_data,
    load_member_probabilities,
    load_member_state,
    load_studies,
    resolve_space,
    top_members,
)
from search.train.device import resolve_device
from search.ensemble.selection import (
    Selection,
    accuracy,
    apply_temperatures,
    average,
    best_single,
    blend,
    calibrate,
    greedy,
    log_loss,
)
from search.errors import UserError
from search.train.prepared import PreparedData
from search.ensemble.saved import MemberToSave, check_save_dir, new_ensemble_dir, save_ensemble
from search.config import DEFAULT_ENSEMBLES, EnsembleSpec
from search.study.storage import check_database_exists, open_storage, parse_storage_url, redacted
from search.ensemble.submission import check_out_path, utc_now, versions, write_submission
from spaces import Space


@dataclass(frozen=True)
class MemberScore:
    accuracy: float
    log_loss: float

    @property
    def key(self) -> tuple[float, float]:
        """Sorts best first: higher accuracy, then lower log-loss."""
        return (-self.accuracy, self.log_loss)


@dataclass(frozen=True)
class EnsembleResult:
    members: list[Member]
    scores: list[MemberScore]  # per member, on the validation data (after calibration)
    temperatures: np.ndarray  # (M,) per member; all 1 without calibration
    selections: dict[str, Selection]  # greedy, average, best
    method: str  # the submitted one
    best_per_study: dict[str, int]  # study -> member index
    submission: Path
    lineage: Path
    saved: Path

    @property
    def chosen(self) -> Selection:
        return self.selections[self.method]


def run_ensemble(spec: EnsembleSpec, out: TextIO | None = None) -> EnsembleResult:
    """Select and weight members, write the submission and its lineage, save the ensemble."""
    out = out or sys.stdout  # looked up per call: tests and callers may swap sys.stdout
    out_path = check_out_path(spec.out)
    if spec.save:
        check_save_dir(spec.save)
    pool = gather_candidates(spec, out)
    members = pool.members
    labels = pool.prepared.digits.train_labels[pool.prepared.split.val_index]
    val = np.stack([m.val_probs for m in members])  # (M, V, 10)
    test = np.stack([m.test_probs for m in members])  # (M, T, 10)
    val, test, temperatures = calibrate_members(spec.calibration, val, test, labels)
    selections = {"greedy": greedy(val, labels), "average": average(val, labels), "best": best_single(val, labels)}
    chosen = selections[spec.method]
    scores = [MemberScore(accuracy(p, labels), log_loss(p, labels)) for p in val]
    best_per_study = best_member_per_study(members, scores)

    saved = _save(spec, pool, scores, temperatures, chosen)
    submitted_labels = blend(test, chosen.weights).argmax(axis=1)
    lineage = _lineage(spec, pool, scores, temperatures, selections, best_per_study, saved)
    csv_path, json_path = write_submission(out_path, submitted_labels, lineage)

    shown_temperatures = temperatures if spec.calibration == "temperature" else None
    print_table(members, scores, selections, spec.method, best_per_study, out, shown_temperatures)
    out.write(f"wrote {csv_path} ({len(submitted_labels)} rows) and {json_path.name}; ensemble saved in {saved}\n")
    return EnsembleResult(members, scores, temperatures, selections, spec.method, best_per_study, csv_path, json_path, saved)


def calibrate_members(
    calibration: str, val: np.ndarray, test: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation and test probabilities at each member's temperature fitted on validation, and the temperatures.

    With no calibration the probabilities are returned untouched, so the selection is exactly the uncalibrated one.
    """
    if calibration == "none":
        return val, test, np.ones(len(val))
    temperatures = calibrate(val, labels)
    return apply_temperatures(val, temperatures), apply_temperatures(test, temperatures), temperatures


@dataclass(frozen=True)
class CandidatePool:
    """The candidates with their probabilities, and what they were built on."""

    members: list[Member]
    spaces: dict[str, tuple[Space, str | None]]  # study -> (space, user family file or None)
    identity: dict[str, Any]  # the studies' shared data attrs
    prepared: PreparedData
    limit: int | None  # the --limit that reproduces the studies' data
    store: ArtifactStore


def gather_candidates(spec: EnsembleSpec, out: TextIO) -> CandidatePool:
    """Top trials of each study, checked to share data and split, with validation and test probabilities."""
    check_database_exists(spec.storage)
    storage = open_storage(spec.storage)
    studies = load_studies(storage, spec.study_names, spec.storage)
    identity = check_same_data(studies)
    spaces = {s.study_name: resolve_space(str(s.user_attrs.get("space", "")), s.study_name, spec.space_files) for s in studies}
    members = [member for study in studies for member in top_members(study, spec.top)]
    store = open_artifact_store(artifact_location(spec.artifacts, spec.storage), must_exist=True)
    device = resolve_device(spec.device, spec.threads)
    prepared, limit = load_matching_data(spec.data_dir, spec.limit, identity, device)
    if len(prepared.digits.test_images) == 0:
        raise UserError(f"the data ({prepared.digits.source}) has no test images; there is nothing to submit")

    out.write(
        f"{len(members)} candidates from {len(studies)} studies (top {spec.top} each) in {redacted(spec.storage)}; "
        f"data {prepared.digits.source}, {len(prepared.split.val_index)} validation / {len(prepared.digits.test_images)} test digits"
        f"{'; test-time augmentation: identity + 4 one-pixel shifts' if spec.tta else ''}\n"
    )
    for member in members:
        started = time.perf_counter()
        recomputed = load_member_probabilities(member, store, prepared, spaces[member.study][0], tta=spec.tta, device=device)
        if spec.tta:
            out.write(f"  {member.label}: predicted with test-time augmentation ({time.perf_counter() - started:.1f}s)\n")
        elif recomputed:
            out.write(f"  {member.label}: stored probabilities missing, recomputed from its weights\n")
        out.flush()
    return CandidatePool(members, spaces, identity, prepared, limit, store)


def best_member_per_study(members: list[Member], scores: list[MemberScore]) -> dict[str, int]:
    """Study -> index of its member with the best validation accuracy (then log-loss)."""
    best: dict[str, int] = {}
    for index, member in enumerate(members):
        current = best.get(member.study)
        if current is None or scores[index].key < scores[current].key:
            best[member.study] = index
    return best


def _save(spec: EnsembleSpec, pool: CandidatePool, scores: list[MemberScore], temperatures: np.ndarray, chosen: Selection) -> Path:
    members, identity = pool.members, pool.identity
    to_save = [
        MemberToSave(
            study=members[i].study,
            trial=members[i].number,
            family=members[i].family,
            space=members[i].space,
            space_file=pool.spaces[members[i].study][1],
            params=members[i].params,
            weight=float(chosen.weights[i]),
            state=load_member_state(members[i], pool.store),
            val_accuracy=scores[i].accuracy,
            temperature=float(temperatures[i]),
        )
        for i in chosen.members
    ]
    directory = Path(spec.save) if spec.save else new_ensemble_dir(DEFAULT_ENSEMBLES, spec.method)
    manifest = {
        "method": spec.method,
        "calibration": spec.calibration,
        "tta": spec.tta,
        "studies": spec.study_names,
        "data_hash": identity["data_hash"],
        "split": identity["split"],
        "val_accuracy": chosen.accuracy,
        "val_log_loss": chosen.log_loss,
    }
    return save_ensemble(directory, to_save, manifest)


def _lineage(
    spec: EnsembleSpec,
    pool: CandidatePool,
    scores: list[MemberScore],
    temperatures: np.ndarray,
    selections: dict[str, Selection],
    best_per_study: dict[str, int],
    saved: Path,
) -> dict[str, Any]:
    members, identity = pool.members, pool.identity
    chosen = selections[spec.method]
    return {
        "created": utc_now(),
        "method": spec.method,
        "calibration": spec.calibration,
        "tta": spec.tta,
        "top": spec.top,
        "studies": spec.study_names,
        "storage": redacted(parse_storage_url(spec.storage)),
        "members": [
            {
                "study": members[i].study,
                "trial": members[i].number,
                "family": members[i].family,
                "weight": float(chosen.weights[i]),
                "temperature": float(temperatures[i]),
                "val_accuracy": scores[i].accuracy,
                "val_log_loss": scores[i].log_loss,
            }
            for i in chosen.members
        ],
        "validation": {
            "digits": int(identity.get("val_rows", 0)),
            "submitted": {"accuracy": chosen.accuracy, "log_loss": chosen.log_loss},
            **{name: {"accuracy": s.accuracy, "log_loss": s.log_loss} for name, s in selections.items()},
            "best_per_study": {
                study: {"trial": members[i].number, "accuracy": scores[i].accuracy, "log_loss": scores[i].log_loss}
                for study, i in best_per_study.items()
            },
        },
        "data": {
            "hash": identity["data_hash"],
            "source": identity.get("data_source"),
            "limit": pool.limit,
            "split": identity["split"],
            "val_fraction": identity.get("val_fraction"),
            "split_seed": identity.get("split_seed"),
        },
        "ensemble_dir": str(saved),
        "versions": versions(),
    }


def print_table(
    members: list[Member],
    scores: list[MemberScore],
    selections: dict[str, Selection],
    method: str,
    best_per_study: dict[str, int],
    out: TextIO,
    temperatures: np.ndarray | None = None,
) -> None:
    """Best single trial per study, uniform average, greedy ensemble; then the submitted members.

    With temperatures (calibrated members), the members' list shows each one's.
    """
    chosen = selections[method]
    submitted_single = int(chosen.members[0]) if method == "best" else None
    rows = [
        (f"best of {study} (trial {members[i].number}, {members[i].family})", scores[i].accuracy, scores[i].log_loss, i == submitted_single)
        for study, i in best_per_study.items()
    ]
    rows.append((f"uniform average of {len(members)}", selections["average"].accuracy, selections["average"].log_loss, method == "average"))
    greedy_size = len(selections["greedy"].members)
    rows.append((f"greedy ensemble of {greedy_size}", selections["greedy"].accuracy, selections["greedy"].log_loss, method == "greedy"))
    width = max(len(row[0]) for row in rows)
    out.write(f"\n{'':{width}}  val accuracy  val log-loss\n")
    for label, acc, loss, submitted in rows:
        out.write(f"{label:{width}}  {acc:>12.2%}  {loss:>12.4f}{'  <- submitted' if submitted else ''}\n")

    width = max(len(members[i].label) for i in chosen.members) + 2
    temperature_header = "  temperature" if temperatures is not None else ""
    out.write(f"\n{method} members:\n{'':{width}}  weight{temperature_header}  family  val accuracy  val log-loss\n")
    for i in chosen.members:
        member, score = members[i], scores[i]
        temperature = f"  {temperatures[i]:>11.3f}" if temperatures is not None else ""
        out.write(
            f"  {member.label:{width - 2}}  {chosen.weights[i]:6.3f}{temperature}  {member.family:6}  {score.accuracy:>12.2%}  {score.log_loss:>12.4f}\n"
        )
    out.write("\n")
