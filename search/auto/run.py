"""`digit-search auto`: from the data to the best submission within one wall-clock budget.

1. plan the budget (search.auto.plan) from the speeds this device has recorded, or one short probe;
2. the portfolio: the references in order (best measured first), each trained as a proxy while it
   fits, the plan re-read from every trial's measured speed;
3. the search, when the final training leaves it enough time: rounds of successive halving over
   the families the portfolio trained;
4. the ensemble: greedy selection over the top trials of every family's study, on validation;
5. the final training: the chosen configs retrained on every labelled digit, the time shared by
   ensemble weight, predicting the test digits with the weights and temperatures of step 4;
6. the submission and its lineage, the saved ensemble (which `predict` uses), the report, and a
   leaderboard in the terminal.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from search.auto.budget import Clock
from search.auto.checks import check_auto_options
from search.auto.plan import (
    ConfigCost,
    Plan,
    families_left_out,
    order_portfolio,
    plan_budget,
    refit_claim,
    search_pays,
    share_refit,
)
from search.auto.refit import Refitted, all_labelled, refit
from search.auto.search import (
    CostModel,
    FamilyState,
    recorded_epochs,
    recorded_references,
    run_portfolio,
    search,
    study_best,
)
from search.config import AutoSpec, EnsembleSpec, ReportSpec
from search.ensemble.build import BuiltEnsemble, build_ensemble
from search.ensemble.selection import apply_temperature, blend
from search.ensemble.submission import write_submission
from search.errors import UserError
from search.report.build import run_report
from search.train.allocator import keep_freed_memory
from search.train.device import set_threads
from search.train.prepared import PreparedData, prepare_data
from spaces import load_space

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
    sampled_members: list[str]  # study#trial of the submitted members that the search sampled (not references)
    cut_short: str | None = None  # the phase a Ctrl-C cut, after which this best-so-far submission was written

    @property
    def interrupted(self) -> bool:
        return self.cut_short is not None


def run_auto(spec: AutoSpec, out: TextIO | None = None) -> AutoResult:
    """Plan, train the portfolio, search, ensemble, retrain and submit within spec.budget seconds; see the module's docstring."""
    out = out or sys.stdout
    clock = Clock(spec.budget_seconds)
    check_auto_options(spec)  # every output option, before anything is written
    set_threads(spec.threads)
    keep_freed_memory()

    with clock.phase("measure"):
        prepared = prepare_data(
            spec.data_dir,
            limit=spec.limit,
            val_fraction=spec.val_fraction,
            split_seed=spec.split_seed,
            device=spec.device,
        )
        train_images, all_images = len(prepared.split.train_index), len(prepared.digits.train_labels)
        studies = {family: f"{spec.study_prefix}{family}" for family in spec.family_names}
        device = str(prepared.tensors.device)
        recorded = recorded_references(spec.storage, studies, device)
        family_of = {name: family for family in spec.family_names for name in load_space(family).references()}
        order = order_portfolio(list(family_of), {name: r.value for name, r in recorded.items()})
        costs = CostModel([(family_of[name], name) for name in order], prepared, spec.seed)
        plan = plan_budget(
            clock.left, costs.costs(recorded), train_images, all_images, search=spec.search, refit=spec.refit
        )
    states = {
        family: FamilyState(
            family, study, recorded_epochs(spec.storage, study) or plan.epochs, best=study_best(spec.storage, study)
        )
        for family, study in studies.items()
    }
    planned = costs.costs(recorded)
    print_plan(plan, planned, recorded, prepared.digits.source, train_images, clock, out)
    left_out = families_left_out(planned, plan, train_images, set(recorded))
    for reason in left_out.values():
        out.write(f"  left out: {reason}\n")
    costs.leave_out(set(left_out))

    def measured_costs() -> list[ConfigCost]:
        return costs.costs(recorded_references(spec.storage, studies, device))

    cut_short = None  # the phase a Ctrl-C cut: the best submission so far is still written
    try:
        with clock.phase("portfolio"):
            out.write(f"portfolio ({clock.status()})\n")
            trained = run_portfolio(spec, plan, states, clock, out, train_images, measured_costs, set(recorded))
        with clock.phase("search"):
            searched = [states[f] for f in dict.fromkeys(family_of[name] for name in trained)]
            recorded = recorded_references(spec.storage, studies, device)
            search_seconds = search_time(
                spec, plan, measured_costs(), trained, recorded, searched, train_images, all_images, clock, out
            )
            if search_seconds:
                out.write(
                    f"search: {search_seconds:.0f}s over {', '.join(s.family for s in searched)} ({clock.status()})\n"
                )
                search(spec, search_seconds, searched, clock, out, lambda states: ensemble_shares(spec, states, out))
    except KeyboardInterrupt:
        cut_short = next(reversed(clock.phases))
        for state in states.values():  # the cut slice's completed trials count too
            state.best = study_best(spec.storage, state.study)
        if all(state.best is None for state in states.values()):
            out.write(f"\ninterrupted during the {cut_short}: no model is complete yet, so there is no submission\n")
            raise
        out.write(f"\ninterrupted during the {cut_short}: submitting the best ensemble of what is complete\n")

    with clock.phase("ensemble"):
        ensemble = build_ensemble(ensemble_spec(spec, studies_with_trials(list(states.values()))), io.StringIO())
    out.write(
        f"ensemble: {len(ensemble.chosen.members)} members, validation accuracy {ensemble.val_accuracy:.2%} ({clock.status()})\n"
    )

    refitted: list[Refitted] = []
    if cut_short is None:
        try:
            with clock.phase("final training"):
                final_training(
                    spec, plan, {c.name: c for c in measured_costs()}, ensemble, prepared, clock, out, refitted
                )
        except KeyboardInterrupt:
            cut_short = "final training"
            out.write(
                "\ninterrupted during the final training: submitting with the models retrained so far, the proxies elsewhere\n"
            )

    with clock.phase("submission and report"):
        saved, csv_path, json_path = submit(spec, ensemble, refitted, plan, clock, cut_short)
        report = (
            None
            if cut_short
            else write_auto_report(spec, [s.study for s in states.values() if s.best is not None], saved, out)
        )
    result = AutoResult(
        submission=csv_path,
        lineage=json_path,
        saved=saved,
        report=report,
        val_accuracy=ensemble.val_accuracy,
        best_per_family={s.family: s.best for s in states.values()},
        refitted=[r.label for r in refitted if r.state is not None],
        phases=dict(clock.phases),
        seconds=clock.used,
        sampled_members=sampled_members(ensemble),
        cut_short=cut_short,
    )
    print_leaderboard(result, list(states.values()), ensemble, refitted, out)
    return result


