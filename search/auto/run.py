"""`digit-search auto`: from the data to the best submission within one wall-clock budget.

1. measure each family's training speed on this device and plan the budget (search.auto.plan);
2. the search: every family's references, then rounds of successive halving over families;
3. the ensemble: greedy selection over the top trials of every family's study, on validation;
4. the final training: the chosen configs retrained on every labelled digit, for as long as the
   budget kept for it, predicting the test digits with the weights and temperatures of step 3;
5. the submission and its lineage, the saved ensemble (which `predict` uses), the report, and a
   leaderboard in the terminal.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from search.auto.budget import Clock
from search.auto.plan import FamilyCost, Plan, choose_refit, plan_budget
from search.auto.refit import Refitted, all_labelled, refit
from search.auto.search import FamilyState, measure_costs, recorded_epochs, search
from search.config import AutoSpec, EnsembleSpec, ReportSpec
from search.ensemble.build import BuiltEnsemble, build_ensemble, protected_paths
from search.ensemble.saved import check_save_dir
from search.ensemble.selection import apply_temperature, blend
from search.ensemble.submission import check_out_path, write_submission
from search.errors import UserError
from search.report.build import run_report
from search.study.storage import parse_storage_url
from search.train.allocator import keep_freed_memory
from search.train.device import set_threads
from search.train.prepared import PreparedData, prepare_data

ENSEMBLE_TOP = 5  # candidates per family's study
FALLBACK_IMAGES_PER_SECOND = 100.0  # for a trial that recorded no speed: slow, so its retraining is sized with room


@dataclass(frozen=True)
class AutoResult:
    submission: Path
    lineage: Path
    saved: Path
    report: Path | None
    val_accuracy: float  # the ensemble's, on the validation digits, before the final training
    best_per_family: dict[str, float | None]
    refitted: list[str]  # study#trial of each model retrained on all labelled digits
    phases: dict[str, float]  # seconds per phase
    seconds: float


def run_auto(spec: AutoSpec, out: TextIO | None = None) -> AutoResult:
    """Search, ensemble, retrain and submit within spec.budget seconds; see the module's docstring."""
    out = out or sys.stdout
    clock = Clock(spec.budget_seconds)
    parse_storage_url(spec.storage)
    check_out_path(spec.out)
    if spec.save:
        check_save_dir(spec.save, protected_paths(ensemble_spec(spec, spec.family_names)))
    set_threads(spec.threads)
    keep_freed_memory()

    started = clock.used
    prepared = prepare_data(spec.data_dir, limit=spec.limit, val_fraction=spec.val_fraction, split_seed=spec.split_seed, device=spec.device)
    costs = measure_costs(spec.family_names, prepared, spec.seed)
    train_images, all_images = len(prepared.split.train_index), len(prepared.digits.train_labels)
    plan = plan_budget(clock.left, costs, train_images, all_images, spec.refit)
    clock.spent("measure", clock.used - started)
    states = [family_state(spec, cost, plan, train_images) for cost in costs]
    print_plan(plan, costs, states, prepared.digits.source, train_images, clock, out)

    started = clock.used
    search(spec, plan, states, clock, out, lambda states: ensemble_shares(spec, states, out))
    clock.spent("search", clock.used - started)

    started = clock.used
    ensemble = build_ensemble(ensemble_spec(spec, studies_with_trials(states)), io.StringIO())
    clock.spent("ensemble", clock.used - started)
    out.write(f"ensemble: {len(ensemble.chosen.members)} members, validation accuracy {ensemble.val_accuracy:.2%} ({clock.status()})\n")

    started = clock.used
    refitted = final_training(spec, plan, {cost.family: cost for cost in costs}, ensemble, prepared, clock, out)
    clock.spent("final training", clock.used - started)

    started = clock.used
    saved, csv_path, json_path = submit(spec, ensemble, refitted, plan, clock)
    report = write_auto_report(spec, [s.study for s in states if s.best is not None], saved, out)
    clock.spent("submission and report", clock.used - started)
    result = AutoResult(
        submission=csv_path,
        lineage=json_path,
        saved=saved,
        report=report,
        val_accuracy=ensemble.val_accuracy,
        best_per_family={s.family: s.best for s in states},
        refitted=[r.label for r in refitted if r.state is not None],
        phases=dict(clock.phases),
        seconds=clock.used,
    )
    print_leaderboard(result, states, ensemble, refitted, out)
    return result


