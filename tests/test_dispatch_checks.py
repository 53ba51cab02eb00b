"""`run` checks every option before it writes anything to the study, follows the study's own space and
epoch budget, and says plainly what it is about to run."""

import io
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.cli.main import main
from search.config import RunSpec, TrainSpec
from search.dispatch.run import run_study
from search.errors import UserError
from search.study.storage import open_storage
from search.study.train_one import train_one

TINY_SPACE = str(Path(__file__).parent / "fixtures" / "my_space.py")  # an MLP, one reference (mlp-small)


def tiny(storage: str, **overrides) -> RunSpec:
    options = dict(space=TINY_SPACE, study="s", trials=1, epochs=1, limit=200, storage=storage)
    options.update(overrides)
    return RunSpec(**options)


def trials_of(storage: str, study: str = "s") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials()


def refused(capsys, *args: str) -> str:
    """Run the CLI, expecting one line on stderr and exit status 2; returns the line."""
    assert main([str(arg) for arg in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def study_names(storage: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]


@pytest.mark.parametrize(
    "option, expected",
    [
        (["--artifacts", "/dev/null/x"], "--artifacts /dev/null/x: cannot write there"),
        (["--study", "s" * 600], "--study is 600 characters long; a study name may have at most 512"),
        (["--address", "127.0.0.1:1"], "--address '127.0.0.1:1': nothing answers"),
        (["--address", "no-port-here"], "expected auto, HOST:PORT"),
    ],
)
def test_a_bad_option_is_refused_in_one_line_before_the_study_exists(option, expected, sqlite_url, tmp_path, capsys):
    line = refused(capsys, "run", "--space", TINY_SPACE, "--limit", 200, "--storage", sqlite_url, *option)
    assert expected in line and "Traceback" not in line
    assert not (tmp_path / "studies.db").exists()  # nothing was written: not even the database file


def test_a_long_study_name_is_refused_before_postgresql_is_asked(capsys):
    url = "postgresql://nobody@127.0.0.1:1/none"  # nothing listens there: the name is checked first
    line = refused(capsys, "run", "--space", TINY_SPACE, "--storage", url, "--study", "s" * 600)
    assert "--study is 600 characters long" in line


def test_a_bad_option_leaves_an_existing_study_as_it_was(sqlite_url, tmp_path, capsys):
    run_study(tiny(sqlite_url, reference=False), io.StringIO())
    before = [(t.number, t.state) for t in trials_of(sqlite_url)]
    refused(
        capsys,
        "run",
        "--space",
        TINY_SPACE,
        "--study",
        "s",
        "--trials",
        3,
        "--epochs",
        1,
        "--limit",
        200,
        "--storage",
        sqlite_url,
        "--artifacts",
        "/dev/null/x",
    )
    assert [(t.number, t.state) for t in trials_of(sqlite_url)] == before  # no reference queued, nothing run


def test_s3_artifacts_without_credentials_are_refused_before_any_trial(sqlite_url, tmp_path, monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups (seconds of timeouts)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing leaves this machine
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # an earlier test's session keeps the credentials it found
    line = refused(
        capsys, "run", "--space", TINY_SPACE, "--limit", 200, "--storage", sqlite_url, "--artifacts", "s3://bucket/runs"
    )
    assert line.startswith(
        "digit-search run: error: --artifacts s3://bucket/runs: cannot write there (NoCredentialsError"
    )
    assert not (tmp_path / "studies.db").exists()


def test_a_study_keeps_its_space_and_epoch_budget(sqlite_url, capsys):
    run_study(tiny(sqlite_url, epochs=2, trials=1, reference=False, pruner="none"), io.StringIO())
    assert optuna.load_study(study_name="s", storage=open_storage(sqlite_url)).user_attrs["epochs"] == 2

    out = io.StringIO()
    run_study(
        RunSpec(study="s", trials=2, limit=200, storage=sqlite_url, reference=False, pruner="none"), out
    )  # no space, no epochs
    assert "up to 2 epochs a trial" in out.getvalue()
    trials = trials_of(sqlite_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["epochs"] for t in trials] == [2, 2] and [t.last_step for t in trials] == [2, 2]

    line = refused(
        capsys,
        "run",
        "--space",
        TINY_SPACE,
        "--study",
        "s",
        "--trials",
        3,
        "--epochs",
        3,
        "--limit",
        200,
        "--storage",
        sqlite_url,
    )
    assert "study 's' trains each trial at most 2 epochs" in line and "--study NEW_NAME" in line
    assert len(trials_of(sqlite_url)) == 2


def test_a_run_without_space_needs_a_study_that_exists(sqlite_url, tmp_path):
    with pytest.raises(
        UserError, match="give space to create a study, or study NAME to continue one"
    ):  # the API's names
        run_study(RunSpec(storage=sqlite_url), io.StringIO())
    with pytest.raises(UserError) as caught:
        run_study(RunSpec(study="new", storage=sqlite_url), io.StringIO())
    assert caught.value.cli_message == f"no study 'new' in {sqlite_url}; give --space to create it"
    assert not (tmp_path / "studies.db").exists()


def test_train_retrains_a_stored_trial_with_its_own_epochs(sqlite_url):
    run_study(tiny(sqlite_url, epochs=2, reference=False, pruner="none"), io.StringIO())
    (stored,) = trials_of(sqlite_url)
    out = io.StringIO()
    summary = train_one(TrainSpec(space=TINY_SPACE, trial="s:0", storage=sqlite_url, limit=200, as_json=True), out)
    assert summary["epochs"] == 2 and len(summary["history"]) == 2
    assert json.loads(out.getvalue())["val_accuracy"] == pytest.approx(stored.value)


def test_the_header_says_what_runs_first_and_counts_in_words(sqlite_url):
    out = io.StringIO()
    run_study(tiny(sqlite_url, trials=2), out)
    header = out.getvalue().splitlines()
    assert header[0].startswith("study 's' in sqlite:///") and "0 of 2 trials finished" in header[0]
    assert header[0].endswith("1 epoch a trial; too few rows to screen on rungs of at least 1,000")  # not "1 epochs"
    assert header[1] == "queued first: 1 reference (mlp-small), then 1 sampled trial"

    again = io.StringIO()
    run_study(tiny(sqlite_url, trials=1), again)
    first = again.getvalue().splitlines()[0]
    assert "holds 2 finished trials, so --trials 1 is reached: nothing to run" in first and "2/1" not in first


def test_the_header_says_when_trials_leave_references_queued(sqlite_url):
    out = io.StringIO()
    run_study(tiny(sqlite_url, space="cnn", study="cnn", trials=1, limit=200), out)
    line = out.getvalue().splitlines()[1]
    assert (
        line.startswith("queued first: 3 references (") and "room for 1 of them this run, the rest stay queued" in line
    )


@pytest.mark.slow
def test_cpus_per_trial_beyond_the_cluster_is_refused_before_the_study_exists(sqlite_url, tmp_path):
    with pytest.raises(UserError) as caught:  # the API: Ray's own start-up logging would share the CLI's stderr
        run_study(tiny(sqlite_url, workers=2, cpus_per_trial=4096), io.StringIO())
    assert caught.value.cli_message.startswith("--cpus-per-trial 4096 but no node of the Ray cluster has more than")
    assert not (tmp_path / "studies.db").exists()
