"""How much of each family's search space trains at all: old ranges against the current ones.

    .venv/bin/python bench/trainable.py                               # all families, 6 configs, 2 epochs
    .venv/bin/python bench/trainable.py --families cnn vit --configs 6 --epochs 1
    .venv/bin/python bench/trainable.py --families resnet --cost      # one epoch, cost only, with cnn references

For each family, N configs are drawn by Optuna's RandomSampler (seed --seed) from the ranges as they
were before they were narrowed (the copies of the old suggest functions below, `OLD`) and from the current
spaces (`NEW`: spaces.<family>.suggest + spaces.training.suggest, what `digit-search` samples),
and each is trained briefly on a small stratified split (Kaggle's train.csv when --data has it,
else the embedded 5,000 MNIST digits). Per family and side it prints the share of configs that
never learned (final val accuracy below --threshold, 30 % by default: chance is 10 %; a diverged
run counts as never learned, at 0 %), the median val accuracy, the median seconds per config,
and the median and largest estimated seconds per epoch on Kaggle's 37,800 training digits
(from the training images/s). A config over --time-limit is stopped and counted apart ("slow").

The bench trains far fewer steps than a search trial (2 epochs of 2,400 digits against up to 6 of
37,800), so per-step weight decay does less harm here than it does in a real search: the
"wd x steps" column is the decoupled shrinkage a 6-epoch Kaggle trial would apply, as the
exponent of exp(-x), for the median config.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch

from search.config import Deadline
from search.data.digits import load_digits
from search.train.device import set_threads
from search.train.models import build_model
from search.train.prepared import prepare_digits
from search.train.trainer import Diverged, OutOfTime, train
from spaces import FAMILIES, Candidate, Space, cnn, resnet, stn, training, vit

DEFAULT_DATA_DIR = Path("/work/shared/data/digit-recognizer")
KAGGLE_TRAIN_DIGITS = 37_800  # the 90 % a search trains on
SEARCH_EPOCHS = 6  # bench/pipeline.sh's per-trial budget


# --- the ranges before they were narrowed, verbatim copies of the old suggest functions ---------------------


def old_training(trial) -> training.TrainConfig:
    optimizer = trial.suggest_categorical("train.optimizer", training.OPTIMIZERS)
    lr_range = (3e-4, 1e-2) if optimizer == "adamw" else (1e-2, 0.3)
    return training.TrainConfig(
        optimizer=optimizer,
        lr=trial.suggest_float(f"train.lr_{optimizer}", *lr_range, log=True),
        weight_decay=trial.suggest_float("train.weight_decay", 1e-6, 1e-2, log=True),
        batch_size=trial.suggest_categorical("train.batch_size", (64, 128, 256, 512)),
        schedule=trial.suggest_categorical("train.schedule", ("onecycle", "cosine", "plateau")),
        label_smoothing=trial.suggest_float("train.label_smoothing", 0.0, 0.2),
        rotation=trial.suggest_float("train.rotation", 0.0, 20.0),
        shift=trial.suggest_float("train.shift", 0.0, 0.15),
        zoom=trial.suggest_float("train.zoom", 0.0, 0.15),
    )


def old_cnn(trial, prefix: str = "cnn.") -> cnn.Config:
    blocks = trial.suggest_int(f"{prefix}blocks", 2, 4)
    return cnn.Config(
        widths=tuple(
            trial.suggest_int(f"{prefix}width_{i}", 6, 64, log=True)
            if i == 0
            else trial.suggest_int(f"{prefix}width_{i}", 8, 128, log=True)
            for i in range(blocks)
        ),
        kernels=tuple(trial.suggest_categorical(f"{prefix}kernel_{i}", (3, 5, 7)) for i in range(blocks)),
        convs=trial.suggest_categorical(f"{prefix}convs", (1, 2)),
        batch_norm=trial.suggest_categorical(f"{prefix}batch_norm", (True, False)),
        downsample=trial.suggest_categorical(f"{prefix}downsample", ("maxpool", "stride")),
        dropout=trial.suggest_float(f"{prefix}dropout", 0.0, 0.5),
        head_width=trial.suggest_int(f"{prefix}head_width", 32, 512, log=True),
        head_dropout=trial.suggest_float(f"{prefix}head_dropout", 0.0, 0.5),
    )


def old_stn(trial) -> stn.Config:
    return stn.Config(
        loc_widths=tuple(trial.suggest_int(f"stn.loc_width_{i}", 4, 32, log=True) for i in range(2)),
        loc_kernels=tuple(trial.suggest_categorical(f"stn.loc_kernel_{i}", (3, 5, 7)) for i in range(2)),
        loc_hidden=trial.suggest_int("stn.loc_hidden", 16, 128, log=True),
        body=old_cnn(trial, prefix="stn.cnn_"),
    )


def old_vit(trial) -> vit.Config:
    return vit.Config(
        patch_size=trial.suggest_categorical("vit.patch_size", (4, 7, 14)),
        width=trial.suggest_categorical("vit.width", (48, 64, 96, 128, 192)),
        depth=trial.suggest_int("vit.depth", 2, 8),
        heads=trial.suggest_categorical("vit.heads", (1, 2, 4, 8)),
        mlp_ratio=trial.suggest_categorical("vit.mlp_ratio", (2, 3, 4)),
        dropout=trial.suggest_float("vit.dropout", 0.0, 0.2),
        drop_path=trial.suggest_float("vit.drop_path", 0.0, 0.2),
        pool=trial.suggest_categorical("vit.pool", ("cls", "mean")),
    )


def old_resnet(trial) -> resnet.Config:
    stages = trial.suggest_int("resnet.stages", 2, 3)
    return resnet.Config(
        stem_width=trial.suggest_int("resnet.stem_width", 16, 64, log=True),
        widths=tuple(
            trial.suggest_int(f"resnet.width_{i}", 16, 64 if i == 0 else 128, log=True) for i in range(stages)
        ),
        blocks=tuple(trial.suggest_int(f"resnet.blocks_{i}", 1, 3) for i in range(stages)),
        strides=tuple(trial.suggest_categorical(f"resnet.stride_{i}", (1, 2)) for i in range(stages)),
    )


OLD_MODEL = {"cnn": old_cnn, "stn": old_stn, "vit": old_vit, "resnet": old_resnet}


def sample(family: str, side: str, count: int, seed: int) -> list[Candidate]:
    """`count` candidates of one family, drawn by RandomSampler(seed) from the old or the new ranges."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    space = Space(family, {family: FAMILIES[family]})
    candidates = []
    for _ in range(count):
        trial = study.ask()
        if side == "old":
            candidates.append(Candidate(family, OLD_MODEL[family](trial), old_training(trial)))
        else:
            candidates.append(space.suggest(trial))
    return candidates


