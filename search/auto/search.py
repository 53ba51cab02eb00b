"""The search phase of `auto`: measure each family, run its references, then successive halving over families."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from search.auto.budget import Clock
from search.auto.plan import FamilyCost, Plan, reference_seconds, round_share, survivors
from search.config import AutoSpec, RunSpec
from search.dispatch.run import run_study
from search.study.setup import EPOCHS_STUDY_ATTR
from search.study.storage import open_storage
from search.train.models import build_model
from search.train.prepared import PreparedData
from search.train.trainer import TrainingData, train
from spaces import load_space

PROBE_IMAGES = 512  # one short epoch per reference: long enough to time, short next to the budget
WARMUP_IMAGES = 128  # an epoch first, untimed: a model's first steps pay for kernel generation
ENDLESS = 1_000_000  # a trial target that only the time ever reaches


@dataclass
class FamilyState:
    family: str
    study: str
    epochs: int
    trial_seconds: float  # predicted for a reference-sized trial of `epochs` epochs that climbs every rung
    first_rung_seconds: float  # predicted for its cheapest rung, where most sampled configs stop
    best: float | None = None
    ensemble_share: float = 0.0
    seconds: float = 0.0
    rounds: list[int] = field(default_factory=list)


def measure_costs(families: list[str], prepared: PreparedData, seed: int) -> list[FamilyCost]:
    """Each family's training speed on this device: its slowest reference, one short epoch each."""
    tensors = prepared.tensors

    def subset(count: int) -> TrainingData:
        count = min(count, len(tensors.train_labels))
        return TrainingData(tensors.train_images[:count], tensors.train_labels[:count], tensors.val_images[:64], tensors.val_labels[:64], tensors.test_images[:0])

    warmup, probe = subset(WARMUP_IMAGES), subset(PROBE_IMAGES)
    costs = []
    for family in families:
        space = load_space(family)
        speeds = []
        for candidate, _ in space.references().values():
            model = build_model(space, candidate, seed).to(tensors.device)
            train(model, warmup, candidate.train, epochs=1, seed=seed)
            speeds.append(train(model, probe, candidate.train, epochs=1, seed=seed).images_per_second)
        costs.append(FamilyCost(family, min(speeds), len(speeds)))
    return costs


def study_run(spec: AutoSpec, state: FamilyState, **options) -> RunSpec:
    """The `run` options of one slice of a family's study: the auto command's data, storage and devices."""
    return RunSpec(
        space=state.family,
        study=state.study,
        epochs=state.epochs,
        data_dir=spec.data_dir,
        limit=spec.limit,
        val_fraction=spec.val_fraction,
        split_seed=spec.split_seed,
        storage=spec.storage,
        artifacts=spec.artifacts,
        seed=spec.seed,
        device=spec.device,
        threads=spec.threads,
        workers=spec.workers,
        gpus_per_trial=spec.gpus_per_trial,
        address=spec.address,
        **options,
    )


def recorded_epochs(storage_url: str, study: str) -> int | None:
    """The epoch budget an existing study was created with (a resumed auto run keeps it), else None."""
    storage = open_storage(storage_url)
    try:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study))
    except KeyError:
        return None
    epochs = attrs.get(EPOCHS_STUDY_ATTR)
    return int(epochs) if isinstance(epochs, int) else None


def run_slice(spec: AutoSpec, state: FamilyState, seconds: float, clock: Clock, out: TextIO, *, search_left: float | None = None) -> None:
    """Give one family `seconds`. No trial trains past twice its predicted time (a sampled config can be
    much bigger than the references). References (`search_left` None) all start while one can still end
    in the slice. Sampled trials start while a first rung can; one promoted late may finish its climb
    after the slice (the rounds after it share what is left, so they pay for it) but not after the
    search's end, `search_left` seconds away, and a rung that the family's measured pace says cannot end
    by then is stopped before it starts."""
    limit = max(1.0, 2 * state.trial_seconds)
    if search_left is None:
        options = {"trials": len(load_space(state.family).references()), "timeout": max(1.0, seconds - state.trial_seconds), "trial_timeout": limit}
    else:
        options = {"trials": ENDLESS, "timeout": max(1.0, seconds - state.first_rung_seconds), "trial_timeout": limit, "train_until": time.time() + search_left}
    started = clock.used
    summary = run_study(study_run(spec, state, **options), io.StringIO())
    state.best = summary.best_value
    state.seconds += clock.used - started
    out.write(
        f"  {state.family}: {summary.counts.get('complete', 0)} complete, {summary.counts.get('pruned', 0)} pruned, "
        f"{summary.counts.get('fail', 0)} failed; best {'-' if state.best is None else f'{state.best:.2%}'} ({clock.status()})\n"
    )
    out.flush()


def search(
    spec: AutoSpec,
    plan: Plan,
    states: list[FamilyState],
    clock: Clock,
    out: TextIO,
    ensemble_shares: Callable[[list[FamilyState]], dict[str, float]],
) -> None:
    """References first, then rounds of successive halving until the search time is spent."""
    search_ends = clock.used + plan.search_seconds
    out.write(f"references of {', '.join(s.family for s in states)} ({clock.status()})\n")
    reference_share = reference_seconds(plan.search_seconds, len(states))
    for state in states:
        run_slice(spec, state, reference_share, clock, out)
    alive = list(states)
    for round_number in range(1, plan.rounds + 1):
        left = search_ends - clock.used
        if left <= 1 or not alive:
            break
        share = round_share(left, plan.rounds, round_number, len(alive))
        # a family that cannot finish even a trial's first rung in its slice would only burn it
        too_slow = [s.family for s in alive if s.first_rung_seconds > share]
        if too_slow:
            out.write(f"  leaving: {', '.join(too_slow)} (a trial's first rung would outlast the {share:.0f}s slice)\n")
            alive = [s for s in alive if s.first_rung_seconds <= share]
            if not alive:
                break
            share = round_share(left, plan.rounds, round_number, len(alive))
        out.write(f"search round {round_number}: {', '.join(s.family for s in alive)}, {share:.0f}s each ({clock.status()})\n")
        for state in alive:
            state.rounds.append(round_number)
            run_slice(spec, state, share, clock, out, search_left=search_ends - clock.used)
        shares = ensemble_shares(states)
        for state in states:
            state.ensemble_share = shares.get(state.study, 0.0)
        kept = set(survivors({s.family: (s.ensemble_share, s.best or 0.0) for s in alive}))
        dropped = [s.family for s in alive if s.family not in kept]
        if dropped:
            out.write(f"  leaving: {', '.join(dropped)} (their share of the ensemble and best accuracy are the lowest)\n")
        alive = [s for s in alive if s.family in kept]
