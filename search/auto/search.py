"""The search phase of `auto`: the portfolio of references, then successive halving over families.

Speeds come from the references as they train on this device (their recorded images/s); a config
not trained yet is predicted from its FLOPs at the pace the others achieved, and before anything
has trained, from one short timed training of the portfolio's first config.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import optuna
from optuna.trial import TrialState

from search.auto.budget import Clock
from search.auto.plan import ConfigCost, Plan, fits_portfolio, round_share, rounds_for, survivors
from search.config import AutoSpec, Deadline, RunSpec
from search.dispatch.run import RunSummary, run_study
from search.study.setup import EPOCHS_STUDY_ATTR
from search.study.states import FINISHED
from search.study.storage import open_storage
from search.study.trial_attrs import REFERENCE_ATTR
from search.train.cost import Throughput, forward_flops
from search.train.models import build_model
from search.train.prepared import PreparedData
from search.train.trainer import TrainingData, train
from spaces import load_space

PROBE_IMAGES = 2_048  # a timed training: 16 steps, long enough that its fixed costs are small
WARMUP_IMAGES = 256  # trained first, untimed: a model's first steps pay for kernel generation
ENDLESS = 1_000_000  # a trial target that only the time ever reaches
TRIAL_TIME_MARGIN = 2.0  # no trial trains past this many times its predicted time


@dataclass
class FamilyState:
    family: str
    study: str
    epochs: int
    trial_seconds: float = 0.0  # predicted for a reference-sized trial that climbs every rung
    first_rung_seconds: float = 0.0  # predicted for its cheapest rung, where most sampled configs stop
    best: float | None = None
    ensemble_share: float = 0.0
    seconds: float = 0.0
    rounds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    """A reference's completed trial in this storage: its validation accuracy and, on this device, its speed."""

    family: str
    value: float
    images_per_second: float | None


def recorded_references(storage_url: str, studies: dict[str, str], device: str) -> dict[str, Recorded]:
    """Reference name -> its best completed trial in the family studies (`studies`: family -> study name)."""
    storage = open_storage(storage_url)
    found: dict[str, Recorded] = {}
    for family, name in studies.items():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            reference = trial.user_attrs.get(REFERENCE_ATTR)
            if (
                reference is None
                or trial.value is None
                or (reference in found and found[reference].value >= trial.value)
            ):
                continue
            speed = trial.user_attrs.get("images_per_second") if trial.user_attrs.get("device") == device else None
            found[reference] = Recorded(family, trial.value, speed)
    return found


def study_best(storage_url: str, study: str) -> float | None:
    """The best validation accuracy the study holds (an earlier run's trials count), else None."""
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=study, storage=storage).best_value
    except (KeyError, ValueError):  # no such study, or no completed trial
        return None


def finished_trials(storage_url: str, study: str) -> int:
    storage = open_storage(storage_url)
    try:
        return len(optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False, states=FINISHED))
    except KeyError:
        return 0


def recorded_epochs(storage_url: str, study: str) -> int | None:
    """The epoch budget an existing study was created with (a resumed auto run keeps it), else None."""
    storage = open_storage(storage_url)
    try:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study))
    except KeyError:
        return None
    epochs = attrs.get(EPOCHS_STUDY_ATTR)
    return int(epochs) if isinstance(epochs, int) else None


class CostModel:
    """Each portfolio config's speed on this device: recorded where it trained, else predicted from its FLOPs."""

    def __init__(self, portfolio: list[tuple[str, str]], prepared: PreparedData, seed: int) -> None:
        self.portfolio = portfolio  # (family, reference name) in training order
        self.prepared = prepared
        self.seed = seed
        self.flops: dict[str, int | None] = {}
        self.batch: dict[str, int] = {}
        for family, name in portfolio:
            candidate = load_space(family).references()[name][0]
            self.flops[name] = forward_flops(build_model(load_space(family), candidate, seed))
            self.batch[name] = candidate.train.batch_size
        self.probed: dict[str, float] = {}

    def leave_out(self, families: set[str]) -> None:
        self.portfolio = [(family, name) for family, name in self.portfolio if family not in families]

    def costs(self, recorded: dict[str, Recorded]) -> list[ConfigCost]:
        """The portfolio's costs in order, from the speeds `recorded` so far (probing the first config when none is)."""
        speeds = {name: r.images_per_second for name, r in recorded.items() if r.images_per_second}
        speeds.update({name: speed for name, speed in self.probed.items() if name not in speeds})
        if not speeds:
            family, name = self.portfolio[0]
            self.probed[name] = self.probe(family, name)
            speeds[name] = self.probed[name]
        pace = Throughput.from_runs((self.flops[name], speed) for name, speed in speeds.items())
        fallback = min(speeds.values())
        result = []
        for family, name in self.portfolio:
            speed = speeds.get(name)
            if speed is None:
                speed = pace.images_per_second(self.flops[name]) if pace and self.flops[name] else fallback
            result.append(ConfigCost(family, name, speed, self.batch[name]))
        return result

    def probe(self, family: str, name: str) -> float:
        """Images/s of one short timed training of the reference, after an untimed warm-up."""
        tensors = self.prepared.tensors

        def subset(count: int) -> TrainingData:
            count = min(count, len(tensors.train_labels))
            return TrainingData(
                tensors.train_images[:count],
                tensors.train_labels[:count],
                tensors.val_images[:64],
                tensors.val_labels[:64],
                tensors.test_images[:0],
            )

        space = load_space(family)
        candidate = space.references()[name][0]
        model = build_model(space, candidate, self.seed).to(tensors.device)
        train(model, subset(WARMUP_IMAGES), candidate.train, epochs=1, seed=self.seed)
        return train(model, subset(PROBE_IMAGES), candidate.train, epochs=1, seed=self.seed).images_per_second


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
        sampler=spec.sampler,
        device=spec.device,
        threads=spec.threads,
        workers=spec.workers,
        gpus_per_trial=spec.gpus_per_trial,
        address=spec.address,
        **options,
    )


