"""Build an ensemble from the top trials of several studies; `digit-search ensemble` builds, saves and submits one."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from search.config import DEFAULT_ENSEMBLES, METHODS, EnsembleSpec
from search.ensemble.candidates import (
    CandidateTrial,
    check_same_data,
    load_candidate_probabilities,
    load_candidate_state,
    load_matching_data,
    load_studies,
    resolve_space,
    top_candidates,
)
from search.ensemble.manifest import Manifest, ManifestMember
from search.ensemble.outputs import check_outputs, store_paths
from search.ensemble.saved import new_ensemble_dir, save_ensemble, space_file_name, weights_file_name
from search.ensemble.selection import Selection, accuracy, apply_temperatures, blend, calibrate, log_loss, select
from search.ensemble.submission import utc_now, versions, write_submission
from search.errors import UserError
from search.io import remove_stale_temporaries
from search.study.artifacts import artifact_location, open_artifact_store
from search.study.optuna_internals import ArtifactStore
from search.study.storage import check_database_exists, open_storage, parse_storage_url, redacted
from search.train.device import resolve_device
from search.train.prepared import PreparedData
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
class CandidatePool:
    """The candidates with their probabilities, and what they were built on."""

    candidates: list[CandidateTrial]
    spaces: dict[str, tuple[Space, str | None]]  # study -> (space, user family file or None)
    identity: dict[str, Any]  # the studies' shared data attrs
    prepared: PreparedData
    limit: int | None  # the --limit that reproduces the studies' data
    store: ArtifactStore


@dataclass
class BuiltEnsemble:
    """Weights over the top trials of several studies, chosen on their validation digits.

    It holds every figure `digit-search ensemble` prints, writes the Kaggle submission and saves
    itself; `saved` is the folder once saved, and the submission's lineage then records it.
    """

    spec: EnsembleSpec
    pool: CandidatePool
    scores: list[MemberScore]  # per candidate, on the validation digits (after calibration)
    temperatures: np.ndarray  # (M,) per candidate; all 1 without calibration
    selections: dict[str, Selection]  # one per method of METHODS
    best_per_study: dict[str, int]  # study -> candidate index
    test_probs: np.ndarray  # (M, T, 10) the candidates' test probabilities, at their temperatures
    saved: Path | None = None

    @property
    def candidates(self) -> list[CandidateTrial]:
        return self.pool.candidates

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def chosen(self) -> Selection:
        """The selection of the spec's method: the one submitted and saved."""
        return self.selections[self.method]

    @property
    def val_accuracy(self) -> float:
        return self.chosen.accuracy

    @property
    def val_log_loss(self) -> float:
        return self.chosen.log_loss

    @property
    def test_labels(self) -> np.ndarray:
        """(T,) the submitted digit of every test image."""
        return blend(self.test_probs, self.chosen.weights).argmax(axis=1)

    def save(
        self, directory: str | Path | None = None, states: Mapping[int, dict[str, torch.Tensor]] | None = None
    ) -> Path:
        """Save the chosen members into `directory` (default: the spec's `save`, else a new folder under studies/ensembles).

        `states` replaces the stored weights of some members, by candidate index (e.g. members
        retrained on every labelled digit); the others are saved as their trials stored them.
        """
        states = states or {}
        target = directory or self.spec.save
        if target is None:
            remove_stale_temporaries(DEFAULT_ENSEMBLES)  # what killed saves left in our own folder
            target = new_ensemble_dir(DEFAULT_ENSEMBLES, self.method)
        chosen = [int(index) for index in self.chosen.members]
        member_states = [
            states[i] if i in states else load_candidate_state(self.candidates[i], self.pool.store) for i in chosen
        ]
        sources = [self.pool.spaces[self.candidates[i].study][1] for i in chosen]
        space_files = {space_file_name(source): source for source in sources if source is not None}
        self.saved = save_ensemble(target, self.manifest(), member_states, space_files, protected_paths(self.spec))
        return self.saved

    def manifest(self) -> Manifest:
        """The manifest of this ensemble as saved now: the chosen members, heaviest first."""
        members = []
        for position, index in enumerate(self.chosen.members):
            candidate = self.candidates[index]
            source = self.pool.spaces[candidate.study][1]
            members.append(
                ManifestMember(
                    study=candidate.study,
                    trial=candidate.number,
                    family=candidate.family,
                    space=candidate.space,
                    params=candidate.params,
                    weight=float(self.chosen.weights[index]),
                    weights_file=weights_file_name(position),
                    temperature=float(self.temperatures[index]),
                    space_file=space_file_name(source) if source is not None else None,
                    val_accuracy=self.scores[index].accuracy,
                )
            )
        return Manifest(
            created=datetime.now(timezone.utc),
            method=self.method,
            tta=self.spec.tta,
            studies=tuple(self.spec.study_names),
            data_hash=self.pool.identity["data_hash"],
            split=self.pool.identity["split"],
            members=tuple(members),
            calibration=self.spec.calibration,
            val_accuracy=self.val_accuracy,
            val_log_loss=self.val_log_loss,
        )

    def write_submission(self, path: str | Path | None = None) -> tuple[Path, Path]:
        """Write the Kaggle submission (default: the spec's `out`), then its lineage beside it; returns (csv, json)."""
        return write_submission(path or self.spec.out, self.test_labels, self.lineage())

    def lineage(self) -> dict[str, Any]:
        """What the submission was made from: options, members, validation figures, data, versions."""
        candidates, identity, chosen = self.candidates, self.pool.identity, self.chosen
        return {
            "created": utc_now(),
            "method": self.method,
            "calibration": self.spec.calibration,
            "tta": self.spec.tta,
            "top": self.spec.top,
            "studies": self.spec.study_names,
            "storage": redacted(parse_storage_url(self.spec.storage)),
            "members": [
                {
                    "study": candidates[i].study,
                    "trial": candidates[i].number,
                    "family": candidates[i].family,
                    "weight": float(chosen.weights[i]),
                    "temperature": float(self.temperatures[i]),
                    "val_accuracy": self.scores[i].accuracy,
                    "val_log_loss": self.scores[i].log_loss,
                }
                for i in chosen.members
            ],
            "validation": {
                "digits": int(identity.get("val_rows", 0)),
                "submitted": {"accuracy": chosen.accuracy, "log_loss": chosen.log_loss},
                **{name: {"accuracy": s.accuracy, "log_loss": s.log_loss} for name, s in self.selections.items()},
                "best_per_study": {
                    study: {
                        "trial": candidates[i].number,
                        "accuracy": self.scores[i].accuracy,
                        "log_loss": self.scores[i].log_loss,
                    }
                    for study, i in self.best_per_study.items()
                },
            },
            "data": {
                "hash": identity["data_hash"],
                "source": identity.get("data_source"),
                "limit": self.pool.limit,
                "split": identity["split"],
                "val_fraction": identity.get("val_fraction"),
                "split_seed": identity.get("split_seed"),
            },
            "ensemble_dir": str(self.saved) if self.saved is not None else None,
            "versions": versions(),
        }

    def table(self) -> str:
        """Best single trial per study, uniform average, greedy ensemble; then the submitted members.

        With calibrated members, the members' list shows each one's temperature.
        """
        candidates, scores, selections, method, chosen = (
            self.candidates,
            self.scores,
            self.selections,
            self.method,
            self.chosen,
        )
        submitted_single = int(chosen.members[0]) if method == "best" else None
        rows = [
            (
                f"best of {study} (trial {candidates[i].number}, {candidates[i].family})",
                scores[i].accuracy,
                scores[i].log_loss,
                i == submitted_single,
            )
            for study, i in self.best_per_study.items()
        ]
        rows.append(
            (
                f"uniform average of {len(candidates)}",
                selections["average"].accuracy,
                selections["average"].log_loss,
                method == "average",
            )
        )
        greedy_size = len(selections["greedy"].members)
        rows.append(
            (
                f"greedy ensemble of {greedy_size}",
                selections["greedy"].accuracy,
                selections["greedy"].log_loss,
                method == "greedy",
            )
        )
        width = max(len(row[0]) for row in rows)
        lines = ["", f"{'':{width}}  val accuracy  val log-loss"]
        lines += [
            f"{label:{width}}  {acc:>12.2%}  {loss:>12.4f}{'  <- submitted' if submitted else ''}"
            for label, acc, loss, submitted in rows
        ]

        calibrated = self.spec.calibration == "temperature"
        width = max(len(candidates[i].label) for i in chosen.members) + 2
        lines += [
            "",
            f"{method} members:",
            f"{'':{width}}  weight{'  temperature' if calibrated else ''}  family  val accuracy  val log-loss",
        ]
        for i in chosen.members:
            candidate, score = candidates[i], scores[i]
            temperature = f"  {self.temperatures[i]:>11.3f}" if calibrated else ""
            lines.append(
                f"  {candidate.label:{width - 2}}  {chosen.weights[i]:6.3f}{temperature}  {candidate.family:6}  {score.accuracy:>12.2%}  {score.log_loss:>12.4f}"
            )
        return "\n".join(lines) + "\n\n"


