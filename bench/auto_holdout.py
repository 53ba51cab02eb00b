"""`digit-search auto` scored on digits it never sees, side by side with what it must beat: Kaggle's
labelled train.csv split into a training part (the Kaggle folder each command is given) and a
labelled holdout (its test.csv).

By default three runs, in this order, each in its own subfolder of the work folder (its own
studies, submission and lineage), all on the same holdout data and the same --budget:

    auto        digit-search auto --budget B
    no-search   digit-search auto --budget B --no-search  (the references only, no sampled configs)
    baseline    digit-search train --space cnn --reference bn-cnn --all-digits --budget B --out submission.csv
                (the obvious baseline: one config on every labelled digit for as many epochs as fit)

`--only auto,no-search,baseline` picks a subset (`--only auto` is this script's former single run).
It ends with one table: each run's holdout accuracy, its validation accuracy (the baseline's is not
held out: it trained on the validation rows), wall seconds and what it trained, with the CPU (its
model name, and whether it has avx512_bf16 / AMX) and the load average. The `auto` run keeps its
detail: the submission after the final training against the same ensemble's search models (the
proxies, as `--no-refit` would submit them) and each family's best single trial, and the phases'
times. Kaggle's hidden test labels are not needed: the holdout stands in for them (4,200 digits by
default: 1 digit = 0.024%). A run that fails is reported as such and the others still run.

    .venv/bin/python bench/auto_holdout.py --budget 1h
    .venv/bin/python bench/auto_holdout.py --budget 30s --only baseline --data embedded --limit 500  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from search import api  # noqa: E402
from search.data.digits import load_digits, stratified_split  # noqa: E402

DEFAULT_DATA_DIR = Path("/work/shared/data/digit-recognizer")
RUNS = ("auto", "no-search", "baseline")
BASELINE = ["train", "--space", "cnn", "--reference", "bn-cnn", "--all-digits"]


@dataclass
class Outcome:
    """One run: its command's wall time and, when it wrote a submission, its figures."""

    name: str
    wall: float
    holdout: float | None = None
    validation: float | None = None
    validation_held_out: bool = True
    trained: str = ""
    problem: str | None = None


def write_kaggle_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    """images (N, 28, 28) uint8 as Kaggle's CSV: label column first when labels are given."""
    pixels = images.reshape(len(images), -1).astype(np.int64)
    table = pixels if labels is None else np.column_stack([labels, pixels])
    header = ("label," if labels is not None else "") + ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(path, table, fmt="%d", delimiter=",", header=header, comments="")