def report_slice(state: FamilyState, summary: RunSummary, clock: Clock, out: TextIO, what: str) -> None:
    state.best = summary.best_value
    out.write(
        f"  {what}: {summary.counts.get('complete', 0)} complete, {summary.counts.get('pruned', 0)} pruned, "
        f"{summary.counts.get('fail', 0)} failed; best {'-' if state.best is None else f'{state.best:.2%}'} ({clock.status()})\n"
    )
    out.flush()


def run_portfolio(
    spec: AutoSpec,
    plan: Plan,
    states: dict[str, FamilyState],
    clock: Clock,
    out: TextIO,
    train_images: int,
    costs: Callable[[], list[ConfigCost]],
    done: set[str],
) -> list[str]:
    """Train the portfolio's references in order, one at a time, each while its proxy fits the portfolio's
    time left at the speeds measured so far (re-read after every trial); `done` (already trained) are skipped.
    Returns the references trained, by this run or an earlier one."""
    ends = clock.used + plan.portfolio_seconds
    current = costs()
    trained = [c.name for c in current if c.name in done]
    if trained:
        out.write(f"  already trained by an earlier run: {', '.join(trained)}\n")
    for position in range(len(current)):
        cost = current[position]
        if cost.name in done:
            continue
        state = states[cost.family]
        reason = fits_portfolio(
            cost, state.epochs, train_images, plan.searches, ends - clock.used, not trained, plan.usable
        )
        if reason is not None:
            out.write(f"  leaving out {reason}\n")
            continue
        predicted = cost.proxy_seconds(state.epochs, train_images, plan.searches)
        options = {
            "trials": finished_trials(spec.storage, state.study) + 1,
            "only_references": (cost.name,),
            "climb_references": plan.searches,
            "trial_timeout": max(1.0, TRIAL_TIME_MARGIN * predicted),
            "deadline": clock.deadline(reserve=plan.final_seconds),  # the budget is a wall, whatever the prediction
        }
        started = clock.used
        summary = run_study(study_run(spec, state, **options), io.StringIO())
        state.seconds += clock.used - started
        report_slice(
            state,
            summary,
            clock,
            out,
            f"{cost.name}, {state.epochs} epochs, {clock.used - started:.0f}s (planned {predicted:.0f}s)",
        )
        if cost.name in recorded_references(spec.storage, {state.family: state.study}, ""):
            trained.append(cost.name)
        current = costs()  # re-planned with the speed this trial measured
    return trained


def run_slice(
    spec: AutoSpec, state: FamilyState, seconds: float, clock: Clock, out: TextIO, search_ends: Deadline
) -> None:
    """Give one family `seconds` of sampled trials. No trial trains past twice its predicted time (a sampled
    config can be much bigger than the references). Sampled trials start while a first rung can end in the
    slice; one promoted late may finish its climb after the slice (the rounds after it share what is left,
    so they pay for it) but not after the search's end, `search_ends`, and a rung that the
    family's measured pace says cannot end by then is stopped before it starts."""
    options = {
        "trials": ENDLESS,
        "timeout": max(1.0, seconds - state.first_rung_seconds),
        "trial_timeout": max(1.0, TRIAL_TIME_MARGIN * state.trial_seconds),
        "deadline": search_ends,
        "only_references": (),
    }
    started = clock.used
    summary = run_study(study_run(spec, state, **options), io.StringIO())
    state.seconds += clock.used - started
    report_slice(state, summary, clock, out, state.family)


def search(
    spec: AutoSpec,
    search_seconds: float,
    states: list[FamilyState],
    clock: Clock,
    out: TextIO,
    ensemble_shares: Callable[[list[FamilyState]], dict[str, float]],
) -> None:
    """Rounds of successive halving over the families until `search_seconds` are spent."""
    search_ends = clock.used + search_seconds
    alive = list(states)
    rounds = rounds_for(len(alive))
    for round_number in range(1, rounds + 1):
        left = search_ends - clock.used
        if left <= 1 or not alive:
            break
        share = round_share(left, rounds, round_number, len(alive))
        # a family that cannot finish even a trial's first rung in its slice would only burn it
        too_slow = [s.family for s in alive if s.first_rung_seconds > share]
        if too_slow:
            out.write(f"  leaving: {', '.join(too_slow)} (a trial's first rung would outlast the {share:.0f}s slice)\n")
            alive = [s for s in alive if s.first_rung_seconds <= share]
            if not alive:
                break
            share = round_share(left, rounds, round_number, len(alive))
        out.write(
            f"search round {round_number}: {', '.join(s.family for s in alive)}, {share:.0f}s each ({clock.status()})\n"
        )
        for state in alive:
            state.rounds.append(round_number)
            run_slice(spec, state, share, clock, out, clock.moment(search_ends))
        shares = ensemble_shares(states)
        for state in states:
            state.ensemble_share = shares.get(state.study, 0.0)
        kept = set(survivors({s.family: (s.ensemble_share, s.best or 0.0) for s in alive}))
        dropped = [s.family for s in alive if s.family not in kept]
        if dropped:
            out.write(
                f"  leaving: {', '.join(dropped)} (their share of the ensemble and best accuracy are the lowest)\n"
            )
        alive = [s for s in alive if s.family in kept]
