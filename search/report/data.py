"""The report's plain data: pure functions from FrozenTrials and arrays to lists and numbers.

Nothing here draws or touches the storage. `report_figures` draws what these functions return,
and the tests check them directly. Every function takes the trials already loaded (once per
study), so a study of thousands of trials is read once.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.config import NUM_CLASSES
from search.study.states import STATES, count_states, state_name
from search.study.trial_attrs import FAIL_REASON_ATTR, PRUNED_REASON_ATTR

# PED-ANOVA compares the best trials against all; with fewer it has nothing to compare.
MIN_TRIALS_FOR_IMPORTANCE = 10
MAX_PLOTTED_PARAMS = 8


def completed(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials with a finite value (the only ones with an accuracy to show)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]


# ---- per study ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """Completed trials in order, and the best value reached by each point."""

    numbers: list[int]
    values: list[float]
    best: list[float]
    families: list[str]


def optimization_history(
    trials: list[FrozenTrial], direction: StudyDirection = StudyDirection.MAXIMIZE
) -> History | None:
    """The optimisation history of a study; None when no trial completed."""
    done = sorted(completed(trials), key=lambda t: t.number)
    if not done:
        return None
    pick = max if direction == StudyDirection.MAXIMIZE else min
    best, running = [], None
    for trial in done:
        running = trial.value if running is None else pick(running, trial.value)
        best.append(running)
    return History(
        numbers=[t.number for t in done],
        values=[t.value for t in done],
        best=best,
        families=[family_of(t) for t in done],
    )


@dataclass(frozen=True)
class Curves:
    """Learning curves of every trial in one state as one polyline; None separates trials.

    One polyline per state keeps thousands of trials one trace each, which a browser draws fast.
    """

    epochs: list[int | None]
    values: list[float | None]
    numbers: list[int | None]
    trials: int


def learning_curves(trials: list[FrozenTrial]) -> dict[str, Curves]:
    """Per state (complete, pruned, ...), the validation accuracy each trial reported per epoch."""
    parts: dict[str, tuple[list, list, list]] = {}
    counts: Counter[str] = Counter()
    for trial in sorted(trials, key=lambda t: t.number):
        steps = sorted(trial.intermediate_values.items())
        if not steps:
            continue
        state = state_name(trial.state)
        epochs, values, numbers = parts.setdefault(state, ([], [], []))
        if counts[state]:
            epochs.append(None), values.append(None), numbers.append(None)
        for epoch, value in steps:
            epochs.append(epoch)
            values.append(value)
            numbers.append(trial.number)
        counts[state] += 1
    ordered = sorted(parts, key=lambda s: STATES.index(s) if s in STATES else len(STATES))
    return {state: Curves(*parts[state], trials=counts[state]) for state in ordered}


@dataclass(frozen=True)
class Importances:
    """Parameter importances (PED-ANOVA, normalised to sum 1), most important first."""

    names: list[str]
    values: list[float]
    trials: int


def param_importances(
    trials: list[FrozenTrial], direction: StudyDirection = StudyDirection.MAXIMIZE
) -> Importances | None:
    """Importances over the completed trials, conditional params included; None with too few trials."""
    done = completed(trials)
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    # The evaluator wants a Study; an in-memory copy avoids reading the database a second time.
    study = optuna.create_study(direction=direction, storage=optuna.storages.InMemoryStorage())
    study.add_trials(done)
    # The default top 10% is too few trials to estimate a density from in a small study.
    quantile = min(0.5, max(0.1, 3 / len(done)))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    with warnings.catch_warnings():  # "too few trials in a regime" for rare conditional params
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    if len(found) < 2:  # one parameter is trivially all the importance: nothing to rank
        return None
    return Importances(names=list(found), values=[float(v) for v in found.values()], trials=len(done))


def plotted_params(
    trials: list[FrozenTrial], importances: Importances | None, limit: int = MAX_PLOTTED_PARAMS
) -> list[str]:
    """The params worth a plot: the most important, else the most often sampled, at most `limit`."""
    done = completed(trials)
    frequency = Counter(name for t in done for name in t.params)
    if importances is not None:
        ranked = [name for name in importances.names if name in frequency]
    else:
        ranked = [name for name, _ in sorted(frequency.items(), key=lambda item: (-item[1], item[0]))]
    return ranked[:limit]


@dataclass(frozen=True)
class Axis:
    """One param's values as numbers; categorical choices become indices with their labels."""

    name: str
    values: list[float]
    log: bool = False
    ticks: list[float] | None = None
    labels: list[str] | None = None


