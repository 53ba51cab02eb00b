"""The public Python API as a notebook uses it: nothing but `import search`."""

import io
import warnings

import numpy as np
import optuna
import pytest

import search


def optuna_filters() -> list:
    """The warning filters that concern Optuna's experimental features and heartbeats."""
    return [f for f in warnings.filters if f[2] is optuna.exceptions.ExperimentalWarning or "Heartbeat" in str(f[1])]


def test_a_notebook_runs_a_study_builds_an_ensemble_submits_and_predicts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default studies/ folder goes here
    log = io.StringIO()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    filters = optuna_filters()
    summary = search.run_study("cnn", trials=3, epochs=1, limit=300, threads=1, log=log)
    # the call quiets Optuna while it runs, not for the rest of the notebook
    assert optuna.logging.get_verbosity() == optuna.logging.INFO and optuna_filters() == filters
    assert isinstance(summary, search.RunSummary) and summary.counts.get("complete", 0) >= 1
    assert "study 'cnn'" in log.getvalue()

    ensemble = search.build_ensemble("cnn", limit=300, top=3, log=log)
    assert isinstance(ensemble, search.BuiltEnsemble) and 0.1 < ensemble.val_accuracy <= 1
    assert not (tmp_path / "submission.csv").exists()  # building writes nothing
    folder = ensemble.save()
    csv_path, _ = ensemble.write_submission("submission.csv")
    submitted = np.loadtxt(csv_path, delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
    assert len(submitted) == 1000  # the embedded sample's test digits

    loaded = search.load_ensemble()  # the newest saved ensemble: the one just saved
    assert loaded.directory.resolve() == folder.resolve()
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[:, 4:24, 13:15] = 255  # a vertical stroke
    digits = loaded.predict(images)
    assert digits.shape == (4,) and digits.dtype.kind == "i" and len(set(digits.tolist())) == 1
    np.testing.assert_allclose(loaded.predict_proba(images).sum(axis=1), 1, atol=1e-5)


def test_api_errors_name_the_argument_not_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(search.UserError, match="^trials must be at least 1, got 0$"):
        search.run_study("cnn", trials=0)
    with pytest.raises(search.UserError, match="^data directory .* does not exist"):
        search.run_study("cnn", data_dir=str(tmp_path / "missing"), log=io.StringIO())
    with pytest.raises(search.UserError, match="^budget 'soon' is not a duration"):
        search.run_auto(budget="soon")
    assert not (tmp_path / "studies").exists()


def test_dir_lists_the_api_for_tab_completion_and_nothing_of_the_modules_plumbing():
    listed = dir(search)
    assert {"run_study", "run_auto", "build_ensemble", "load_ensemble", "RunSummary", "UserError"} <= set(listed)
    assert set(search.__all__) <= set(listed)
    assert not {"annotations", "importlib"} & set(listed)