# --- running and summarising ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    accuracy: float  # final val accuracy; 0 if diverged
    seconds: float  # wall time of train()
    kaggle_epoch_seconds: float | None  # 37,800 / training images per second
    status: str  # "ok", "diverged", "slow"
    decay_exponent: float  # weight_decay x steps of a 6-epoch Kaggle trial


def run_one(candidate: Candidate, data, epochs: int, seed: int, time_limit: float) -> Outcome:
    space = Space(candidate.family, {candidate.family: FAMILIES[candidate.family]})
    model = build_model(space, candidate, seed)
    t = candidate.train
    decay = t.weight_decay * SEARCH_EPOCHS * math.ceil(KAGGLE_TRAIN_DIGITS / t.batch_size)
    started = time.perf_counter()
    try:
        result = train(model, data, t, epochs=epochs, seed=seed, deadline=Deadline.after(time_limit))
    except Diverged:
        return Outcome(0.0, time.perf_counter() - started, None, "diverged", decay)
    except OutOfTime:
        return Outcome(float("nan"), time.perf_counter() - started, None, "slow", decay)
    seconds = time.perf_counter() - started
    return Outcome(result.val_accuracy, seconds, KAGGLE_TRAIN_DIGITS / result.images_per_second, "ok", decay)


def describe(candidate: Candidate) -> str:
    t = candidate.train
    train_part = f"{t.optimizer} lr {t.lr:.2g} wd {t.weight_decay:.1g} bs {t.batch_size} {t.schedule}"
    m = candidate.model
    if candidate.family == "cnn":
        model_part = f"w{m.widths} k{m.kernels} x{m.convs} bn={m.batch_norm} {m.downsample} do {m.dropout:.2f}"
    elif candidate.family == "stn":
        b = m.body
        model_part = f"loc{m.loc_widths} w{b.widths} bn={b.batch_norm} x{b.convs} do {b.dropout:.2f}"
    elif candidate.family == "vit":
        model_part = f"p{m.patch_size} w{m.width} d{m.depth} h{m.heads} {m.pool}"
    elif candidate.family == "resnet":
        model_part = f"stem {m.stem_width} w{m.widths} b{m.blocks} s{m.strides}"
    else:
        model_part = str(m)
    return f"{model_part} | {train_part}"


