"""Searchers side by side in one run: one wall budget, the same data and seeds.

- random: random sampling, no pruning, no references (the loop users would write themselves);
- hyperband: the old default, TPE (10 random start-up trials) + Hyperband on epochs, references first;
- rungs: the new default, TPE + successive halving over complete trainings on 1/9, 1/3 and all of
  the images (search.study.rungs), references first;
- rungs-random: the same rungs and references with random sampling, to see what TPE adds;
- rungs-prior: the same rungs and references with the prior sampler (search.study.prior_sampler):
  mutations of the best completed trials, the references first, and a third uniform draws.

For each searcher and seed it prints the best validation accuracy reached by each time (only
trials that ended within the budget count), the best sampled (non-reference) trial, when each
reached the best reference's accuracy and the --baseline searcher's final best (random search's
by default), and the training images spent until its best trial ended against what the baseline
spent in all. It writes
the curves as a plotly figure (search_efficiency.html) and the figures as JSON to --out.

    .venv/bin/python bench/search_efficiency.py --data ../shared/data/digit-recognizer --limit 10000 \\
        --epochs 5 --budget 300 --seeds 0 1
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search.config import RunSpec  # noqa: E402
from search.dispatch.run import run_study  # noqa: E402
from search.study.trial_attrs import IMAGES_TRAINED_ATTR, REFERENCE_ATTR  # noqa: E402

SEARCHERS = {
    "random": {"sampler": "random", "pruner": "none", "reference": False},
    "hyperband": {"sampler": "tpe", "pruner": "hyperband", "reference": True},
    "rungs": {"sampler": "tpe", "pruner": "rungs", "reference": True},
    "rungs-random": {"sampler": "random", "pruner": "rungs", "reference": True},
    "rungs-prior": {"sampler": "prior", "pruner": "rungs", "reference": True},
}
ENDLESS = 1_000_000


@dataclass
class Outcome:
    searcher: str
    seed: int
    curve: list[tuple[float, float]]  # (seconds since the run began, best accuracy so far) at each improvement
    best: float | None
    best_sampled: float | None
    best_reference: float | None
    trials: int
    complete: int
    images_to_best: int | None  # training images all trials had spent when the best trial ended
    images_total: int  # training images spent by trials that ended within the budget

    def time_to(self, accuracy: float | None) -> float | None:
        """Seconds until the best so far reached `accuracy` (None: never, within the budget)."""
        if accuracy is None:
            return None
        return next((seconds for seconds, best in self.curve if best >= accuracy - 1e-9), None)


def outcome(searcher: str, seed: int, study: optuna.Study, began: float, budget: float) -> Outcome:
    """The run as its trials recorded it; a trial counts once it ended, and only if it ended within the budget."""
    ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete is not None]
    ended = [(t.datetime_complete.timestamp() - began, t) for t in ended]
    ended = sorted((at, t) for at, t in ended if at <= budget) if ended else []
    curve: list[tuple[float, float]] = []
    best = best_sampled = best_reference = None
    spent = 0
    images_to_best = None
    for at, trial in ended:
        spent += int(trial.user_attrs.get(IMAGES_TRAINED_ATTR, 0))
        if trial.state != TrialState.COMPLETE:
            continue
        if REFERENCE_ATTR in trial.user_attrs:
            best_reference = max(best_reference or 0.0, trial.value)
        else:
            best_sampled = max(best_sampled or 0.0, trial.value)
        if best is None or trial.value > best:
            best, images_to_best = trial.value, spent
            curve.append((round(at, 1), trial.value))
    complete = sum(t.state == TrialState.COMPLETE for _, t in ended)
    return Outcome(
        searcher, seed, curve, best, best_sampled, best_reference, len(ended), complete, images_to_best, spent
    )


def run_one(searcher: str, seed: int, args: argparse.Namespace, work: Path) -> Outcome:
    storage = f"sqlite:///{work / f'{searcher}-{seed}.db'}"
    spec = RunSpec(
        space=args.space,
        study=f"{args.space}-{searcher}-{seed}",
        trials=ENDLESS,
        epochs=args.epochs,
        data_dir=args.data,
        limit=args.limit,
        storage=storage,
        artifacts=str(work / f"artifacts-{searcher}-{seed}"),
        seed=seed,
        timeout=args.budget,
        trial_timeout=args.budget,  # no single trial may outlast the run; counted only if it ends in time anyway
        **SEARCHERS[searcher],
    )
    began = time.time()
    log = io.StringIO()
    run_study(spec, log)
    (work / f"{searcher}-{seed}.log").write_text(log.getvalue())
    return outcome(searcher, seed, optuna.load_study(study_name=spec.study, storage=storage), began, args.budget)


def fmt(value: float | None, kind: str = "pct") -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if kind == "pct" else f"{value:.0f}s" if kind == "s" else f"{value / 1e6:.2f}M"


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if len(known) == len(values) and known else None


def report(outcomes: list[Outcome], budget: float, baseline: str) -> str:
    """The table, then a line per searcher; `baseline` is the searcher whose final best the others race to."""
    lines = [
        f"{'searcher':<12} {'seed':>4} {'trials':>6} {'done':>5} {'best':>7} {'sampled':>8} {'ref':>7} "
        f"{'t(ref)':>7} {'t(base)':>8} {'img->best':>9} {'img all':>8}"
    ]
    base_best = {o.seed: o.best for o in outcomes if o.searcher == baseline}
    base_images = {o.seed: o.images_total for o in outcomes if o.searcher == baseline}
    reference_best = {
        o.seed: max((x.best_reference or 0.0) for x in outcomes if x.seed == o.seed) or None for o in outcomes
    }
    for o in outcomes:
        lines.append(
            f"{o.searcher:<12} {o.seed:>4} {o.trials:>6} {o.complete:>5} {fmt(o.best):>7} {fmt(o.best_sampled):>8} {fmt(o.best_reference):>7} "
            f"{fmt(o.time_to(reference_best[o.seed]), 's'):>7} {fmt(o.time_to(base_best.get(o.seed)), 's'):>8} "
            f"{fmt(o.images_to_best, 'img'):>9} {fmt(o.images_total, 'img'):>8}"
        )
    lines.append("")
    for searcher in SEARCHERS:
        mine = [o for o in outcomes if o.searcher == searcher]
        if not mine:
            continue
        to_base = [o.time_to(base_best.get(o.seed)) for o in mine]
        images = [
            None if o.images_to_best is None or not base_images.get(o.seed) else o.images_to_best / base_images[o.seed]
            for o in mine
        ]
        lines.append(
            f"{searcher:<12} mean best {fmt(mean([o.best for o in mine]))}, best sampled {fmt(mean([o.best_sampled for o in mine]))}; "
            f"reaches {baseline}'s final best in {fmt(mean(to_base), 's')} of {budget:.0f}s "
            f"({'-' if mean(to_base) is None else f'{mean(to_base) / budget:.2f}'} of the budget); "
            f"images until its best / {baseline}'s images: {'-' if mean(images) is None else f'{mean(images):.2f}'}"
        )
    return "\n".join(lines)


def write_figure(outcomes: list[Outcome], budget: float, path: Path) -> None:
    import plotly.graph_objects as go

    figure = go.Figure()
    for o in outcomes:
        xs = [x for x, _ in o.curve] + [budget]
        ys = [y for _, y in o.curve] + ([o.curve[-1][1]] if o.curve else [])
        figure.add_trace(
            go.Scatter(x=xs[: len(ys)], y=ys, mode="lines+markers", line_shape="hv", name=f"{o.searcher} seed {o.seed}")
        )
    figure.update_layout(
        title="best validation accuracy against wall time",
        xaxis_title="seconds since the run began",
        yaxis_title="best validation accuracy",
        yaxis_tickformat=".2%",
    )
    figure.write_html(path, include_plotlyjs="cdn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="cnn")
    parser.add_argument("--data", help="Kaggle folder (default: the embedded sample)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=300, help="wall seconds per searcher and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--searchers", nargs="+", choices=sorted(SEARCHERS), default=list(SEARCHERS))
    parser.add_argument(
        "--baseline",
        choices=sorted(SEARCHERS),
        default="random",
        help="the searcher whose final best the others race to",
    )
    parser.add_argument("--out", help="folder for the studies, logs, figure and JSON (default: a new temporary one)")
    args = parser.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="search-efficiency-"))
    work.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"space {args.space}, data {args.data or 'embedded'} (limit {args.limit}), {args.epochs} epochs a full trial, "
        f"{args.budget:.0f}s per searcher and seed; work folder {work}",
        flush=True,
    )
    outcomes = []
    for seed in args.seeds:
        for searcher in args.searchers:
            result = run_one(searcher, seed, args, work)
            outcomes.append(result)
            print(
                f"  {searcher} seed {seed}: {result.trials} trials, best {fmt(result.best)}, best sampled {fmt(result.best_sampled)}",
                flush=True,
            )
    text = report(outcomes, args.budget, args.baseline)
    print(text)
    (work / "search_efficiency.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    write_figure(outcomes, args.budget, work / "search_efficiency.html")
    print(f"figure: {work / 'search_efficiency.html'}")


if __name__ == "__main__":
    main()
