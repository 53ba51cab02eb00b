"""How well a cheap rung ranks configs the way their full training does: Spearman's rank correlation
between each cheap fidelity's validation accuracies and the full training's, over random configs of
a space (plus its references), each fidelity a complete training with its own schedule.

Fidelities: the full training (--epochs on all training rows) and the cheap rungs of
search.study.rungs cut both ways, "rows" (every epoch on a fixed subset of 1/9 or 1/3 of the rows)
and "epochs" (fewer epochs on nearly all rows).

    .venv/bin/python bench/rung_correlation.py --data ../shared/data/digit-recognizer --limit 10000 --epochs 5 --configs 12
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402

from search.study.rungs import CUTS, RungData, ladder  # noqa: E402
from search.train.models import build_model  # noqa: E402
from search.train.prepared import prepare_data  # noqa: E402
from search.train.trainer import train  # noqa: E402
from spaces import load_space  # noqa: E402


def ranks(values: np.ndarray) -> np.ndarray:
    """(N,) values -> (N,) ranks from 0, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="cnn")
    parser.add_argument("--data")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--configs", type=int, default=12, help="random configs, besides the references")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-rows",
        type=int,
        default=100,
        help="smallest rung measured (the search's floor is search.study.rungs.MIN_RUNG_ROWS)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    prepared = prepare_data(args.data, limit=args.limit, val_fraction=0.1, split_seed=0, device="cpu")
    data = RungData(prepared.tensors)
    rows = len(prepared.tensors.train_labels)
    space = load_space(args.space)
    candidates = [(name, candidate) for name, (candidate, _) in space.references().items()]
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    for number in range(args.configs):
        candidates.append((f"random {number}", space.suggest(sampler.ask())))

    fidelities = {"full": ladder(args.epochs, rows)[-1]}
    for cut in CUTS:
        for rung in ladder(args.epochs, rows, cut=cut, min_rows=args.min_rows)[:-1]:
            fidelities[f"{cut} 1/{round(ladder(args.epochs, rows)[-1].images / rung.images)}"] = rung
    print(
        f"{len(candidates)} configs of {args.space}; {rows} training rows, {len(prepared.tensors.val_labels)} validation; "
        + ", ".join(f"{name}: {r.rows} rows x {r.epochs} epochs" for name, r in fidelities.items()),
        flush=True,
    )

    accuracy = {name: [] for name in fidelities}
    seconds = {name: 0.0 for name in fidelities}
    for label, candidate in candidates:
        line = []
        for name, rung in fidelities.items():
            started = time.perf_counter()
            model = build_model(space, candidate, args.seed)
            result = train(model, data.rows(rung.rows), candidate.train, epochs=rung.epochs, seed=args.seed)
            seconds[name] += time.perf_counter() - started
            accuracy[name].append(result.val_accuracy)
            line.append(f"{name} {result.val_accuracy:.2%}")
        print(f"  {label}: " + ", ".join(line), flush=True)

    full = np.array(accuracy["full"])
    best = int(np.argmax(full))
    print(f"\n{'fidelity':<14} {'images':>8} {'seconds':>8} {'spearman':>9} {'top-1/3 keeps best':>19}")
    for name, rung in fidelities.items():
        values = np.array(accuracy[name])
        kept = np.argsort(-values, kind="stable")[: max(1, round(len(values) / 3))]
        print(
            f"{name:<14} {rung.images:>8} {seconds[name]:>8.0f} {spearman(values, full):>9.2f} {str(best in kept):>19}"
        )


if __name__ == "__main__":
    main()
