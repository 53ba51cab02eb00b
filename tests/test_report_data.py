"""The report's plain data on synthetic trials; the page and the command's edges without a browser."""

import datetime
import math
import re
from dataclasses import replace

import numpy as np
import optuna
import plotly.offline
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.cli.main import main
from search.report import build
from search.report.build import csv_text
from search.report.data import (
    MIN_TRIALS_FOR_IMPORTANCE,
    best_per_family,
    by_family,
    class_scores,
    compute_seconds,
    confusion_matrix,
    count_states,
    ensemble_data,
    learning_curves,
    misclassified,
    optimization_history,
    parallel_coordinates,
    param_axis,
    param_importances,
    plain_float,
    plotted_params,
    slices,
    study_data,
    trial_points,
    trials_table,
)
from search.report.figures import (
    TRIAL_COLORSCALE,
    accuracy_range,
    accuracy_scatter_figure,
    class_scores_figure,
    curves_figure,
    history_figure,
    importance_figure,
    log_ticks,
    slice_figure,
)
from search.report.page import Report, render_page

LR = FloatDistribution(1e-4, 1e-1, log=True)
WIDTH = IntDistribution(8, 64)
OPTIMIZER = CategoricalDistribution(["adamw", "sgd"])
DEPTH = IntDistribution(1, 3)  # conditional: only "deep" trials have it
START = datetime.datetime(2025, 1, 1)


def trial(
    number,
    state=TrialState.COMPLETE,
    value=None,
    *,
    family="cnn",
    curve=None,
    lr=1e-3,
    width=16,
    optimizer="adamw",
    depth=None,
    seconds=60.0,
    attrs=None,
):
    params = {"train.lr": lr, "cnn.width": width, "train.optimizer": optimizer}
    distributions = {"train.lr": LR, "cnn.width": WIDTH, "train.optimizer": OPTIMIZER}
    if depth is not None:
        params["cnn.depth"], distributions["cnn.depth"] = depth, DEPTH
    if curve is None:
        curve = {1: 0.5, 2: value} if state == TrialState.COMPLETE else {1: 0.4} if state == TrialState.PRUNED else {}
    frozen = create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params=params,
        distributions=distributions,
        user_attrs={"family": family, "params": 1000 * width, "train_seconds": seconds, **(attrs or {})},
        intermediate_values=curve,
    )
    frozen.number = number
    frozen.datetime_start = START + datetime.timedelta(minutes=number)
    frozen.datetime_complete = frozen.datetime_start + datetime.timedelta(seconds=seconds)
    return frozen


@pytest.fixture
def mixed():
    """Three completed, two pruned, one failed."""
    return [
        trial(0, value=0.90, width=8),
        trial(1, TrialState.PRUNED, curve={1: 0.3}),
        trial(2, value=0.95, family="vit", width=32, depth=2),
        trial(3, TrialState.FAIL, attrs={"fail_reason": "FloatingPointError: nan"}),
        trial(4, value=0.93, width=16),
        trial(5, TrialState.PRUNED, curve={1: 0.35, 2: 0.4}),
    ]


def many(n=30, seed=0):
    """n completed trials whose accuracy depends on the learning rate only."""
    rng = np.random.default_rng(seed)
    trials = []
    for number in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        width = int(rng.integers(8, 65))
        value = 0.99 - 0.05 * abs(math.log10(lr) + 2.5)
        trials.append(
            trial(
                number,
                value=value,
                lr=lr,
                width=width,
                optimizer=str(rng.choice(["adamw", "sgd"])),
                depth=int(rng.integers(1, 4)) if number % 2 else None,
            )
        )
    return trials


# ---- per study ---------------------------------------------------------------------------------


def test_states_are_counted(mixed):
    assert count_states(mixed) == {"complete": 3, "pruned": 2, "fail": 1, "running": 0, "waiting": 0}
    assert count_states([]) == {"complete": 0, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}


