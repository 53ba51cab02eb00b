"""`digit-search train`: train one config (a reference or a stored trial) outside any study.

With --budget it trains as many epochs as fit (search.train.timed, as auto's final training does);
with --all-digits on the validation rows too; given a `submit` function (the API passes one for
--out) it hands over the test digits' labels and the run's lineage once trained.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import optuna

from search.config import DEFAULT_EPOCHS, Deadline, TrainSpec
from search.errors import UserError
from search.study.progress import plural
from search.study.storage import check_database_exists, open_storage, redacted
from search.study.trial_attrs import EPOCHS_ATTR
from search.train.allocator import keep_freed_memory
from search.train.device import set_threads
from search.train.models import build_model, count_parameters
from search.train.prepared import PreparedData, all_labelled, prepare_data
from search.train.timed import MAX_TIMED_EPOCHS, train_in_time
from search.train.trainer import EpochReport, TrainResult, train
from spaces import Candidate, Space, load_space

# (test labels, lineage) -> the submission and lineage files written
Submit = Callable[[np.ndarray, dict[str, Any]], tuple[Path, Path]]
NOT_HELD_OUT = "not held out: --all-digits trained on the validation rows too"


@dataclass(frozen=True)
class Chosen:
    """The config to train, with the params it comes from, its seed, its epochs and where it came from."""

    candidate: Candidate
    params: dict[str, Any]
    seed: int
    epochs: int
    label: str  # "reference bn-cnn" or "trial cnn:12"


def resolve_candidate(spec: TrainSpec, space: Space) -> Chosen:
    """The config to train. A stored trial keeps its own seed and epochs (--epochs, when given, overrides them)."""
    if spec.reference is not None:
        references = space.references()
        if spec.reference not in references:
            known = ", ".join(sorted(references)) or "none"
            raise UserError(
                f"--reference {spec.reference!r} is not a reference of space {space.name!r}; known: {known}"
            )
        candidate, params = references[spec.reference]
        return Chosen(candidate, params, spec.seed, spec.epochs or DEFAULT_EPOCHS, f"reference {spec.reference}")
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
        raise UserError(
            f"--trial {spec.trial!r}: study {study_name!r} has no trial {number_text} (it has {len(trials)})"
        )
    try:
        candidate = space.candidate_from_params(trial.params)
    except (ValueError, KeyError) as err:
        raise UserError(
            f"--trial {spec.trial!r} does not fit space {space.name!r} ({err}); pass the --space the study used"
        ) from None
    epochs = spec.epochs or int(trial.user_attrs.get(EPOCHS_ATTR, DEFAULT_EPOCHS))
    return Chosen(
        candidate, dict(trial.params), int(trial.user_attrs.get("seed", spec.seed)), epochs, f"trial {spec.trial}"
    )


def train_one(spec: TrainSpec, out: TextIO | None = None, submit: Submit | None = None) -> dict:
    """Train the chosen config; prints epochs as they finish (or one JSON line with --json).

    `submit`, when given, receives the test digits' labels and the lineage, and writes them.
    """
    out = out or sys.stdout
    started = time.monotonic()  # --budget bounds the whole command, data loading included
    space = load_space(spec.space)
    chosen = resolve_candidate(spec, space)
    set_threads(spec.threads)
    keep_freed_memory()
    prepared = prepare_data(
        spec.data_dir, limit=spec.limit, val_fraction=spec.val_fraction, split_seed=spec.split_seed, device=spec.device
    )
    if submit is not None and len(prepared.digits.test_images) == 0:
        raise UserError(f"--out {spec.out!r}: the data {prepared.digits.source} has no test digits to predict")
    data = all_labelled(prepared) if spec.all_digits else prepared.tensors

    def on_epoch(report: EpochReport, epochs: int) -> None:
        if not spec.as_json:
            out.write(
                f"epoch {report.epoch}/{epochs}: train loss {report.train_loss:.4f} val loss {report.val_loss:.4f} "
                f"val accuracy {report.val_accuracy:.2%} ({report.seconds:.1f}s, {report.images_per_second:.0f} images/s)\n"
            )
            out.flush()

    def on_restart(message: str) -> None:
        if not spec.as_json:
            out.write(f"{message}\n")
            out.flush()

    budget = spec.budget_seconds
    restarted = False
    if budget is None:
        epochs = chosen.epochs
        model = build_model(space, chosen.candidate, chosen.seed).to(data.device)
        result = train(
            model,
            data,
            chosen.candidate.train,
            epochs=epochs,
            seed=chosen.seed,
            on_epoch=lambda report: on_epoch(report, epochs),
        )
    else:
        left = budget - (time.monotonic() - started)
        if left <= 0:
            raise UserError(
                f"--budget {spec.budget} was spent before training began (loading the data took {time.monotonic() - started:.0f}s)"
            )
        timed = train_in_time(
            space,
            chosen.candidate,
            chosen.seed,
            data,
            MAX_TIMED_EPOCHS,
            Deadline.after(left),
            most=MAX_TIMED_EPOCHS,
            on_epoch=on_epoch,
            on_restart=on_restart,
        )
        if timed.result is None:
            raise UserError(f"--budget {spec.budget}: {timed.problem}; give a longer --budget or train with --epochs N")
        result, epochs, restarted = timed.result, timed.epochs, timed.restarted
    summary = {
        "space": space.name,
        "family": chosen.candidate.family,
        "source": chosen.label,
        "epochs": epochs,
        "seed": chosen.seed,
        "params": count_parameters(result.model),
        "val_accuracy": result.val_accuracy,
        "val_loss": result.val_loss,
        "val_held_out": not spec.all_digits,
        "all_digits": spec.all_digits,
        "trained_digits": len(data.train_labels),
        "budget_seconds": budget,
        "restarted": restarted,
        "images_per_second": result.images_per_second,
        "seconds": result.train_seconds,
        "wall_seconds": time.monotonic() - started,
        "device": result.device,
        "data": prepared.digits.source,
        "history": [{"epoch": r.epoch, "val_accuracy": r.val_accuracy, "seconds": r.seconds} for r in result.history],
    }
    if submit is not None:
        csv_path, json_path = submit(
            result.test_probs.argmax(axis=1), lineage(spec, space, chosen, prepared, result, summary)
        )
        summary.update(submission=str(csv_path), lineage=str(json_path))
        summary["wall_seconds"] = time.monotonic() - started
    if spec.as_json:
        out.write(json.dumps(summary) + "\n")
    else:
        held = "" if summary["val_held_out"] else f" ({NOT_HELD_OUT})"
        fitted = f", as many as fit --budget {spec.budget}" if budget is not None else ""
        out.write(
            f"{chosen.label} ({chosen.candidate.family}, {summary['params']:,} params): val accuracy {result.val_accuracy:.2%}{held} "
            f"after {plural(epochs, 'epoch')}{fitted} on {summary['trained_digits']:,} digits in {result.train_seconds:.1f}s "
            f"({result.images_per_second:.0f} images/s on {result.device})\n"
        )
        if submit is not None:
            out.write(f"wrote {summary['submission']} and {Path(summary['lineage']).name}\n")
    return summary


def lineage(
    spec: TrainSpec, space: Space, chosen: Chosen, prepared: PreparedData, result: TrainResult, summary: dict
) -> dict[str, Any]:
    """What a `train --out` submission was made from: the config, the training, the data, the validation figures."""
    validation: dict[str, Any] = {
        "digits": len(prepared.split.val_index),
        "accuracy": result.val_accuracy,
        "log_loss": result.val_loss,
        "held_out": not spec.all_digits,
    }
    if spec.all_digits:
        validation["note"] = NOT_HELD_OUT
    return {
        "command": "train",
        "config": {
            "space": space.name,
            "family": chosen.candidate.family,
            "reference": spec.reference,
            "trial": spec.trial,
            "params": chosen.params,
        },
        "training": {
            "seed": chosen.seed,
            "epochs": summary["epochs"],
            "budget_seconds": summary["budget_seconds"],
            "restarted": summary["restarted"],
            "seconds": round(result.train_seconds, 1),
            "device": result.device,
            "model_params": summary["params"],
        },
        "data": {
            **prepared.study_attrs(),
            "limit": spec.limit,
            "all_digits": spec.all_digits,
            "trained_digits": summary["trained_digits"],
        },
        "validation": validation,
    }