def family_state(spec: AutoSpec, cost: FamilyCost, plan: Plan, train_images: int) -> FamilyState:
    """A family's study in this run: a resumed one keeps the epoch budget it was created with."""
    study = f"{spec.study_prefix}{cost.family}"
    epochs = recorded_epochs(spec.storage, study) or plan.epochs[cost.family]
    return FamilyState(cost.family, study, epochs, cost.trial_seconds(epochs, train_images), cost.first_rung_seconds(epochs, train_images))


def print_plan(plan: Plan, costs: list[FamilyCost], states: list[FamilyState], source: str, train_images: int, clock: Clock, out: TextIO) -> None:
    out.write(f"auto: {clock.status()} on {source}; {len(costs)} families, {plan.rounds} round(s) after the references\n")
    for cost, state in zip(costs, states, strict=True):  # a resumed study keeps its own epochs
        epoch = cost.epoch_seconds(train_images)
        out.write(f"  {cost.family}: {cost.images_per_second:,.0f} images/s, {epoch:.1f}s an epoch; search trials of {state.epochs} epochs\n")
    out.write(f"  search {plan.search_seconds:.0f}s; {plan.refit_note}; {plan.final_seconds:.0f}s for the ensemble and report\n")
    out.flush()


def ensemble_spec(spec: AutoSpec, studies: list[str]) -> EnsembleSpec:
    return EnsembleSpec(
        studies=",".join(studies),
        top=ENSEMBLE_TOP,
        tta=spec.tta,
        data_dir=spec.data_dir,
        limit=spec.limit,
        storage=spec.storage,
        artifacts=spec.artifacts,
        out=spec.out,
        save=spec.save,
        device=spec.device,
        threads=spec.threads,
    )


def studies_with_trials(states: list[FamilyState]) -> list[str]:
    studies = [s.study for s in states if s.best is not None]
    if not studies:
        raise UserError("no trial completed within the budget; give a longer --budget (the references alone need a few epochs each)")
    return studies


def ensemble_shares(spec: AutoSpec, states: list[FamilyState], out: TextIO) -> dict[str, float]:
    """Each study's share of the greedy ensemble's weight, on the stored validation probabilities (no TTA: it is a ranking)."""
    studies = [s.study for s in states if s.best is not None]
    if not studies:
        return {}
    ensemble = build_ensemble(replace(ensemble_spec(spec, studies), tta=False), io.StringIO())
    out.write(f"  ensemble so far: {ensemble.val_accuracy:.2%} validation, {len(ensemble.chosen.members)} members\n")
    shares: dict[str, float] = {}
    for index in ensemble.chosen.members:
        study = ensemble.candidates[index].study
        shares[study] = shares.get(study, 0.0) + float(ensemble.chosen.weights[index])
    return shares


def final_training(
    spec: AutoSpec, plan: Plan, costs: dict[str, FamilyCost], ensemble: BuiltEnsemble, prepared: PreparedData, clock: Clock, out: TextIO
) -> list[Refitted]:
    """Retrain the heaviest members on every labelled digit, as many as the time left before the final phase allows."""
    if not plan.refit_seconds:
        out.write(f"final training skipped: {plan.refit_note}\n")
        return []
    members = list(ensemble.chosen.members)
    candidates = [ensemble.candidates[i] for i in members]
    all_images = len(prepared.digits.train_labels)
    # a short trial's recorded speed includes its first steps' warm-up: never plan slower than the family
    # measured; a config much slower than its family's references is caught by its first epoch's pace
    speeds = [max(c.images_per_second or 0.0, costs[c.family].images_per_second if c.family in costs else 0.0) for c in candidates]
    epoch_seconds = [all_images / (speed or FALLBACK_IMAGES_PER_SECOND) for speed in speeds]
    seconds = clock.left - plan.final_seconds  # the search is over: what it left unused goes here too
    searched = max(c.epochs or 1 for c in candidates)
    order, epochs = choose_refit([float(ensemble.chosen.weights[i]) for i in members], epoch_seconds, seconds, least=searched)
    if not order:
        out.write(f"final training skipped: {seconds:.0f}s left cannot train even the heaviest member {searched}+ epochs on all digits\n")
        return []
    data = all_labelled(prepared)
    out.write(f"final training: {len(order)} model(s), {epochs} epochs each on {all_images:,} digits ({clock.status()})\n")
    ends = clock.used + seconds
    planned = {position: epoch_seconds[position] * epochs for position in order}
    refitted = []
    for number, position in enumerate(order):
        candidate = candidates[position]
        space = ensemble.pool.spaces[candidate.study][0]
        # this model's part of what is left, in proportion to its planned time
        still_planned = sum(planned[p] for p in order[number:])
        limit = max(1.0, (ends - clock.used) * planned[position] / still_planned)
        done = refit(space, candidate.params, candidate.seed or spec.seed, data, epochs, candidate.label, limit)
        refitted.append(done)
        outcome = done.problem or f"{done.epochs} epochs in {done.seconds:.0f}s"
        out.write(f"  {candidate.label} ({candidate.family}): {outcome} ({clock.status()})\n")
        out.flush()
    return refitted