def search_time(
    spec: AutoSpec,
    plan: Plan,
    costs: list[ConfigCost],
    trained: list[str],
    recorded: dict,
    searched: list[FamilyState],
    train_images: int,
    all_images: int,
    clock: Clock,
    out: TextIO,
) -> float:
    """The search's seconds, re-planned from the speeds the portfolio measured (0: no search), and each
    searched family's predicted trial times."""
    if not plan.searches or not searched:
        return 0.0
    by_name = {c.name: c for c in costs if c.name in trained}
    best_first = sorted(by_name.values(), key=lambda c: -(recorded[c.name].value if c.name in recorded else 0.0))
    seconds = clock.left - plan.final_seconds - (refit_claim(best_first, all_images) if spec.refit else 0.0)
    for state in searched:
        family = [c for c in by_name.values() if c.family == state.family]
        state.trial_seconds = max(c.proxy_seconds(state.epochs, train_images, True) for c in family)
        state.first_rung_seconds = max(c.first_rung_seconds(state.epochs, train_images) for c in family)
    if not search_pays(seconds, list(by_name.values()), train_images):
        out.write(f"no search: with the speeds measured, the final training can use all but {max(0.0, seconds):.0f}s\n")
        return 0.0
    return seconds


def print_plan(
    plan: Plan, costs: list[ConfigCost], recorded: dict, source: str, train_images: int, clock: Clock, out: TextIO
) -> None:
    out.write(
        f"auto: {clock.status()} on {source}; portfolio of {len(costs)} references, proxies of {plan.epochs} epochs\n"
    )
    for cost in costs:
        measured = "measured" if cost.name in recorded and recorded[cost.name].images_per_second else "predicted"
        value = f", {recorded[cost.name].value:.2%} validation before" if cost.name in recorded else ""
        out.write(
            f"  {cost.name} ({cost.family}): {cost.images_per_second:,.0f} images/s {measured}, {cost.epoch_seconds(train_images):.1f}s an epoch{value}\n"
        )
    parts = [
        f"portfolio {plan.portfolio_seconds:.0f}s",
        f"search {plan.search_seconds:.0f}s",
        *plan.notes,
        f"{plan.final_seconds:.0f}s for the ensemble and report",
    ]
    out.write("  " + "; ".join(parts) + "\n")
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
        raise UserError(
            "no trial completed within the budget; give a longer --budget (the references alone need a few epochs each)"
        )
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
    spec: AutoSpec,
    plan: Plan,
    costs: dict[str, ConfigCost],
    ensemble: BuiltEnsemble,
    prepared: PreparedData,
    clock: Clock,
    out: TextIO,
    refitted: list[Refitted],
) -> None:
    """Retrain the members on every labelled digit into `refitted` (so that a Ctrl-C keeps those done), each for
    epochs in proportion to its ensemble weight, in the time left before the final phase; a member whose share
    is under its proxy's epochs keeps its proxy."""
    if not plan.refit_seconds:
        out.write(f"final training skipped: {'; '.join(n for n in plan.notes if 'final training' in n)}\n")
        return
    members = list(ensemble.chosen.members)
    candidates = [ensemble.candidates[i] for i in members]
    all_images = len(prepared.digits.train_labels)
    epoch_seconds = [all_images / member_speed(c, ensemble, costs) for c in candidates]
    seconds = clock.left - plan.final_seconds  # what the search left unused goes here too
    least = [c.epochs or 1 for c in candidates]
    epochs = share_refit([float(ensemble.chosen.weights[i]) for i in members], epoch_seconds, seconds, least)
    if not epochs:
        out.write(
            f"final training skipped: {seconds:.0f}s left cannot retrain even the heaviest member for longer than its proxy trained\n"
        )
        return
    data = all_labelled(prepared)
    order = sorted(epochs, key=lambda p: -float(ensemble.chosen.weights[members[p]]))
    plan_text = ", ".join(f"{candidates[p].label} {epochs[p]}" for p in order)
    out.write(
        f"final training on all {all_images:,} digits, epochs by ensemble weight: {plan_text} ({clock.status()})\n"
    )
    ends = clock.used + seconds  # the clock's reading when the final training must be done
    planned = {p: epoch_seconds[p] * epochs[p] for p in order}
    for number, position in enumerate(order):
        candidate = candidates[position]
        space = ensemble.pool.spaces[candidate.study][0]
        # this model's part of what is left, in proportion to its planned time
        still_planned = sum(planned[p] for p in order[number:])
        share = max(1.0, (ends - clock.used) * planned[position] / still_planned)
        deadline = clock.moment(clock.used + share)
        done = refit(
            space, candidate.params, candidate.seed or spec.seed, data, epochs[position], candidate.label, deadline
        )
        refitted.append(done)
        outcome = done.problem or f"{done.epochs} epochs in {done.seconds:.0f}s"
        out.write(f"  {candidate.label} ({candidate.family}): {outcome} ({clock.status()})\n")
        out.flush()