def test_history_keeps_completed_trials_and_the_best_so_far(mixed):
    history = optimization_history(mixed)
    assert history.numbers == [0, 2, 4]
    assert history.values == [0.90, 0.95, 0.93]
    assert history.best == [0.90, 0.95, 0.95]
    assert history.families == ["cnn", "vit", "cnn"]
    assert optimization_history(mixed, optuna.study.StudyDirection.MINIMIZE).best == [0.90, 0.90, 0.90]
    assert optimization_history([t for t in mixed if t.state != TrialState.COMPLETE]) is None


def test_learning_curves_include_pruned_trials_separated_by_gaps(mixed):
    curves = learning_curves(mixed)
    assert list(curves) == ["complete", "pruned"]  # the failed trial reported nothing
    pruned = curves["pruned"]
    assert pruned.trials == 2
    assert pruned.epochs == [1, None, 1, 2]
    assert pruned.values == [0.3, None, 0.35, 0.4]
    assert pruned.numbers == [1, None, 5, 5]
    assert curves["complete"].trials == 3 and curves["complete"].epochs.count(None) == 2


def test_importances_need_enough_completed_trials():
    assert param_importances(many(MIN_TRIALS_FOR_IMPORTANCE - 1)) is None
    importances = param_importances(many(40))
    assert importances.trials == 40
    assert importances.names[0] == "train.lr"  # the only param the accuracy depends on
    assert "cnn.depth" in importances.names  # conditional params are assessed too
    assert sum(importances.values) == pytest.approx(1.0)
    assert importances.values == sorted(importances.values, reverse=True)


def test_plotted_params_follow_importance_else_frequency(mixed):
    trials = many(40)
    importances = param_importances(trials)
    assert plotted_params(trials, importances, limit=2) == importances.names[:2]
    # without importances: the params most completed trials have, conditional ones last
    assert plotted_params(mixed, None) == ["cnn.width", "train.lr", "train.optimizer", "cnn.depth"]


def test_param_axis_encodes_categories_and_marks_log_scales(mixed):
    done = [t for t in mixed if t.state == TrialState.COMPLETE]
    optimizer = param_axis("train.optimizer", done)
    assert (
        optimizer.values == [0.0, 0.0, 0.0] and optimizer.labels == ["adamw", "sgd"] and optimizer.ticks == [0.0, 1.0]
    )
    assert param_axis("train.lr", done).log and not param_axis("cnn.width", done).log
    assert param_axis("cnn.width", done).values == [8.0, 32.0, 16.0]


def test_parallel_coordinates_use_params_every_completed_trial_has(mixed):
    parallel = parallel_coordinates(mixed, ["cnn.depth", "train.lr", "cnn.width"])
    assert [a.name for a in parallel.axes] == ["train.lr", "cnn.width"]  # cnn.depth is conditional
    assert parallel.objective == [0.90, 0.95, 0.93] and parallel.numbers == [0, 2, 4]
    assert parallel_coordinates(mixed, ["cnn.depth"]) is None


def test_slices_cover_only_trials_that_sampled_the_param(mixed):
    depth, width = slices(mixed, ["cnn.depth", "cnn.width"])
    assert depth.axis.name == "cnn.depth" and depth.numbers == [2] and depth.objective == [0.95]
    assert width.numbers == [0, 2, 4]


def test_a_study_without_completed_trials_says_what_is_missing(mixed):
    unfinished = [t for t in mixed if t.state != TrialState.COMPLETE]
    data = study_data("cnn", {"space": "cnn"}, unfinished)
    assert data.history is None and data.best is None and data.parallel is None and data.slices == []
    assert "no trial has completed yet (2 pruned, 1 fail)" in data.missing["history"]
    assert "digit-search run --study cnn" in data.missing["history"]
    assert "need at least" in data.missing["importances"]
    assert "curves" not in data.missing  # the pruned trials' curves are there

    empty = study_data("new", {}, [])
    assert set(empty.missing) == {"history", "curves", "importances", "parallel", "slices"}
    assert "has no trials yet" in empty.missing["curves"]


def test_study_data_of_a_full_study():
    data = study_data("cnn", {"space": "cnn"}, many(40))
    assert data.missing == {}
    assert data.best == (
        data.history.numbers[data.history.values.index(max(data.history.values))],
        max(data.history.values),
    )
    assert data.parallel.axes[0].name == "train.lr"
    assert len(data.slices) == 4