def submit(spec: AutoSpec, ensemble: BuiltEnsemble, refitted: list[Refitted], plan: Plan, clock: Clock) -> tuple[Path, Path, Path]:
    """The submission from the retrained models where there are any (the proxies elsewhere), saved and written."""
    by_label = {r.label: r for r in refitted if r.state is not None}
    test_probs = ensemble.test_probs.copy()  # (M, T, 10) at each candidate's temperature
    states = {}
    for index in ensemble.chosen.members:
        done = by_label.get(ensemble.candidates[index].label)
        if done is not None:
            test_probs[index] = apply_temperature(done.test_probs, float(ensemble.temperatures[index]))
            states[int(index)] = done.state
    labels = blend(test_probs, ensemble.chosen.weights).argmax(axis=1)  # (T,)
    saved = ensemble.save(spec.save, states=states)
    lineage: dict[str, Any] = {
        **ensemble.lineage(),
        "auto": {
            "budget_seconds": clock.budget,
            "phases": dict(clock.phases),
            "search_epochs": plan.epochs,
            "final_training": [
                {"member": r.label, "epochs": r.epochs, "seconds": round(r.seconds, 1), "problem": r.problem} for r in refitted
            ],
            "note": plan.refit_note,
        },
    }
    csv_path, json_path = write_submission(spec.out, labels, lineage)
    return saved, csv_path, json_path


def write_auto_report(spec: AutoSpec, studies: list[str], saved: Path, out: TextIO) -> Path | None:
    """The HTML report of the auto studies and their ensemble; None (and the reason printed) if it fails:
    the submission is written by then, and a report is not worth failing the command for."""
    report = ReportSpec(studies=",".join(studies), storage=spec.storage, out=spec.report, artifacts=spec.artifacts, ensemble=str(saved), data_dir=spec.data_dir)
    try:
        return run_report(report, io.StringIO()).page
    except UserError as err:
        out.write(f"no report: {err.cli_message}\n")
        return None


def print_leaderboard(result: AutoResult, states: list[FamilyState], ensemble: BuiltEnsemble, refitted: list[Refitted], out: TextIO) -> None:
    out.write("\nfamily    best val  search time  rounds\n")
    for state in sorted(states, key=lambda s: -(s.best or 0)):
        best = "-" if state.best is None else f"{state.best:.2%}"
        out.write(f"{state.family:8}  {best:>8}  {state.seconds:>10.0f}s  {','.join(map(str, state.rounds)) or '-'}\n")
    out.write(f"ensemble  {result.val_accuracy:>8.2%}  (validation, {len(ensemble.chosen.members)} members, before the final training)\n")
    out.write(ensemble.table())
    if refitted:
        out.write("retrained on all labelled digits: " + ", ".join(f"{r.label} ({r.epochs} epochs{', ' + r.problem if r.problem else ''})" for r in refitted) + "\n")
    out.write("time: " + ", ".join(f"{phase} {seconds:.0f}s" for phase, seconds in result.phases.items()) + f"; total {result.seconds:.0f}s\n")
    out.write(f"wrote {result.submission} and {result.lineage.name}; ensemble saved in {result.saved}" + (f"; report {result.report}" if result.report else "") + "\n")
