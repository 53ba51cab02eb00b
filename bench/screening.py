"""What a rung costs, judged every epoch (the old way) against judged on its end, side by side in one run.

A rung trial used to validate after every epoch and predict the test digits after every rung; only
its last epoch's accuracy is reported, and only the last rung's test predictions are stored. This
times each rung of a sampled trial's climb (all of Kaggle's training digits, the 90/10 split) both
ways, alternating, for the references named, and prints the seconds and the saving.

    .venv/bin/python bench/screening.py --data ../shared/data/digit-recognizer --epochs 4
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from search.study.rungs import RungData, ladder
from search.train.allocator import keep_freed_memory
from search.train.models import build_model
from search.train.prepared import prepare_data
from search.train.trainer import train
from spaces import load_space


def cpu_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Kaggle folder (default: the embedded sample)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of a full trial (every rung trains as many)")
    parser.add_argument("--references", nargs="+", default=["bn-cnn", "stn-cnn", "vit-seed"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    prepared = prepare_data(args.data, limit=None, val_fraction=0.1, split_seed=0, device="cpu")
    tensors = prepared.tensors
    rungs = ladder(args.epochs, len(tensors.train_labels))
    rung_data = RungData(tensors)
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads; {len(tensors.val_labels):,} validation and "
        f"{len(tensors.test_images):,} test digits; rungs " + ", ".join(f"{r.rows:,} rows x {r.epochs}" for r in rungs)
    )
    space = load_space("all")
    references = space.references()
    print(f"{'reference':<10} {'rung':>13} {'every epoch':>12} {'on its end':>11} {'saved':>6}")
    for name in args.references:
        candidate, _ = references[name]
        totals = {True: 0.0, False: 0.0}
        for rung in rungs:
            last = rung is rungs[-1]
            seconds: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.rounds):
                for every_epoch in (True, False):
                    model = build_model(space, candidate, 0)
                    began = time.perf_counter()
                    train(
                        model,
                        rung_data.rows(rung.rows),
                        candidate.train,
                        epochs=rung.epochs,
                        seed=0,
                        validate_every_epoch=every_epoch,
                        predict_test=every_epoch or last,
                    )
                    seconds[every_epoch].append(time.perf_counter() - began)
            old, new = (statistics.median(seconds[key]) for key in (True, False))
            totals[True] += old
            totals[False] += new
            print(f"{name:<10} {rung.rows:>8,} rows {old:>11.1f}s {new:>10.1f}s {1 - new / old:>6.0%}", flush=True)
        old, new = totals[True], totals[False]
        print(f"{name:<10} {'whole climb':>13} {old:>11.1f}s {new:>10.1f}s {1 - new / old:>6.0%}")


if __name__ == "__main__":
    main()
