"""`digit-search auto` scored on digits it never sees: Kaggle's labelled train.csv split into a
training part (the Kaggle folder auto is given) and a labelled holdout (its test.csv).

Prints the holdout accuracy of the submission auto wrote (the final training's models), of the
same ensemble's search models (the proxies, as `--no-refit` would submit them), and of each
family's best single trial, side by side, with the phases' times. Kaggle's hidden test labels
are not needed: the holdout stands in for them (4,200 digits by default: 1 digit = 0.024%).

    .venv/bin/python bench/auto_holdout.py --budget 1h
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from search import api  # noqa: E402
from search.data.digits import load_digits, stratified_split  # noqa: E402

DEFAULT_DATA_DIR = Path("/work/shared/data/digit-recognizer")


def write_kaggle_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    """images (N, 28, 28) uint8 as Kaggle's CSV: label column first when labels are given."""
    pixels = images.reshape(len(images), -1).astype(np.int64)
    table = pixels if labels is None else np.column_stack([labels, pixels])
    header = ("label," if labels is not None else "") + ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(path, table, fmt="%d", delimiter=",", header=header, comments="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="1h")
    parser.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of train.csv held out with its labels")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the holdout split (not the validation split)")
    parser.add_argument("--work", help="folder for the data, studies and outputs (default: a new temporary one)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more options for digit-search auto")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="auto-holdout-"))
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    digits = load_digits(args.data, cache_dir=work / "cache")
    split = stratified_split(digits.train_labels, args.holdout, args.seed)
    held_labels = digits.train_labels[split.val_index]
    write_kaggle_csv(data_dir / "train.csv", digits.train_images[split.train_index], digits.train_labels[split.train_index])
    write_kaggle_csv(data_dir / "test.csv", digits.train_images[split.val_index], None)
    print(f"{len(split.train_index):,} training digits, {len(held_labels):,} held out; work folder {work}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)

    command = [str(REPO / ".venv/bin/digit-search"), "auto", "--budget", args.budget, "--data", str(data_dir), *args.extra]
    started = time.monotonic()
    subprocess.run(command, cwd=work, check=True)
    wall = time.monotonic() - started

    lineage = json.loads((work / "submission.json").read_text())
    submitted = np.loadtxt(work / "submission.csv", delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
    studies = ",".join(dict.fromkeys(m["study"] for m in lineage["members"]))
    all_studies = ",".join(lineage["validation"]["best_per_study"])
    # the same ensemble's search models: what --no-refit would have submitted
    os.chdir(work)
    proxies = api.build_ensemble(all_studies, top=5, data_dir=str(data_dir), log=open(os.devnull, "w"))
    rows = [("submitted (after the final training)", lineage["validation"]["submitted"]["accuracy"], float(np.mean(submitted == held_labels)))]
    rows.append(("the same ensemble's search models", proxies.val_accuracy, float(np.mean(proxies.test_labels == held_labels))))
    for study, best in proxies.best_per_study.items():
        single = proxies.test_probs[best].argmax(axis=1)
        rows.append((f"best of {study} (trial {proxies.candidates[best].number})", proxies.scores[best].accuracy, float(np.mean(single == held_labels))))

    print(f"\nauto --budget {args.budget}: {wall:.0f}s wall; load {os.getloadavg()[0]:.2f}; members {studies}")
    print(f"{'':40}  validation  holdout ({len(held_labels):,})")
    for label, validation, holdout in rows:
        print(f"{label:40}  {validation:>10.2%}  {holdout:>8.2%}")
    print("phases: " + ", ".join(f"{phase} {seconds:.0f}s" for phase, seconds in lineage["auto"]["phases"].items()))
    print("final training: " + json.dumps(lineage["auto"]["final_training"]))


if __name__ == "__main__":
    main()
