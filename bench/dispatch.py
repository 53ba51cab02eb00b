"""Dispatch and storage overhead of parallel studies, and the scaling of real trials with workers.

Part 1, overhead: studies of near-trivial trials (a linear model, one epoch on 180 digits) with
1, 2, 4, 8 and 16 workers against SQLite, PostgreSQL and MariaDB: trials per second, wall ms per
trial, and the worker-side overhead per trial (trial duration in the study minus its training
time: suggesting, reporting, the artifacts and the final write). One worker runs in-process, as
`digit-search run` does; more go through one Ray runtime that is kept across the runs.

Part 2, scaling: the same fixed list of real CNN trials (cnn space, embedded data, no pruning) run
in-process on all cores (what `--workers 1` does), by 1 Ray worker on one core, and by 2 Ray
workers on one core each: trials per hour, and the speed-ups of 2 workers over each 1-worker run.

    .venv/bin/python bench/dispatch.py [--workers 1 2 4 8 16] [--backends sqlite postgresql mysql]
    .venv/bin/python bench/dispatch.py --skip-overhead [--real-trials 12 --epochs 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import optuna
import ray

from search.config import RunSpec
from search.dispatch.run import run_study
from search.study.progress import quiet_optuna
from search.study.storage import open_storage

ROOT = Path(__file__).resolve().parent.parent
TRIVIAL_SPACE = str(ROOT / "tests" / "fixtures" / "my_space.py")
SERVERS = {
    "sqlite": None,
    "postgresql": os.environ.get("DIGIT_SEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("DIGIT_SEARCH_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}


class Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def storage_url(backend: str, workdir: Path) -> str:
    return SERVERS[backend] or f"sqlite:///{workdir}/{uuid.uuid4().hex[:8]}.db"


def timed_run(spec: RunSpec) -> tuple[float, list[optuna.trial.FrozenTrial]]:
    started = time.perf_counter()
    run_study(spec, out=Sink())
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=spec.study, storage=open_storage(spec.storage)).get_trials()
    return wall, trials


def worker_overhead_ms(trials: list[optuna.trial.FrozenTrial]) -> float:
    overheads = [
        (t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs.get("train_seconds", 0.0)
        for t in trials
        if t.datetime_complete and t.datetime_start
    ]
    return 1000 * sum(overheads) / max(len(overheads), 1)


def overhead_table(workers: list[int], backends: list[str], trials: int, workdir: Path) -> None:
    print(f"\n== overhead: {trials} near-trivial trials per run (wall includes data load and study setup)")
    print(f"{'backend':<11}{'workers':>8}{'trials/s':>10}{'wall ms/trial':>15}{'worker overhead ms/trial':>26}")
    for backend in backends:
        for count in workers:
            spec = RunSpec(
                space=TRIVIAL_SPACE,
                trials=trials,
                epochs=1,
                limit=200,
                storage=storage_url(backend, workdir),
                study=f"bench-{uuid.uuid4().hex[:8]}",
                reference=False,
                pruner="none",
                workers=count,
                gpus_per_trial=0 if count > 1 else None,
                cpus_per_trial=1 if count > 1 else None,
                artifacts=str(workdir / "artifacts"),
            )
            wall, done = timed_run(spec)
            print(
                f"{backend:<11}{count:>8}{trials / wall:>10.1f}{1000 * wall / trials:>15.0f}{worker_overhead_ms(done):>26.0f}",
                flush=True,
            )


def fixed_cnn_params(count: int, seed: int) -> list[dict]:
    """The same real trials for both sides: sampled once from the cnn space at random."""
    from spaces import load_space

    space = load_space("cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = []
    for _ in range(count):
        trial = study.ask()
        space.suggest(trial)
        trial_params = dict(trial.params)
        trial_params["train.batch_size"] = 256  # comparable work per trial on both sides
        params.append(trial_params)
        study.tell(trial, 0.0)
    return params


# (label, workers, CPUs per trial): None runs in-process with every core, as `--workers 1` does
SCALING_RUNS = (("in-process, all cores", 1, None), ("Ray, 1 worker x 1 core", 1, 1), ("Ray, 2 workers x 1 core", 2, 1))


def scaling_table(trials: int, epochs: int, workdir: Path) -> None:
    print(
        f"\n== scaling: {trials} fixed cnn trials, {epochs} epochs each, embedded data (3,600 train digits), no pruning"
    )
    params = fixed_cnn_params(trials, seed=1)
    rates = {}
    for index, (label, count, cpus) in enumerate(SCALING_RUNS):
        storage = f"sqlite:///{workdir}/scaling-{index}.db"
        study_name = f"scaling-{index}"
        study = optuna.create_study(study_name=study_name, storage=open_storage(storage), direction="maximize")
        for p in params:
            study.enqueue_trial(p)
        ray_run = cpus is not None
        spec = RunSpec(
            space="cnn",
            trials=trials,
            epochs=epochs,
            storage=storage,
            study=study_name,
            reference=False,
            pruner="none",
            workers=count,
            gpus_per_trial=0 if ray_run else None,
            cpus_per_trial=cpus,
            address=ray.get_runtime_context().gcs_address if ray_run else None,  # Ray even for 1 worker
            artifacts=str(workdir / "artifacts"),
        )
        wall, done = timed_run(spec)
        rates[label] = trials / wall * 3600
        accuracy = max(t.value for t in done if t.value is not None)
        mean_trial = statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
        print(
            f"{label:<26} {wall:7.1f} s  {rates[label]:7.1f} trials/hour  mean trial {mean_trial:5.1f} s  "
            f"best val {accuracy:.2%}",
            flush=True,
        )
    two, one_core, in_process = (
        rates[label] for label in ("Ray, 2 workers x 1 core", "Ray, 1 worker x 1 core", "in-process, all cores")
    )
    print(f"2 workers vs 1 worker of one core each: {two / one_core:.2f}x (aim: 1.7x)")
    print(f"2 workers vs the in-process run on all cores: {two / in_process:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql", "mysql"], choices=sorted(SERVERS))
    parser.add_argument("--trials", type=int, default=48, help="near-trivial trials per overhead run")
    parser.add_argument("--real-trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()

    quiet_optuna()
    warnings.simplefilter("ignore")
    print(f"load average before: {' '.join(open('/proc/loadavg').read().split()[:3])}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        workdir = Path(tmp)
        if not args.skip_overhead:
            # one runtime for every parallel run: worker processes are started once and reused
            ray.init(num_cpus=max(args.workers), num_gpus=0, include_dashboard=False, logging_level="warning")
            overhead_table(args.workers, args.backends, args.trials, workdir)
            ray.shutdown()
        if not args.skip_scaling:
            ray.init(num_cpus=os.cpu_count(), num_gpus=0, include_dashboard=False, logging_level="warning")
            scaling_table(args.real_trials, args.epochs, workdir)
            ray.shutdown()
    print(f"load average after: {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main()