# ---- across studies ----------------------------------------------------------------------------


def test_points_and_best_per_family(mixed):
    other = [
        trial(0, value=0.97, family="vit", width=64),
        trial(1, value=0.97, family="vit", width=8, attrs={"params": "n/a"}),
    ]
    points = trial_points({"a": mixed, "b": other})
    assert [(p.study, p.number) for p in points] == [("a", 0), ("a", 2), ("a", 4), ("b", 0), ("b", 1)]
    assert points[-1].params is None  # a non-numeric attr is left out, not plotted as 0
    best = best_per_family(points)
    assert [(p.family, p.label, p.value) for p in best] == [("vit", "b#0", 0.97), ("cnn", "a#4", 0.93)]


def test_compute_is_summed_per_state(mixed):
    spent = compute_seconds(mixed)
    assert spent == {"complete": 180.0, "pruned": 120.0, "fail": 60.0}


def test_trials_table_has_every_trial_and_a_column_per_param(mixed):
    table = trials_table({"a": mixed, "none yet": [], "b": [trial(0, value=0.5, width=9)]})
    header = list(table.columns)
    assert header[:4] == ["study", "number", "state", "value"]
    assert header[header.index("fail_reason") + 1] == "pruned_reason"  # today's columns, then the new one
    assert header[-4:] == ["param:cnn.depth", "param:cnn.width", "param:train.lr", "param:train.optimizer"]
    assert len(table) == 7 and list(table["study"]) == ["a"] * 6 + ["b"]
    assert list(table["number"]) == [0, 1, 2, 3, 4, 5, 0]
    failed = table.iloc[3]
    assert failed["state"] == "fail" and failed["fail_reason"] == "FloatingPointError: nan"
    assert table["param:cnn.depth"].isna().tolist() == [True, True, False, True, True, True, True]
    assert table.iloc[2]["param:cnn.depth"] == 2
    assert table.iloc[0]["duration_seconds"] == 60.0 and table.iloc[5]["last_epoch"] == 2
    assert list(trials_table({}).columns) == header[: header.index("pruned_reason") + 1]  # no trials: the header alone


def test_plain_float_drops_float32_noise_and_keeps_float64_digits():
    assert plain_float(float(np.float32(0.7725))) == "0.7725"  # 0.7724999785423279 as stored
    assert plain_float(0.1) == "0.1" and plain_float(0.5) == "0.5"
    assert plain_float(0.0012345678901234) == "0.0012345678901234"  # not a float32: every digit kept
    assert plain_float(1e-7) == "1e-07"


def test_the_trials_csv_prints_plain_numbers_and_the_pruned_reason(mixed):
    noisy = float(np.float32(0.7725))
    trials = [
        trial(0, value=noisy, curve={1: float(np.float32(0.5)), 2: noisy}),
        trial(1, TrialState.PRUNED, attrs={"pruned_reason": "over --trial-timeout 60s: epoch 2 took 75s"}),
        trial(2, value=0.95, depth=3),  # cnn.depth is conditional: a whole number where present, empty elsewhere
    ]
    text = csv_text(trials_table({"cnn": trials}))
    lines = text.splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert "0.7724999785423279" not in text and rows[0]["value"] == "0.7725"
    assert rows[1]["pruned_reason"] == "over --trial-timeout 60s: epoch 2 took 75s" and rows[1]["value"] == ""
    assert [r["param:cnn.depth"] for r in rows] == ["", "", "3"]  # not 3.0
    assert [r["params"] for r in rows] == ["16000"] * 3 and rows[0]["param:train.lr"] == "0.001"


# ---- the ensemble ------------------------------------------------------------------------------


def test_confusion_matrix_and_class_scores():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 1])
    confusion = confusion_matrix(labels, predicted, classes=3)
    assert confusion == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    zero, one, two = class_scores(confusion)
    assert (zero.precision, zero.recall, zero.support) == (1.0, 0.5, 2)
    assert zero.f1 == pytest.approx(2 / 3)
    assert (one.precision, one.recall) == (0.5, 1.0)
    assert two.precision is None and two.recall == 0.0 and two.f1 is None  # never predicted


