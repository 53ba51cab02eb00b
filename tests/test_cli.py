"""End to end through the CLI on the embedded data with a temporary SQLite file."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from search.cli.main import COMMANDS, main
from search.cli.parser import build_parser
from search.study.artifacts import ARTIFACT_ATTR, load_probabilities, load_weights, open_artifact_store
from search.study.trial_attrs import PRUNED_REASON_ATTR
from search.train.prepared import prepare_data
from search.train.trainer import predict_proba
from spaces import load_space

FIXTURES = Path(__file__).parent / "fixtures"
SMOKE = ["--limit", "300", "--epochs", "3", "--seed", "0"]


def run_cli(*args: str) -> int:
    return main([str(arg) for arg in args])


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.fixture(scope="module")
def cnn_study(tmp_path_factory):
    """One 8-trial cnn study shared by the tests that only read it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cnn')}/studies.db"
    assert run_cli("run", "--space", "cnn", "--trials", 8, "--storage", url, "--pruner", "hyperband", *SMOKE) == 0
    return url, optuna.load_study(study_name="cnn", storage=url)


@pytest.mark.slow
def test_run_ends_with_n_complete_or_pruned_trials(cnn_study):
    _, study = cnn_study
    states = [t.state for t in study.get_trials()]
    assert len(finished(study)) == 8
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states
    assert TrialState.RUNNING not in states
    assert study.user_attrs["space"] == "cnn" and study.user_attrs["data_hash"]


@pytest.mark.slow
def test_references_run_first_and_trials_record_their_context(cnn_study):
    _, study = cnn_study
    references = load_space("cnn").references()
    first = study.get_trials()[: len(references)]
    assert [t.params for t in first] == [params for _, params in references.values()]
    for trial in finished(study):
        attrs = trial.user_attrs
        for key in (
            "family",
            "params",
            "images_per_second",
            "train_seconds",
            "device",
            "hostname",
            "pid",
            "seed",
            "data_hash",
        ):
            assert key in attrs, key
        assert attrs["family"] == "cnn" and attrs["params"] > 0 and attrs["images_per_second"] > 0
        assert attrs["data_hash"] == study.user_attrs["data_hash"]


@pytest.mark.slow
def test_stored_weights_reproduce_stored_validation_probabilities(cnn_study):
    url, study = cnn_study
    store = open_artifact_store(Path(url.removeprefix("sqlite:///")).parent / "artifacts")
    prepared = prepare_data(None, limit=300, val_fraction=0.1, split_seed=0, device=torch.device("cpu"))
    space = load_space("cnn")
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete[:2]:
        ids = trial.user_attrs[ARTIFACT_ATTR]
        state, metadata = load_weights(store, ids["weights"])
        assert metadata["params"] == trial.params
        model = space.build(space.candidate_from_params(trial.params))
        model.load_state_dict(state)
        model.eval()
        stored_val = load_probabilities(store, ids["val_probs"])
        stored_test = load_probabilities(store, ids["test_probs"])
        assert stored_val.shape == (len(prepared.split.val_index), 10)
        assert stored_test.shape == (len(prepared.digits.test_images), 10)
        recomputed = predict_proba(model, prepared.tensors.val_images)
        np.testing.assert_allclose(recomputed, stored_val, atol=1e-4)
        accuracy = (stored_val.argmax(1) == prepared.tensors.val_labels.numpy()).mean()
        assert accuracy == pytest.approx(trial.value)


@pytest.mark.slow
def test_running_again_continues_up_to_n_not_n_more(sqlite_url):
    args = ["run", "--space", "cnn", "--storage", sqlite_url, "--no-reference", *SMOKE]
    assert run_cli(*args, "--trials", 2) == 0
    assert run_cli(*args, "--trials", 3) == 0
    study = optuna.load_study(study_name="cnn", storage=sqlite_url)
    assert len(finished(study)) == 3
    assert run_cli(*args, "--trials", 3) == 0
    assert len(study.get_trials()) == 3