def param_axis(name: str, trials: list[FrozenTrial]) -> Axis:
    """The values of param `name` in `trials` (all of which must have it), as plottable numbers."""
    distribution = next(t.distributions[name] for t in trials)
    if isinstance(distribution, CategoricalDistribution):
        labels = [str(choice) for choice in distribution.choices]
        index = {label: i for i, label in enumerate(labels)}
        return Axis(
            name,
            [float(index[str(t.params[name])]) for t in trials],
            ticks=[float(i) for i in range(len(labels))],
            labels=labels,
        )
    log = isinstance(distribution, (FloatDistribution, IntDistribution)) and distribution.log
    return Axis(name, [float(t.params[name]) for t in trials], log=log)


@dataclass(frozen=True)
class Parallel:
    """Completed trials across the params every one of them has, with their objective."""

    axes: list[Axis]
    objective: list[float]
    numbers: list[int]


def parallel_coordinates(trials: list[FrozenTrial], params: list[str]) -> Parallel | None:
    """Parallel coordinates over those of `params` that every completed trial has; None if none."""
    done = completed(trials)
    shared = [name for name in params if done and all(name in t.params for t in done)]
    if not shared:
        return None
    return Parallel(
        axes=[param_axis(name, done) for name in shared],
        objective=[t.value for t in done],
        numbers=[t.number for t in done],
    )


@dataclass(frozen=True)
class Slice:
    """The objective against one param, over the completed trials that sampled it."""

    axis: Axis
    objective: list[float]
    numbers: list[int]


def slices(trials: list[FrozenTrial], params: list[str]) -> list[Slice]:
    """One slice per param, in the order given."""
    done = completed(trials)
    found = []
    for name in params:
        having = [t for t in done if name in t.params]
        if having:
            found.append(Slice(param_axis(name, having), [t.value for t in having], [t.number for t in having]))
    return found


@dataclass(frozen=True)
class StudyData:
    """Everything the report shows about one study; a None part has its reason in `missing`."""

    name: str
    attrs: dict[str, Any]
    counts: dict[str, int]
    history: History | None
    curves: dict[str, Curves]
    importances: Importances | None
    parallel: Parallel | None
    slices: list[Slice]
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> tuple[int, float] | None:
        """(trial number, value) of the best completed trial."""
        if self.history is None:
            return None
        index = self.history.values.index(self.history.best[-1])
        return self.history.numbers[index], self.history.values[index]


def study_data(
    name: str, attrs: dict[str, Any], trials: list[FrozenTrial], direction: StudyDirection = StudyDirection.MAXIMIZE
) -> StudyData:
    """Collect every per-study figure's data, and say what is missing and why."""
    counts = count_states(trials)
    history = optimization_history(trials, direction)
    curves = learning_curves(trials)
    importances = param_importances(trials, direction)
    params = plotted_params(trials, importances)
    data = StudyData(
        name=name,
        attrs=dict(attrs),
        counts=counts,
        history=history,
        curves=curves,
        importances=importances,
        parallel=parallel_coordinates(trials, params),
        slices=slices(trials, params),
    )
    return replace(data, missing=missing_parts(data, trials))


def missing_parts(data: StudyData, trials: list[FrozenTrial]) -> dict[str, str]:
    """Figure name -> one sentence saying why it is empty and what would fill it."""
    run_more = f"run digit-search run --study {data.name} (with more --trials)"
    if not trials:
        reason = f"study {data.name!r} has no trials yet; {run_more}"
        return {part: reason for part in ("history", "curves", "importances", "parallel", "slices")}
    missing = {}
    done = data.counts["complete"]
    if data.history is None:
        others = ", ".join(f"{n} {state}" for state, n in data.counts.items() if n)
        missing["history"] = f"no trial has completed yet ({others}); {run_more}"
    if not data.curves:
        missing["curves"] = "no trial has reported a validation accuracy for an epoch yet"
    if data.importances is None:
        if done < MIN_TRIALS_FOR_IMPORTANCE:
            missing["importances"] = (
                f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials, the study has {done}; {run_more}"
            )
        else:
            varied = sorted({name for t in completed(trials) for name in t.params})
            missing["importances"] = (
                f"nothing to rank: importances compare parameters, and the completed trials have {len(varied)} ({', '.join(varied) or 'none'})"
            )
    if data.parallel is None:
        missing["parallel"] = (
            "parallel coordinates need a completed trial with parameters" if done else missing["history"]
        )
    if not data.slices:
        missing["slices"] = "slice plots need a completed trial with parameters" if done else missing["history"]
    return missing