def member_speed(candidate, ensemble: BuiltEnsemble, costs: dict[str, ConfigCost]) -> float:
    """A member's training images/s: as its trial recorded it, else its reference's, else its family's slowest config's."""
    if candidate.images_per_second:
        return candidate.images_per_second
    reference = ensemble.pool.spaces[candidate.study][0].reference_name(candidate.params)
    if reference in costs:
        return costs[reference].images_per_second
    family = [c.images_per_second for c in costs.values() if c.family == candidate.family]
    return min(family) if family else FALLBACK_IMAGES_PER_SECOND


def sampled_members(ensemble: BuiltEnsemble) -> list[str]:
    """The submitted members that are sampled configs, not references."""
    found = []
    for index in ensemble.chosen.members:
        candidate = ensemble.candidates[index]
        if ensemble.pool.spaces[candidate.study][0].reference_name(candidate.params) is None:
            found.append(candidate.label)
    return found


def submit(
    spec: AutoSpec, ensemble: BuiltEnsemble, refitted: list[Refitted], plan: Plan, clock: Clock, cut_short: str | None
) -> tuple[Path, Path, Path]:
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
            "plan": {
                "portfolio_seconds": round(plan.portfolio_seconds),
                "search_seconds": round(plan.search_seconds),
                "refit_seconds": round(plan.refit_seconds),
            },
            "final_training": [
                {"member": r.label, "epochs": r.epochs, "seconds": round(r.seconds, 1), "problem": r.problem}
                for r in refitted
            ],
            "notes": list(plan.notes),
            "cut_short": cut_short,  # the phase a Ctrl-C cut; None: the run went to its end
        },
    }
    csv_path, json_path = write_submission(spec.out, labels, lineage)
    return saved, csv_path, json_path