@dataclass(frozen=True)
class EnsembleResult:
    """What `digit-search ensemble` made: the ensemble, its submission and lineage, and the folder it was saved in."""

    ensemble: BuiltEnsemble
    submission: Path
    lineage: Path
    saved: Path


def run_ensemble(spec: EnsembleSpec, out: TextIO | None = None) -> EnsembleResult:
    """Build the ensemble, save it, write the submission and its lineage, print the table."""
    out = out or sys.stdout  # looked up per call: tests and callers may swap sys.stdout
    check_outputs(spec.storage, spec.artifacts, spec.data_dir, out=spec.out, save=spec.save)
    ensemble = build_ensemble(spec, out)
    saved = ensemble.save()
    csv_path, json_path = ensemble.write_submission()
    out.write(ensemble.table())
    out.write(f"wrote {csv_path} ({len(ensemble.test_labels)} rows) and {json_path.name}; ensemble saved in {saved}\n")
    return EnsembleResult(ensemble, csv_path, json_path, saved)


def build_ensemble(spec: EnsembleSpec, out: TextIO | None = None) -> BuiltEnsemble:
    """Load the candidates' probabilities, calibrate them, and run every selection method on the validation digits."""
    out = out or sys.stdout
    pool = gather_candidates(spec, out)
    labels = pool.prepared.digits.train_labels[pool.prepared.split.val_index]
    val = np.stack([c.val_probs for c in pool.candidates])  # (M, V, 10)
    test = np.stack([c.test_probs for c in pool.candidates])  # (M, T, 10)
    val, test, temperatures = calibrate_members(spec.calibration, val, test, labels)
    scores = [MemberScore(accuracy(p, labels), log_loss(p, labels)) for p in val]
    return BuiltEnsemble(
        spec=spec,
        pool=pool,
        scores=scores,
        temperatures=temperatures,
        selections={method: select(method, val, labels) for method in METHODS},
        best_per_study=best_member_per_study(pool.candidates, scores),
        test_probs=test,
    )


