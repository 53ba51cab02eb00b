"""Opening a study: its sampler and pruner, the identity it must keep, and its reference trials."""

from __future__ import annotations

from pathlib import Path

import optuna

from search.config import DEFAULT_EPOCHS, PRUNERS, RUNG_PRUNER, SAMPLERS
from search.errors import UserError
from search.study.prior_sampler import PriorSampler
from search.study.retries import RetriesFirstStudy
from search.study.rungs import REDUCTION
from search.study.trial_attrs import EPOCHS_ATTR
from search.train.prepared import PreparedData
from spaces import Space

# Study attrs that must match for a run to continue a study.
IDENTITY_ATTRS = ("space", "data_hash", "split")
EPOCHS_STUDY_ATTR = "epochs"  # the study's epoch budget: the epochs of a trial's full training
PRUNER_STUDY_ATTR = "pruner"  # rungs report steps 1, 3, 9; the other pruners report epochs: a study keeps one kind
LEGACY_PRUNER = "hyperband"  # what a study that predates the attr was pruned with
# --space as a later run can load it: a built-in name or a file's absolute path
SPACE_SOURCE_STUDY_ATTR = "space_source"
MAX_STUDY_NAME = 512  # characters: Optuna's study_name column
TPE_STARTUP_TRIALS = 10
# With rungs a sampled trial mostly costs a ninth of a full one, and the references are already
# observations (they count towards the start-up), so TPE may start modelling sooner.
RUNG_TPE_STARTUP_TRIALS = 5


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == RUNG_PRUNER:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=REDUCTION, min_early_stopping_rate=0
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int, kind: str = SAMPLERS[0], pruner: str = RUNG_PRUNER) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "prior":
        return PriorSampler(seed=seed)
    startup = RUNG_TPE_STARTUP_TRIALS if pruner == RUNG_PRUNER else TPE_STARTUP_TRIALS
    # Multivariate TPE over conditional spaces (group) with constant liar for parallel workers.
    return optuna.samplers.TPESampler(seed=seed, group=True, constant_liar=True, n_startup_trials=startup)


def study_identity(space: Space, prepared: PreparedData) -> dict[str, object]:
    return {"space": space.name, **prepared.study_attrs()}


def space_source(option: str) -> str:
    """--space as any process can load it later: a built-in name as given, a family file by its absolute path."""
    return str(Path(option).resolve()) if option.endswith(".py") else option


def check_study_name(name: str) -> None:
    if len(name) > MAX_STUDY_NAME:
        raise UserError(f"--study is {len(name)} characters long; a study name may have at most {MAX_STUDY_NAME}")


def recorded_study(storage: optuna.storages.BaseStorage | None, name: str) -> dict[str, object] | None:
    """The study's user attrs, with its epoch budget filled in from its trials for a study that predates the attr;
    None when there is no such study (or no database yet)."""
    if storage is None:
        return None
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    attrs = dict(storage.get_study_user_attrs(study_id))
    if EPOCHS_STUDY_ATTR not in attrs:
        budgets = [
            t.user_attrs[EPOCHS_ATTR]
            for t in storage.get_all_trials(study_id, deepcopy=False)
            if EPOCHS_ATTR in t.user_attrs
        ]
        if budgets:
            attrs[EPOCHS_STUDY_ATTR] = budgets[-1]
    return attrs


def recorded_space(recorded: dict[str, object] | None, study_name: str, where: str) -> str:
    """The --space the study was created with, for a run that gives none."""
    if recorded is None:
        raise UserError(f"no study {study_name!r} in {where}; give --space to create it")
    source = recorded.get(SPACE_SOURCE_STUDY_ATTR) or recorded.get("space")
    if not isinstance(source, str):
        raise UserError(f"study {study_name!r} does not record its space; give --space")
    return source


def resolve_epochs(option: int | None, recorded: dict[str, object] | None, study_name: str) -> int:
    """--epochs as given, else the study's budget (DEFAULT_EPOCHS for a new study); a value that differs from
    the budget is refused: it would mix budgets and change what the pruner compares."""
    budget = (recorded or {}).get(EPOCHS_STUDY_ATTR)
    if option is None:
        return int(budget) if budget is not None else DEFAULT_EPOCHS
    if budget is not None and option != budget:
        raise UserError(
            f"study {study_name!r} trains each trial at most {budget} epochs; leave --epochs out (or pass --epochs {budget}) "
            f"to continue it, or use --study NEW_NAME for a study of {option} epochs"
        )
    return option


def resolve_pruner(option: str | None, recorded: dict[str, object] | None, study_name: str) -> str:
    """--pruner as given, else the study's (PRUNERS[0] for a new study). Rungs and epoch pruning report
    different steps, so a study pruned one way is not continued the other."""
    if recorded is None:
        return option or PRUNERS[0]
    used = str(recorded.get(PRUNER_STUDY_ATTR, LEGACY_PRUNER))
    if option is None:
        return used
    if (option == RUNG_PRUNER) != (used == RUNG_PRUNER):
        raise UserError(
            f"study {study_name!r} was pruned with --pruner {used}; leave --pruner out (or pass --pruner {used}) "
            f"to continue it, or use --study NEW_NAME for a study pruned with {option}"
        )
    return option


def check_can_continue(storage: optuna.storages.BaseStorage, study_name: str, identity: dict[str, object]) -> None:
    """Refuse, before writing anything, to continue a study built on other data, split or space."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return
    recorded = storage.get_study_user_attrs(study_id)
    for key in IDENTITY_ATTRS:
        if key in recorded and recorded[key] != identity[key]:
            if key == "space":
                what = f"space {recorded[key]!r}, not {identity[key]!r}"
            else:
                what = (
                    f"data {str(recorded.get('data_hash'))[:12]} ({recorded.get('data_source')}, split {recorded.get('split')}), "
                    f"not {str(identity['data_hash'])[:12]} ({identity['data_source']}, split {identity['split']})"
                )
            raise UserError(
                f"study {study_name!r} was built on {what}; use --study NEW_NAME for a new study, "
                f"or the same --space/--data/--limit as before"
            )


def open_study(
    name: str,
    storage: optuna.storages.BaseStorage,
    identity: dict[str, object],
    *,
    seed: int,
    pruner: str,
    epochs: int,
    space_option: str,
    sampler: str = SAMPLERS[0],
) -> optuna.Study:
    """Create the study or load it (checked to be on the same space, data and split); records its identity,
    epoch budget and space. The study hands out retries of trials cut short before other queued trials."""
    check_can_continue(storage, name, identity)
    study_sampler, study_pruner = make_sampler(seed, sampler, pruner), make_pruner(pruner, epochs)
    optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=study_sampler,
        pruner=study_pruner,
        load_if_exists=True,
    )
    study = RetriesFirstStudy(study_name=name, storage=storage, sampler=study_sampler, pruner=study_pruner)
    recorded = {
        **identity,
        EPOCHS_STUDY_ATTR: epochs,
        PRUNER_STUDY_ATTR: pruner,
        SPACE_SOURCE_STUDY_ATTR: space_source(space_option),
    }
    for key, value in recorded.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def enqueue_references(study: optuna.Study, space: Space, names: tuple[str, ...] | None = None) -> int:
    """Queue the space's references (only those `names`, in that order, when given) unless already in the study."""
    references = space.references()
    chosen = list(references) if names is None else [name for name in names if name in references]
    for name in chosen:
        study.enqueue_trial(references[name][1], skip_if_exists=True)
    return len(chosen)
