"""`digit-search train`: train one config (a reference or a stored trial) outside any study."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

import optuna

from search.config import DEFAULT_EPOCHS, TrainSpec
from search.errors import UserError
from search.study.progress import plural
from search.study.storage import check_database_exists, open_storage, redacted
from search.study.trial_attrs import EPOCHS_ATTR
from search.train.allocator import keep_freed_memory
from search.train.device import set_threads
from search.train.models import build_model, count_parameters
from search.train.prepared import prepare_data
from search.train.trainer import EpochReport, train
from spaces import Candidate, Space, load_space


def resolve_candidate(spec: TrainSpec, space: Space) -> tuple[Candidate, int, int, str]:
    """The candidate to train, its seed, its epochs, and a label saying where it came from.

    A stored trial keeps its own seed and epochs (--epochs, when given, overrides them).
    """
    if spec.reference is not None:
        references = space.references()
        if spec.reference not in references:
            known = ", ".join(sorted(references)) or "none"
            raise UserError(f"--reference {spec.reference!r} is not a reference of space {space.name!r}; known: {known}")
        return references[spec.reference][0], spec.seed, spec.epochs or DEFAULT_EPOCHS, f"reference {spec.reference}"
    study_name, _, number_text = spec.trial.rpartition(":")
    if not study_name or not number_text.isdigit():
        raise UserError(f"--trial {spec.trial!r} must look like STUDY:NUMBER, e.g. cnn:12")
    check_database_exists(spec.storage)
    storage = open_storage(spec.storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise UserError(f"--trial {spec.trial!r}: no study {study_name!r} in {redacted(spec.storage)}") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    trial = trials.get(int(number_text))
    if trial is None:
        raise UserError(f"--trial {spec.trial!r}: study {study_name!r} has no trial {number_text} (it has {len(trials)})")
    try:
        candidate = space.candidate_from_params(trial.params)
    except (ValueError, KeyError) as err:
        raise UserError(f"--trial {spec.trial!r} does not fit space {space.name!r} ({err}); pass the --space the study used") from None
    epochs = spec.epochs or int(trial.user_attrs.get(EPOCHS_ATTR, DEFAULT_EPOCHS))
    return candidate, int(trial.user_attrs.get("seed", spec.seed)), epochs, f"trial {spec.trial}"


def train_one(spec: TrainSpec, out: TextIO | None = None) -> dict:
    """Train the chosen config; prints epochs as they finish (or one JSON line with --json)."""
    out = out or sys.stdout
    started = time.perf_counter()
    space = load_space(spec.space)
    candidate, seed, epochs, label = resolve_candidate(spec, space)
    set_threads(spec.threads)
    keep_freed_memory()
    prepared = prepare_data(spec.data_dir, limit=spec.limit, val_fraction=spec.val_fraction, split_seed=spec.split_seed, device=spec.device)
    device = prepared.tensors.train_images.device
    model = build_model(space, candidate, seed).to(device)

    def on_epoch(report: EpochReport) -> None:
        if not spec.as_json:
            out.write(
                f"epoch {report.epoch}/{epochs}: train loss {report.train_loss:.4f} val loss {report.val_loss:.4f} "
                f"val accuracy {report.val_accuracy:.2%} ({report.seconds:.1f}s, {report.images_per_second:.0f} images/s)\n"
            )
            out.flush()

    result = train(model, prepared.tensors, candidate.train, epochs=epochs, seed=seed, on_epoch=on_epoch)
    summary = {
        "space": space.name,
        "family": candidate.family,
        "source": label,
        "epochs": epochs,
        "seed": seed,
        "params": count_parameters(model),
        "val_accuracy": result.val_accuracy,
        "val_loss": result.val_loss,
        "images_per_second": result.images_per_second,
        "seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "device": result.device,
        "data": prepared.digits.source,
        "history": [{"epoch": r.epoch, "val_accuracy": r.val_accuracy, "seconds": r.seconds} for r in result.history],
    }
    if spec.as_json:
        out.write(json.dumps(summary) + "\n")
    else:
        out.write(
            f"{label} ({candidate.family}, {summary['params']:,} params): val accuracy {result.val_accuracy:.2%} "
            f"after {plural(epochs, 'epoch')} in {result.train_seconds:.1f}s ({result.images_per_second:.0f} images/s on {result.device})\n"
        )
    return summary