def protected_paths(spec: EnsembleSpec) -> list[Path]:
    """What a --save folder must never hold: the SQLite database file and a local artifact store."""
    return store_paths(spec.storage, spec.artifacts)


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


def gather_candidates(spec: EnsembleSpec, out: TextIO) -> CandidatePool:
    """Top trials of each study, checked to share data and split, with validation and test probabilities."""
    check_database_exists(spec.storage)
    storage = open_storage(spec.storage)
    studies = load_studies(storage, spec.study_names, spec.storage)
    identity = check_same_data(studies)
    spaces = {
        s.study_name: resolve_space(str(s.user_attrs.get("space", "")), s.study_name, spec.space_files) for s in studies
    }
    candidates = [candidate for study in studies for candidate in top_candidates(study, spec.top)]
    store = open_artifact_store(artifact_location(spec.artifacts, spec.storage), must_exist=True)
    device = resolve_device(spec.device, spec.threads)
    prepared, limit = load_matching_data(spec.data_dir, spec.limit, identity, device)
    if len(prepared.digits.test_images) == 0:
        raise UserError(f"the data ({prepared.digits.source}) has no test images; there is nothing to submit")

    out.write(
        f"{len(candidates)} candidates from {len(studies)} studies (top {spec.top} each) in {redacted(spec.storage)}; "
        f"data {prepared.digits.source}, {len(prepared.split.val_index)} validation / {len(prepared.digits.test_images)} test digits"
        f"{'; test-time augmentation: identity + 4 one-pixel shifts' if spec.tta else ''}\n"
    )
    for candidate in candidates:
        started = time.perf_counter()
        recomputed = load_candidate_probabilities(
            candidate, store, prepared, spaces[candidate.study][0], tta=spec.tta, device=device
        )
        if spec.tta:
            out.write(
                f"  {candidate.label}: predicted with test-time augmentation ({time.perf_counter() - started:.1f}s)\n"
            )
        elif recomputed:
            out.write(f"  {candidate.label}: stored probabilities missing, recomputed from its weights\n")
        out.flush()
    return CandidatePool(candidates, spaces, identity, prepared, limit, store)


def best_member_per_study(candidates: list[CandidateTrial], scores: list[MemberScore]) -> dict[str, int]:
    """Study -> index of its candidate with the best validation accuracy (then log-loss)."""
    best: dict[str, int] = {}
    for index, candidate in enumerate(candidates):
        current = best.get(candidate.study)
        if current is None or scores[index].key < scores[current].key:
            best[candidate.study] = index
    return best