# ---- across studies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialPoint:
    """A completed trial as the cross-study figures see it."""

    study: str
    number: int
    family: str
    value: float
    params: int | None  # parameter count
    train_seconds: float | None

    @property
    def label(self) -> str:
        return f"{self.study}#{self.number}"


def family_of(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get("family", "?"))


def _number_attr(trial: FrozenTrial, key: str) -> float | None:
    value = trial.user_attrs.get(key)
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def trial_points(trials_by_study: dict[str, list[FrozenTrial]]) -> list[TrialPoint]:
    """Every completed trial of every study."""
    points = []
    for study, trials in trials_by_study.items():
        for trial in completed(trials):
            count = _number_attr(trial, "params")
            points.append(
                TrialPoint(
                    study,
                    trial.number,
                    family_of(trial),
                    float(trial.value),
                    None if count is None else int(count),
                    _number_attr(trial, "train_seconds"),
                )
            )
    return points


def best_by(points: list[TrialPoint], key: Callable[[TrialPoint], str]) -> list[TrialPoint]:
    """The best completed trial of each group (`key`: its family, its study), best first; ties: fewer known parameters, then name."""

    def rank(point: TrialPoint) -> tuple[float, float]:
        return point.value, -(point.params if point.params is not None else math.inf)

    best: dict[str, TrialPoint] = {}
    for point in points:
        current = best.get(key(point))
        if current is None or rank(point) > rank(current):
            best[key(point)] = point
    return sorted(best.values(), key=lambda p: (tuple(-r for r in rank(p)), key(p)))


def best_per_family(points: list[TrialPoint]) -> list[TrialPoint]:
    """The best completed trial of each family, best family first (ties: fewer known parameters)."""
    return best_by(points, lambda p: p.family)


def count_text(params: int | None) -> str:
    """A parameter count as people read it: 84.2k, 1.23M, ? when unknown."""
    if params is None:
        return "?"
    return f"{params / 1e6:.2f}M" if params >= 1e6 else f"{params / 1e3:.1f}k"


def by_family(points: list[TrialPoint]) -> dict[str, list[TrialPoint]]:
    """Points grouped by family, families in name order."""
    groups: dict[str, list[TrialPoint]] = {}
    for point in sorted(points, key=lambda p: p.family):
        groups.setdefault(point.family, []).append(point)
    return groups


def compute_seconds(trials: list[FrozenTrial]) -> dict[str, float]:
    """Wall-clock seconds the finished trials took, summed per state (complete, pruned, fail)."""
    spent = {state: 0.0 for state in ("complete", "pruned", "fail")}
    for trial in trials:
        state = state_name(trial.state)
        if state in spent and trial.datetime_start is not None and trial.datetime_complete is not None:
            spent[state] += (trial.datetime_complete - trial.datetime_start).total_seconds()
    return spent


# ---- the trials table --------------------------------------------------------------------------

# CSV column -> the trials_dataframe() column it comes from; `param:NAME` columns follow these.
TABLE_COLUMNS = {
    "study": "study",  # added per study
    "number": "number",
    "state": "state",
    "value": "value",
    "family": "user_attrs_family",
    "params": "user_attrs_params",
    "train_seconds": "user_attrs_train_seconds",
    "images_per_second": "user_attrs_images_per_second",
    "duration_seconds": "duration",
    "last_epoch": "last_step",
    "device": "user_attrs_device",
    "hostname": "user_attrs_hostname",
    "seed": "user_attrs_seed",
    "fail_reason": f"user_attrs_{FAIL_REASON_ATTR}",
    "pruned_reason": f"user_attrs_{PRUNED_REASON_ATTR}",
}
_FRAME_ATTRS = ("number", "state", "value", "duration", "last_step", "user_attrs", "params")
_STATE_NAMES = {state.name: state_name(state) for state in TrialState}


def trials_table(trials_by_study: dict[str, list[FrozenTrial]]) -> pd.DataFrame:
    """Every trial of every study, one row each, from Optuna's trials_dataframe(); a `param:NAME` column per param.

    Whole-number columns (counts, seeds, int params missing from some trials) are integers, not 3.0.
    """
    frames = [_study_frame(study, trials) for study, trials in trials_by_study.items() if trials]
    params = sorted({column for frame in frames for column in frame.columns if column.startswith("params_")})
    columns = {**TABLE_COLUMNS, **{f"param:{c.removeprefix('params_')}": c for c in params}}
    if not frames:
        return pd.DataFrame(columns=list(columns))
    table = pd.concat(frames, ignore_index=True).reindex(columns=list(columns.values()))
    table.columns = list(columns)
    return table.convert_dtypes()