def cpu_description() -> str:
    """The CPU's model name and whether it has bf16 vector (avx512_bf16) or matrix (AMX) units."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    units = [name for name in ("avx512_bf16", "amx_bf16", "amx_tile") if name in flags]
    limits = [
        f"{name}={os.environ[name]}" for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if name in os.environ
    ]
    return (
        f"{model}, {os.cpu_count()} CPUs, "
        + (" ".join(units) if units else "no avx512_bf16/AMX")
        + (f" (run with {' '.join(limits)})" if limits else "")
    )


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def command_of(name: str, args: argparse.Namespace, data_dir: Path) -> list[str]:
    common = [
        "--data",
        str(data_dir),
        *(["--limit", str(args.limit)] if args.limit else []),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    if name == "baseline":
        return [*BASELINE, "--budget", args.budget, "--out", "submission.csv", *common]
    return ["auto", "--budget", args.budget, *(["--no-search"] if name == "no-search" else []), *common, *args.extra]


def run_one(name: str, args: argparse.Namespace, data_dir: Path, folder: Path, held_labels: np.ndarray) -> Outcome:
    """Run one command in `folder` and score the submission it wrote on the holdout."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(REPO / ".venv/bin/digit-search"), *command_of(name, args, data_dir)]
    print(f"\n== {name}: {' '.join(command[1:])} (in {folder}; {load()})", flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=folder).returncode
    wall = time.monotonic() - started
    if code != 0:
        return Outcome(name, wall, problem=f"failed with exit status {code}")
    lineage = json.loads((folder / "submission.json").read_text())
    submitted = np.loadtxt(folder / "submission.csv", delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
    outcome = Outcome(name, wall, holdout=float(np.mean(submitted == held_labels)))
    if name == "baseline":
        outcome.validation = lineage["validation"]["accuracy"]
        outcome.validation_held_out = lineage["validation"]["held_out"]
        training = lineage["training"]
        outcome.trained = f"{lineage['config']['reference']}: {training['epochs']} epochs on {lineage['data']['trained_digits']:,} digits in {training['seconds']:.0f}s"
    else:
        outcome.validation = lineage["validation"]["submitted"]["accuracy"]
        members = ", ".join(f"{m['study']}#{m['trial']}" for m in lineage["members"])
        refits = [r for r in lineage.get("auto", {}).get("final_training", []) if not r.get("problem")]
        retrained = (
            "; retrained " + ", ".join(f"{r['member']} {r['epochs']} ep" for r in refits)
            if refits
            else "; none retrained"
        )
        outcome.trained = f"{len(lineage['members'])} members ({members}){retrained}"
    return outcome


def auto_detail(folder: Path, data_dir: Path, held_labels: np.ndarray) -> None:
    """The auto run's own table: the submission against the same ensemble's search models and each family's best trial."""
    lineage = json.loads((folder / "submission.json").read_text())
    submitted = np.loadtxt(folder / "submission.csv", delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
    studies = ",".join(dict.fromkeys(m["study"] for m in lineage["members"]))
    all_studies = ",".join(lineage["validation"]["best_per_study"])
    # the same ensemble's search models: what --no-refit would have submitted
    here = Path.cwd()
    os.chdir(folder)
    try:
        with open(os.devnull, "w") as quiet:
            proxies = api.build_ensemble(all_studies, top=5, data_dir=str(data_dir), log=quiet)
    finally:
        os.chdir(here)
    rows = [
        (
            "submitted (after the final training)",
            lineage["validation"]["submitted"]["accuracy"],
            float(np.mean(submitted == held_labels)),
        )
    ]
    rows.append(
        ("the same ensemble's search models", proxies.val_accuracy, float(np.mean(proxies.test_labels == held_labels)))
    )
    for study, best in proxies.best_per_study.items():
        single = proxies.test_probs[best].argmax(axis=1)
        rows.append(
            (
                f"best of {study} (trial {proxies.candidates[best].number})",
                proxies.scores[best].accuracy,
                float(np.mean(single == held_labels)),
            )
        )

    print(f"\nauto in detail: members {studies}")
    print(f"{'':40}  validation  holdout ({len(held_labels):,})")
    for label, validation, holdout in rows:
        print(f"{label:40}  {validation:>10.2%}  {holdout:>8.2%}")
    print("phases: " + ", ".join(f"{phase} {seconds:.0f}s" for phase, seconds in lineage["auto"]["phases"].items()))
    print("final training: " + json.dumps(lineage["auto"]["final_training"]))


def print_table(outcomes: list[Outcome], args: argparse.Namespace, held: int) -> None:
    print(f"\n--budget {args.budget} each, {held:,} holdout digits; {cpu_description()}; {load()}")
    print(f"{'run':10}  {'holdout':>8}  {'validation':>11}  {'wall':>6}  trained")
    for o in outcomes:
        if o.problem:
            print(f"{o.name:10}  {'-':>8}  {'-':>11}  {o.wall:>5.0f}s  {o.problem}")
            continue
        validation = f"{o.validation:.2%}" + (" " if o.validation_held_out else "*")
        print(f"{o.name:10}  {o.holdout:>8.2%}  {validation:>11}  {o.wall:>5.0f}s  {o.trained}")
    if any(not o.validation_held_out for o in outcomes if not o.problem):
        print("* not held out: --all-digits trained on the validation rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="1h", help="each run's --budget (default: 1h)")
    parser.add_argument(
        "--data",
        default=str(DEFAULT_DATA_DIR),
        help="Kaggle's folder, or 'embedded' for the embedded sample (smoke runs)",
    )
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of train.csv held out with its labels")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the holdout split (not the validation split)")
    parser.add_argument(
        "--only",
        default=",".join(RUNS),
        help=f"the runs, comma-separated, from {','.join(RUNS)} (default: all, in that order)",
    )
    parser.add_argument("--limit", type=int, help="--limit ROWS for every run (smoke runs)")
    parser.add_argument(
        "--threads",
        type=int,
        help="--threads N for every run (with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 in the environment, a slower CPU's stand-in)",
    )
    parser.add_argument("--work", help="folder for the data, studies and outputs (default: a new temporary one)")
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="more options for the two digit-search auto runs"
    )
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in RUNS]
    if unknown or not names:
        parser.error(f"--only: choose from {','.join(RUNS)}, got {args.only!r}")
    names = [name for name in RUNS if name in names]  # always in the documented order

    work = Path(args.work or tempfile.mkdtemp(prefix="auto-holdout-")).resolve()
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    digits = load_digits(None if args.data == "embedded" else args.data, cache_dir=work / "cache")
    split = stratified_split(digits.train_labels, args.holdout, args.seed)
    held_labels = digits.train_labels[split.val_index]
    write_kaggle_csv(
        data_dir / "train.csv", digits.train_images[split.train_index], digits.train_labels[split.train_index]
    )
    write_kaggle_csv(data_dir / "test.csv", digits.train_images[split.val_index], None)
    print(
        f"{len(split.train_index):,} training digits, {len(held_labels):,} held out; work folder {work}; {load()}",
        flush=True,
    )

    outcomes = [run_one(name, args, data_dir, work / name, held_labels) for name in names]
    auto = next((o for o in outcomes if o.name == "auto"), None)
    if auto is not None and not auto.problem:
        auto_detail(work / "auto", data_dir, held_labels)
    print_table(outcomes, args, len(held_labels))


if __name__ == "__main__":
    main()