def test_misclassified_are_the_most_confident_mistakes_first():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1])
    mistakes = misclassified(probs, labels, limit=2)
    assert [(m.index, m.label, m.predicted) for m in mistakes] == [(2, 0, 1), (1, 0, 1)]
    assert mistakes[0].probability == pytest.approx(0.8) and mistakes[0].label_probability == pytest.approx(0.2)
    assert len(misclassified(probs, labels, limit=10)) == 3


def test_ensemble_data_scores_the_validation_probabilities():
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 10
    probs = np.full((20, 10), 0.01)
    probs[np.arange(20), labels] = 0.91
    probs[3] = np.roll(probs[3], 1)  # digit 3 predicted as 4
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    manifest = {
        "created": "2025-01-01T00:00:00+00:00",
        "method": "greedy",
        "tta": False,
        "members": [{"study": "cnn", "trial": 4, "family": "cnn", "weight": 1.0, "val_accuracy": 0.95}],
    }
    data = ensemble_data(manifest, "studies/ensembles/x", probs, labels, images, limit=5)
    assert data.accuracy == pytest.approx(19 / 20) and data.wrong == 1 and data.digits == 20
    assert data.confusion[3][4] == 1
    assert [(m.label, m.predicted) for m in data.mistakes] == [(3, 4)]
    assert np.array_equal(data.mistake_images[0], images[3])
    assert data.members[0].study == "cnn" and data.members[0].weight == 1.0


# ---- figures and page, without a browser -------------------------------------------------------


def test_log_ticks_are_round_and_few():
    assert log_ticks(1e-4, 0.1) == [1e-4, 1e-3, 1e-2, 0.1]
    assert log_ticks(16, 128) == [20, 50, 100]
    assert log_ticks(64, 128) == [64, 100, 128]  # inside one decade: the ends are labelled too
    assert len(log_ticks(1e-6, 1e3)) <= 5


def one_trial_history():
    return optimization_history([trial(0, value=float(np.float32(0.7725)))])


def test_a_one_trial_study_has_sensible_axes():
    history = history_figure(one_trial_history(), {"cnn": "#1f77b4"})
    low, high = history.layout.yaxis.range
    assert 0.7 < low < 0.7725 < high < 0.85  # not -50% to 100%
    left, right = history.layout.xaxis.range
    assert -1 < left < 0 < right < 1 and history.layout.xaxis.dtick == 1  # trial 0 alone: no trial -1 or 0.5 ticks
    curves = curves_figure(learning_curves([trial(0, value=0.9, curve={1: 0.9})]))
    assert curves.layout.xaxis.range[0] > 0 and curves.layout.xaxis.range[1] < 2  # epoch 1 alone
    assert 0.8 < curves.layout.yaxis.range[0] < 0.9 < curves.layout.yaxis.range[1] <= 1.0
    points = trial_points({"a": [trial(0, value=0.9)]})
    scatter = accuracy_scatter_figure(by_family(points), {}, "params", "parameters")
    assert 0.8 < scatter.layout.yaxis.range[0] < 0.9 < scatter.layout.yaxis.range[1] < 1.0


def test_accuracy_ranges_hold_their_points_inside_0_and_1():
    assert accuracy_range([0.2, 0.9]) == pytest.approx([0.13, 0.97])
    assert accuracy_range([0.995, 1.0]) == pytest.approx([0.985, 1.0])  # never above 100%
    assert accuracy_range([0.004]) == pytest.approx([0.0, 0.014])  # never below 0%
    assert accuracy_range([None]) == [0.0, 1.0]
    many_history = history_figure(optimization_history(many(40)), {})
    assert (
        many_history.layout.xaxis.range[0] < 0 < 39 < many_history.layout.xaxis.range[1]
        and many_history.layout.xaxis.dtick is None
    )