def _study_frame(study: str, trials: list[FrozenTrial]) -> pd.DataFrame:
    """One study's trials as the table's columns, from the dataframe Optuna builds."""
    ordered = sorted(trials, key=lambda t: t.number)
    # trials_dataframe() belongs to a Study: an in-memory one holding the trials already read keeps
    # the database from being read twice, and the table to the page's snapshot.
    holder = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    holder.add_trials(ordered)
    frame = holder.trials_dataframe(attrs=_FRAME_ATTRS)
    frame["number"] = [t.number for t in ordered]  # add_trials numbers them afresh
    frame["study"] = study
    frame["state"] = frame["state"].map(_STATE_NAMES)
    frame["duration"] = pd.to_timedelta(frame["duration"]).dt.total_seconds().round(3)
    return frame


def plain_float(value: float) -> str:
    """A float for a CSV cell, without the noise of float32 arithmetic: 0.7725, not 0.7724999785423279.

    A value that is exactly a float32 (as accuracies computed in float32 are) prints as the shortest
    text that reads back as that float32; any other as the shortest that reads back as itself.
    """
    value = float(value)
    single = np.float32(value)
    return repr(float(str(single))) if math.isfinite(value) and float(single) == value else repr(value)


# ---- the ensemble ------------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = NUM_CLASSES) -> list[list[int]]:
    """counts[true][predicted]."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predicted)), 1)
    return counts.tolist()


@dataclass(frozen=True)
class ClassScore:
    digit: int
    precision: float | None  # None: the class was never predicted
    recall: float | None  # None: the class has no validation example
    f1: float | None
    support: int


def class_scores(confusion: list[list[int]]) -> list[ClassScore]:
    """Precision, recall and F1 of each class from a confusion matrix (rows: true class)."""
    counts = np.asarray(confusion)
    scores = []
    for digit in range(len(counts)):
        hit, predicted, actual = int(counts[digit, digit]), int(counts[:, digit].sum()), int(counts[digit].sum())
        precision = hit / predicted if predicted else None
        recall = hit / actual if actual else None
        if precision is None or recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(ClassScore(digit, precision, recall, f1, actual))
    return scores


@dataclass(frozen=True)
class Mistake:
    """A misclassified validation digit."""

    index: int  # row in the validation split
    label: int
    predicted: int
    probability: float  # of the predicted class
    label_probability: float  # of the true class


def misclassified(probs: np.ndarray, labels: np.ndarray, limit: int) -> list[Mistake]:
    """The `limit` most confident mistakes, most confident first."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:limit]
    return [
        Mistake(int(i), int(labels[i]), int(predicted[i]), float(probs[i, predicted[i]]), float(probs[i, labels[i]]))
        for i in order
    ]


@dataclass(frozen=True)
class EnsembleMember:
    study: str
    trial: int
    family: str
    weight: float
    val_accuracy: float | None


@dataclass(frozen=True)
class EnsembleData:
    """The most recent saved ensemble of the reported studies, scored on the validation split."""

    directory: str
    created: str
    method: str
    tta: bool
    members: list[EnsembleMember]
    accuracy: float
    digits: int
    confusion: list[list[int]]
    scores: list[ClassScore]
    mistakes: list[Mistake]
    mistake_images: list[np.ndarray]  # (28, 28) uint8, one per mistake
    wrong: int  # all misclassified digits, not only those shown


def ensemble_data(
    manifest: dict[str, Any], directory: str, probs: np.ndarray, labels: np.ndarray, images: np.ndarray, limit: int
) -> EnsembleData:
    """Score the ensemble's validation probabilities (N, 10) against the labels."""
    labels = np.asarray(labels)
    predicted = np.asarray(probs).argmax(axis=1)
    confusion = confusion_matrix(labels, predicted)
    mistakes = misclassified(probs, labels, limit)
    members = [
        EnsembleMember(
            str(m.get("study")),
            int(m.get("trial", -1)),
            str(m.get("family", "?")),
            float(m.get("weight", 0.0)),
            m.get("val_accuracy"),
        )
        for m in manifest.get("members", [])
    ]
    return EnsembleData(
        directory=directory,
        created=str(manifest.get("created", "")),
        method=str(manifest.get("method", "?")),
        tta=bool(manifest.get("tta", False)),
        members=members,
        accuracy=float(np.mean(predicted == labels)) if len(labels) else float("nan"),
        digits=int(len(labels)),
        confusion=confusion,
        scores=class_scores(confusion),
        mistakes=mistakes,
        mistake_images=[np.asarray(images[m.index], dtype=np.uint8).reshape(28, 28) for m in mistakes],
        wrong=int(np.sum(predicted != labels)),
    )
