"""`digit-search leaderboard`: the standings as plain data, the table, the JSON document and the one-line errors."""

import datetime
import io
import json

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.cli.main import main
from search.config import LeaderboardSpec
from search.errors import UserError
from search.report.build import LoadedStudy
from search.report.leaderboard import Leaderboard, aligned, run_leaderboard, standings

LR = FloatDistribution(1e-4, 1e-1, log=True)
MAXIMIZE = optuna.study.StudyDirection.MAXIMIZE


def trial(number, value=None, state=TrialState.COMPLETE, *, family="cnn", params=1000, seconds=12.5):
    frozen = create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"train.lr": 1e-3},
        distributions={"train.lr": LR},
        user_attrs={"family": family, "params": params, "train_seconds": seconds},
    )
    frozen.number = number
    frozen.datetime_start = datetime.datetime(2025, 1, 1)
    frozen.datetime_complete = (
        None
        if state in (TrialState.RUNNING, TrialState.WAITING)
        else frozen.datetime_start + datetime.timedelta(seconds=seconds)
    )
    return frozen


NOISY = float(np.float32(0.7725))  # an accuracy computed in float32: 0.7724999785423279
STUDIES = {
    "cnn": [
        trial(0, 0.97),
        trial(1, state=TrialState.PRUNED),
        trial(2, 0.99, params=80_000, seconds=30.0),
        trial(3, state=TrialState.FAIL),
    ],
    "vit": [
        trial(0, 0.99, family="vit", params=60_000, seconds=95.0),
        trial(1, state=TrialState.RUNNING),
    ],  # ties cnn: fewer params wins
    "new": [trial(0, state=TrialState.WAITING)],
    "small": [trial(0, NOISY, family="stn")],
}


def loaded(studies=STUDIES):
    return [LoadedStudy(name, {"space": name}, MAXIMIZE, trials) for name, trials in studies.items()]


def test_standings_rank_studies_by_their_best_trial():
    found = standings(loaded())
    assert [s.study for s in found] == ["vit", "cnn", "small", "new"]  # no completed trial: last
    vit, cnn, small, new = found
    assert (vit.best.number, vit.best.family, vit.best.value, vit.best.params, vit.best.train_seconds) == (
        0,
        "vit",
        0.99,
        60_000,
        95.0,
    )
    assert (cnn.best.number, cnn.best.params) == (2, 80_000)  # its best, not its first
    assert cnn.counts == {"complete": 2, "pruned": 1, "fail": 1, "running": 0, "waiting": 0}
    assert vit.counts["running"] == 1 and new.counts["waiting"] == 1
    assert new.best is None and small.space == "small"


def test_the_table_is_aligned_best_first():
    board = Leaderboard("sqlite:///x.db", standings(loaded()))
    lines = board.table().splitlines()
    assert lines[0].split() == [
        "study",
        "trial",
        "family",
        "val",
        "acc",
        "params",
        "train",
        "s",
        "complete",
        "pruned",
        "fail",
        "running",
        "waiting",
    ]
    assert lines[1].split() == ["vit", "#0", "vit", "99.00%", "60.0k", "95", "1", "0", "0", "1", "0"]
    assert lines[2].split() == ["cnn", "#2", "cnn", "99.00%", "80.0k", "30", "2", "1", "1", "0", "0"]
    assert lines[3].split()[:4] == ["small", "#0", "stn", "77.25%"]
    assert lines[4].split() == ["new", "-", "-", "-", "-", "-", "0", "0", "0", "0", "1"]
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide: numbers right-aligned under their header
    assert lines[0].index("waiting") + len("waiting") == len(lines[1])


def test_aligned_pads_text_left_and_numbers_right():
    assert aligned(["name", "n"], [["a", "10"], ["bcd", "2"]], text_columns=1) == "name   n\na     10\nbcd    2\n"


def test_the_json_document_is_one_line_with_plain_numbers():
    board = Leaderboard("sqlite:///x.db", standings(loaded()))
    text = board.to_json()
    assert "\n" not in text and "0.7724999785423279" not in text
    document = json.loads(text)
    assert document["storage"] == "sqlite:///x.db"
    assert [s["study"] for s in document["studies"]] == ["vit", "cnn", "small", "new"]
    assert document["studies"][2]["best"] == {
        "trial": 0,
        "family": "stn",
        "val_accuracy": 0.7725,
        "params": 1000,
        "train_seconds": 12.5,
    }
    assert document["studies"][3]["best"] is None and document["studies"][3]["counts"]["waiting"] == 1


# ---- the command and the API ---------------------------------------------------------------------


@pytest.fixture
def database(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    for name, trials in STUDIES.items():
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.set_user_attr("space", name)
        study.add_trials(trials)
    return url


def test_the_command_prints_the_table_and_json_for_the_chosen_studies(database, capsys):
    assert main(["leaderboard", "--storage", database]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["vit", "cnn", "small", "new"]

    assert main(["leaderboard", "--storage", database, "--studies", "small,cnn", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)  # one document, nothing else on stdout
    assert [s["study"] for s in document["studies"]] == ["cnn", "small"]
    assert document["studies"][0]["best"]["val_accuracy"] == 0.99


def test_the_api_returns_the_standings_and_prints_what_the_command_prints(database, capsys):
    from search.api import leaderboard

    log = io.StringIO()
    board = leaderboard(storage=database, studies="vit", log=log)
    assert [s.study for s in board.standings] == ["vit"] and board.standings[0].best.value == 0.99
    assert log.getvalue() == board.table()
    assert capsys.readouterr().out == ""
    with pytest.raises(UserError, match="^no study 'nope'"):
        run_leaderboard(LeaderboardSpec(storage=database, studies="nope"), io.StringIO())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--studies", "cnn,nope"], "no study 'nope' in sqlite:///"),
        (["--studies", " , "], "--studies needs at least one study name"),
        (["--storage", "sqlite:////nonexistent/x.db"], "no such database file"),
        (["--storage", "nonsense"], "is not a database URL"),
    ],
)
def test_leaderboard_errors_are_one_line_with_exit_2(database, capsys, args, message):
    assert main(["leaderboard", *args] if "--storage" in args else ["leaderboard", "--storage", database, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("digit-search leaderboard: error: ") and message in captured.err


def test_a_missing_database_is_not_created(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    assert main(["leaderboard", "--storage", f"sqlite:///{missing}"]) == 2
    assert not missing.exists()