def test_study_refuses_other_data(sqlite_url, capsys):
    space_file = FIXTURES / "nan_space.py"
    assert (
        run_cli(
            "run",
            "--space",
            space_file,
            "--study",
            "s",
            "--storage",
            sqlite_url,
            "--trials",
            1,
            "--epochs",
            1,
            "--limit",
            200,
        )
        == 0
    )
    before = len(optuna.load_study(study_name="s", storage=sqlite_url).get_trials())
    code = run_cli(
        "run",
        "--space",
        space_file,
        "--study",
        "s",
        "--storage",
        sqlite_url,
        "--trials",
        2,
        "--epochs",
        1,
        "--limit",
        300,
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "study 's' was built on data" in err and "--study NEW_NAME" in err and "\n" not in err
    assert len(optuna.load_study(study_name="s", storage=sqlite_url).get_trials()) == before


def test_a_diverging_trial_fails_alone_and_the_study_goes_on(sqlite_url):
    space_file = FIXTURES / "nan_space.py"
    assert (
        run_cli("run", "--space", space_file, "--storage", sqlite_url, "--trials", 1, "--epochs", 1, "--limit", 200)
        == 0
    )
    trials = optuna.load_study(study_name="nan_space", storage=sqlite_url).get_trials()
    assert [t.state for t in trials[:2]] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "Diverged" in trials[0].user_attrs["fail_reason"]


def test_a_trial_over_its_time_limit_is_pruned_saying_so(sqlite_url):
    args = ["--storage", sqlite_url, "--trials", 2, "--pruner", "none", "--no-reference", *SMOKE]
    assert run_cli("run", "--space", "cnn", "--study", "capped", "--trial-timeout", 0.001, *args) == 0
    capped = optuna.load_study(study_name="capped", storage=sqlite_url).get_trials()
    assert [t.state for t in capped] == [TrialState.PRUNED] * 2
    # a fast machine may finish this tiny first epoch (a single step) inside the limit; the reason still names a step
    assert all(
        t.user_attrs[PRUNED_REASON_ATTR].startswith("over --trial-timeout 0.001s: stopped before step") for t in capped
    )
    assert run_cli("run", "--space", "cnn", "--study", "uncapped", "--trial-timeout", 3600, *args) == 0
    uncapped = optuna.load_study(study_name="uncapped", storage=sqlite_url).get_trials()
    assert [t.state for t in uncapped] == [TrialState.COMPLETE] * 2
    assert not [t for t in uncapped if PRUNED_REASON_ATTR in t.user_attrs]


def test_train_reference_prints_one_json_line(capsys):
    assert run_cli("train", "--space", "cnn", "--reference", "bn-cnn", "--json", "--limit", "300", "--epochs", 1) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert 0 <= result["val_accuracy"] <= 1 and result["images_per_second"] > 0 and result["seconds"] > 0
    assert result["family"] == "cnn" and len(result["history"]) == 1


def test_train_a_stored_trial_reproduces_its_accuracy(sqlite_url, capsys):
    space_file = FIXTURES / "nan_space.py"
    assert (
        run_cli("run", "--space", space_file, "--storage", sqlite_url, "--trials", 1, "--epochs", 1, "--limit", 200)
        == 0
    )
    stored = optuna.load_study(study_name="nan_space", storage=sqlite_url).best_trial
    capsys.readouterr()
    code = run_cli(
        "train",
        "--space",
        space_file,
        "--trial",
        f"nan_space:{stored.number}",
        "--storage",
        sqlite_url,
        "--json",
        "--epochs",
        1,
        "--limit",
        200,
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["val_accuracy"] == pytest.approx(stored.value)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--space", "nope"], "unknown space"),
        (["run", "--space", "cnn", "--storage", "not a url"], "not a database URL"),
        (["run", "--space", "cnn", "--storage", "sqlite://"], "in-memory"),
        (["run", "--space", "cnn", "--data", "/nonexistent/dir"], "/nonexistent/dir"),
        (["run", "--space", "cnn", "--trials", "0"], "--trials"),
        (["run", "--space", "cnn", "--trial-timeout", "0"], "--trial-timeout must be positive"),
        (["train", "--space", "cnn", "--reference", "nope"], "--reference 'nope'"),
        (["train", "--space", "cnn", "--trial", "nocolon"], "STUDY:NUMBER"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the checkout
    proc = subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected.lower() in lines[0].lower(), proc.stderr
    assert not (tmp_path / "studies" / "digit-search.db").exists()


def test_every_option_of_every_subcommand_reaches_its_record_and_api_function():
    """An option whose dest is not a field of the record would be dropped silently by spec_kwargs."""
    import inspect

    import search.api

    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(subcommands) == set(COMMANDS)
    for name, subparser in subcommands.items():
        spec_type, function_name = COMMANDS[name]
        fields = {f.name for f in dataclasses.fields(spec_type)}
        dests = {a.dest for a in subparser._actions if a.dest != "help"}
        assert dests <= fields, f"{name}: options {sorted(dests - fields)} are not fields of {spec_type.__name__}"
        function = getattr(search.api, function_name)
        accepted = inspect.signature(function).parameters
        assert any(p.kind == p.VAR_KEYWORD for p in accepted.values()), function_name


def test_help_shows_the_records_defaults():
    help_text = " ".join(
        next(a for a in build_parser()._actions if a.dest == "command").choices["run"].format_help().split()
    )
    assert "(default: 20)" in help_text and "(default: tpe)" in help_text and "(default: 0.1)" in help_text
    assert "(default: the study's; rungs for a new study)" in help_text
    assert "(default: the study's budget; 10 for a new study)" in help_text