def test_per_class_bars_start_at_zero():
    scores = class_scores([[84, 16], [1, 99]])
    assert min(s.recall for s in scores) == 0.84
    assert class_scores_figure(scores).layout.yaxis.range == (0.0, 1.0)


def relative_luminance(color: str) -> float:
    red, green, blue = (int(c) / 255 for c in re.findall(r"\d+", color))
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_slice_markers_of_early_trials_stand_out_on_white():
    figure = slice_figure(slices(many(12), ["train.lr"]))
    marker = figure.data[0].marker
    assert marker.cmin == 0 and 0 in marker.color  # trial 0 is drawn at the scale's low end
    stops = [color for _, color in marker.colorscale]
    assert [position for position, _ in marker.colorscale] == [position for position, _ in TRIAL_COLORSCALE]
    # WCAG's 3:1 for graphics against the white plot, at every stop, the lowest included
    assert all(1.05 / (relative_luminance(color) + 0.05) >= 3 for color in stops)
    assert relative_luminance(stops[0]) > relative_luminance(stops[-1])  # still light to dark: later trials darker
    assert figure.layout.yaxis.range[0] > 0.5  # the accuracy range, not 0% to 100%


def test_importances_are_a_short_card_and_absent_ones_a_line():
    importances = param_importances(many(40))
    short = importance_figure(replace(importances, names=importances.names[:2], values=importances.values[:2]))
    # as tall as its bars, where it used to be 380 px whatever their number
    assert short.layout.height < importance_figure(importances).layout.height < 200
    # one parameter alone leaves nothing to rank: no figure, a reason
    single = [trial(n, value=0.9 + n / 1000, lr=10 ** (-4 + n / 10)) for n in range(12)]
    for t in single:
        t.params = {"train.lr": t.params["train.lr"]}
        t.distributions = {"train.lr": LR}
    data = study_data("lr-only", {}, single)
    assert data.importances is None and data.missing["importances"].startswith("nothing to rank")
    html = page_of({"few": many(MIN_TRIALS_FOR_IMPORTANCE - 1)})
    section = html[html.index('id="study-few"') :]
    assert "<h3>Hyperparameter importances</h3>" not in section  # no card as tall as the slice plot beside it
    assert re.search(
        r'<div class="absent note"><ul><li><b>Hyperparameter importances</b>: parameter importances need at least',
        section,
    )


def page_of(trials_by_study, ensemble=None) -> str:
    studies = [study_data(name, {"space": name}, trials) for name, trials in trials_by_study.items()]
    return render_page(
        Report(
            "2025-01-01 00:00:00 UTC",
            "sqlite:///x.db",
            studies,
            trial_points(trials_by_study),
            {n: compute_seconds(t) for n, t in trials_by_study.items()},
            ensemble,
            "no saved ensemble of these studies",
            "trials.csv",
        )
    )


def test_the_page_is_self_contained_with_one_div_per_figure(mixed):
    rng = np.random.default_rng(0)
    labels = np.arange(30) % 10
    probs = rng.dirichlet(np.ones(10), size=30)
    manifest = {
        "created": "now",
        "method": "greedy",
        "members": [{"study": "a", "trial": 0, "family": "cnn", "weight": 1.0}],
    }
    ensemble = ensemble_data(
        manifest, "dir", probs, labels, rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), limit=8
    )
    html = page_of({"a": many(40), "b": mixed}, ensemble)
    plotly_js = plotly.offline.get_plotlyjs()
    assert html.count(plotly_js) == 1  # inlined once, in the head
    rest = html.replace(plotly_js, "")
    assert not re.search(r"<script[^>]+src=|<link|https?://", rest)  # nothing to fetch
    ids = re.findall(r'<div id="(figure-\d+)" class="plotly-graph-div"', html)
    # across studies 5, ensemble 2, study a 5, study b 4 (too few trials for importances)
    assert len(ids) == len(set(ids)) == 16
    assert rest.count("data:image/png;base64,") == 8  # the gallery
    assert "parameter importances need at least" in html


