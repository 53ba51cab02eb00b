"""Opening a study: its sampler and pruner, the identity it must keep, and its reference trials."""

from __future__ import annotations

import optuna

from search.errors import UserError
from search.train.prepared import PreparedData
from spaces import Space

# Study attrs that must match for a run to continue a study.
IDENTITY_ATTRS = ("space", "data_hash", "split")
TPE_STARTUP_TRIALS = 10


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # Multivariate TPE over conditional spaces (group) with constant liar for parallel workers.
    return optuna.samplers.TPESampler(seed=seed, group=True, constant_liar=True, n_startup_trials=TPE_STARTUP_TRIALS)


def study_identity(space: Space, prepared: PreparedData) -> dict[str, object]:
    return {"space": space.name, **prepared.study_attrs()}


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
) -> optuna.Study:
    """Create the study or load it (checked to be on the same space, data and split); records its identity."""
    check_can_continue(storage, name, identity)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(seed),
        pruner=make_pruner(pruner, epochs),
        load_if_exists=True,
    )
    for key, value in identity.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def enqueue_references(study: optuna.Study, space: Space) -> int:
    references = space.references()
    for _, params in references.values():
        study.enqueue_trial(params, skip_if_exists=True)
    return len(references)