def write_auto_report(spec: AutoSpec, studies: list[str], saved: Path, out: TextIO) -> Path | None:
    """The HTML report of the auto studies and their ensemble; None (and the reason printed) if it fails:
    the submission is written by then, and a report is not worth failing the command for."""
    report = ReportSpec(
        studies=",".join(studies),
        storage=spec.storage,
        out=spec.report,
        artifacts=spec.artifacts,
        ensemble=str(saved),
        data_dir=spec.data_dir,
    )
    try:
        return run_report(report, io.StringIO()).page
    except UserError as err:
        out.write(f"no report: {err.cli_message}\n")
        return None


def print_leaderboard(
    result: AutoResult, states: list[FamilyState], ensemble: BuiltEnsemble, refitted: list[Refitted], out: TextIO
) -> None:
    out.write("\nfamily    best val  search time  rounds\n")
    for state in sorted(states, key=lambda s: -(s.best or 0)):
        best = "-" if state.best is None else f"{state.best:.2%}"
        out.write(f"{state.family:8}  {best:>8}  {state.seconds:>10.0f}s  {','.join(map(str, state.rounds)) or '-'}\n")
    out.write(
        f"ensemble  {result.val_accuracy:>8.2%}  (validation, {len(ensemble.chosen.members)} members, before the final training)\n"
    )
    out.write(ensemble.table())
    if refitted:
        out.write(
            "retrained on all labelled digits: "
            + ", ".join(f"{r.label} ({r.epochs} epochs{', ' + r.problem if r.problem else ''})" for r in refitted)
            + "\n"
        )
    if result.sampled_members:
        out.write(
            f"the search beat the portfolio: sampled configs in the submission: {', '.join(result.sampled_members)}\n"
        )
    else:
        searched = any(state.rounds for state in states)
        out.write(
            "the submission is the portfolio's references"
            + (" (no sampled config raised the ensemble)" if searched else " (no search ran)")
            + "\n"
        )
    out.write(
        "time: "
        + ", ".join(f"{phase} {seconds:.0f}s" for phase, seconds in result.phases.items())
        + f"; total {result.seconds:.0f}s\n"
    )
    if result.cut_short:
        out.write(f"cut short by Ctrl-C during the {result.cut_short} (the lineage says so)\n")
    out.write(
        f"wrote {result.submission} and {result.lineage.name}; ensemble saved in {result.saved}"
        + (f"; report {result.report}" if result.report else "")
        + "\n"
    )