def summary_row(family: str, side: str, outcomes: list[Outcome], threshold: float) -> str:
    finished = [o for o in outcomes if o.status != "slow"]
    never = sum(o.accuracy < threshold for o in finished)
    slow = len(outcomes) - len(finished)
    median_acc = statistics.median(o.accuracy for o in finished) if finished else float("nan")
    median_s = statistics.median(o.seconds for o in outcomes)
    costs = [o.kaggle_epoch_seconds for o in finished if o.kaggle_epoch_seconds is not None]
    cost = f"{statistics.median(costs):7.0f} {max(costs):7.0f}" if costs else f"{'-':>7} {'-':>7}"
    decay = statistics.median(o.decay_exponent for o in outcomes)
    return (
        f"| {family:6} | {side:3} | {never}/{len(finished):<3} | {slow:4} | {median_acc:7.1%} | {median_s:6.1f} "
        f"| {cost} | {decay:6.2f} |"
    )


def decay_sweep(data, decays: list[float], epochs: int, time_limit: float) -> None:
    """Per-step decoupled weight decay against steps: lenet (no batch norm), its train config with
    batch 64 and each decay, for --epochs (e.g. 24 epochs of 2,400 digits: 900 steps, about half a
    6-epoch Kaggle trial at batch 128)."""
    refs = Space("cnn", {"cnn": cnn}).references()
    steps = epochs * (len(data.train_labels) // 64)
    print("| reference | weight decay | steps | decay x steps | val acc |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in ("lenet",):
        candidate = refs[name][0]
        for wd in decays:
            config = replace(candidate.train, batch_size=64, weight_decay=wd)
            o = run_one(replace(candidate, train=config), data, epochs, 0, time_limit)
            print(
                f"| {name} | {wd:g} | {steps} | {wd * steps:.1f} | {o.accuracy:.1%} ({o.status}, {o.seconds:.0f} s) |",
                flush=True,
            )


HEADER = (
    "| family | ranges | never learned | slow | median val acc | median s/config "
    "| est. s/Kaggle epoch (median, max) | median wd x steps (6 Kaggle epochs) |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["cnn", "stn", "vit", "resnet"], choices=sorted(FAMILIES))
    parser.add_argument("--configs", type=int, default=6, help="configs per family and side (default 6)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per config (default 2)")
    parser.add_argument("--rows", type=int, default=3000, help="labelled digits used, 80/20 train/val (default 3000)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="Kaggle folder; embedded digits if absent")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--threshold", type=float, default=0.30, help="'never learned' below this val accuracy")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per config before it counts as slow")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--cost", action="store_true", help="1 epoch per config, and the cnn references' cost too")
    parser.add_argument(
        "--decay",
        nargs="+",
        type=float,
        metavar="WD",
        help="instead: the lenet reference (no batch norm, cheap) trained --epochs at batch 64 with each per-step weight decay",
    )
    args = parser.parse_args()
    if args.cost:
        args.epochs = 1

    set_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kaggle = (args.data / "train.csv").exists() or (args.data / "train.csv.gz").exists()
    digits = load_digits(args.data if kaggle else None, cache_dir=Path("/tmp/digit-search-bench-cache"))
    data = prepare_digits(digits, limit=args.rows, val_fraction=0.2, split_seed=0, device="cpu").tensors
    print(
        f"data: {'Kaggle train.csv' if kaggle else 'embedded MNIST sample'}, {len(data.train_labels)} train / "
        f"{len(data.val_labels)} val digits; {args.epochs} epoch(s), {args.configs} configs per family and side, "
        f"sampler seed {args.seed}, {torch.get_num_threads()} threads, never learned = val acc < {args.threshold:.0%}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    if args.decay:
        decay_sweep(data, args.decay, args.epochs, args.time_limit)
        return
    rows = []
    if args.cost:
        refs = Space("cnn", {"cnn": cnn}).references()
        for name, (candidate, _) in refs.items():
            o = run_one(candidate, data, 1, 0, args.time_limit)
            print(
                f"  cnn reference {name}: {o.seconds:.1f} s, est. {o.kaggle_epoch_seconds:.0f} s/Kaggle epoch",
                flush=True,
            )
    for family in args.families:
        for side in args.sides:
            outcomes = []
            for index, candidate in enumerate(sample(family, side, args.configs, args.seed)):
                o = run_one(candidate, data, args.epochs, index, args.time_limit)
                outcomes.append(o)
                cost = f"{o.kaggle_epoch_seconds:5.0f}" if o.kaggle_epoch_seconds else "    -"
                print(
                    f"  {family} {side} #{index}: {o.status:8} {o.accuracy:6.1%} {o.seconds:5.1f}s "
                    f"(~{cost} s/Kaggle epoch)  {describe(candidate)}",
                    flush=True,
                )
            rows.append(summary_row(family, side, outcomes, args.threshold))
            print(rows[-1], flush=True)

    print()
    print(HEADER)
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