def test_a_page_of_studies_without_completed_trials_renders_notes(mixed):
    html = page_of({"new": [], "stuck": [t for t in mixed if t.state != TrialState.COMPLETE]})
    assert "no study has a completed trial yet" in html
    assert "has no trials yet" in html and "no trial has completed yet" in html
    assert "no saved ensemble of these studies" in html
    # a study without trials: one line for the five figures, not five cards saying the same
    new = html[html.index('id="study-new"') : html.index('id="study-stuck"')]
    assert new.count("has no trials yet") == 1 and "<h3>" not in new
    assert (
        "<b>Optimisation history, Learning curves, Parallel coordinates, Hyperparameter importances, Slice plot</b>"
        in new
    )


# ---- the command's edges: one line, exit 2 -----------------------------------------------------


@pytest.fixture
def database(tmp_path, mixed):
    url = f"sqlite:///{tmp_path}/studies.db"
    for name, trials in (("cnn", mixed), ("empty", [])):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.set_user_attr("space", name)
        study.add_trials(trials)
    return url


def test_report_writes_the_page_and_the_csv(database, tmp_path, capsys):
    out = tmp_path / "reports"
    assert main(["report", "--storage", database, "--out", str(out)]) == 0
    page, table = sorted(out.glob("report-*.html")), sorted(out.glob("trials-*.csv"))
    assert len(page) == len(table) == 1
    assert str(page[0]) in capsys.readouterr().out
    html = page[0].read_text(encoding="utf-8")
    assert "Study cnn" in html and "Study empty" in html and "has no trials yet" in html
    assert table[0].read_text(encoding="utf-8").count("\n") == 1 + 6
    assert not list(out.glob(".*"))  # no staging file left behind
    assert oct(page[0].stat().st_mode & 0o777) == oct(0o644)  # written by search.io, readable by others


@pytest.mark.parametrize(
    "args, message",
    [
        (["--studies", "cnn,nope"], "no study 'nope' in sqlite:///"),
        (["--storage", "nonsense"], "is not a database URL"),
        (["--storage", "sqlite:////nonexistent/x.db"], "no such database file"),
        (["--out", "FILE"], "is a file"),
        (["--out", "FILE/reports"], "cannot create it"),
        (["--ensemble", "NOWHERE"], "no readable manifest.json"),
    ],
)
def test_report_errors_are_one_line_with_exit_2(database, tmp_path, capsys, args, message):
    (tmp_path / "a-file").write_text("x")
    args = [a.replace("FILE", str(tmp_path / "a-file")).replace("NOWHERE", str(tmp_path / "nowhere")) for a in args]
    if "--storage" not in args:
        args += ["--storage", database]
    assert (
        main(["report", "--out", str(tmp_path / "reports"), *args] if "--out" not in args else ["report", *args]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("digit-search report: error: ") and message in err
    assert not (tmp_path / "reports").exists()  # a failed report leaves no empty folder behind


def test_a_report_that_fails_while_writing_removes_what_it_wrote_and_created(database, tmp_path, capsys, monkeypatch):
    written = []

    def full_disk(path, text):
        if str(path).endswith(".html"):
            raise OSError(28, "No space left on device")
        written.append(path)
        return original(path, text)

    original = build.write_text
    monkeypatch.setattr(build, "write_text", full_disk)
    out = tmp_path / "new" / "reports"
    assert main(["report", "--storage", database, "--out", str(out)]) == 2
    assert "cannot write the report (No space left on device)" in capsys.readouterr().err
    assert len(written) == 1 and not written[0].exists()  # the CSV went too
    assert not (tmp_path / "new").exists()  # and both folders this run created
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["report", "--storage", database, "--out", str(kept)]) == 2
    assert kept.is_dir() and list(kept.iterdir()) == []  # a folder that was there stays


def test_dashboard_spec_checks_its_options():
    from search.config import DashboardSpec
    from search.errors import UserError
    from search.report.dashboard import serve_dashboard

    assert DashboardSpec().host == "127.0.0.1"
    with pytest.raises(UserError, match="^port must be between 1 and 65535"):
        DashboardSpec(port=70000)
    with pytest.raises(UserError, match="not a database URL"):
        serve_dashboard(DashboardSpec(storage="nonsense"))
