"""`digit-search train` as the obvious baseline: --all-digits, --budget (via search.train.timed) and --out."""

import json
from pathlib import Path

import pytest
import torch

import search.study.train_one as train_one_module
import search.train.timed as timed
from search.cli.main import main
from search.config import Deadline, TrainSpec, parse_budget
from search.ensemble.submission import check_submission, lineage_problem
from search.errors import UserError
from search.train.prepared import all_labelled, prepare_data
from search.train.timed import fitting_epochs, off_pace, train_in_time
from search.train.trainer import EpochReport, TrainingData
from spaces import load_space

TINY_SPACE = str(Path(__file__).parent / "fixtures" / "my_space.py")  # an MLP, one reference (mlp-small)
TINY = ["--space", TINY_SPACE, "--reference", "mlp-small", "--limit", "200"]


def run_cli(*args: object) -> int:
    return main([str(arg) for arg in args])


def json_line(capsys) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


# --- the epoch fitting, as pure arithmetic --------------------------------------------------------


def test_fitting_epochs_keeps_a_margin_for_slower_epochs():
    assert fitting_epochs(111.0, 1.0) == 100
    assert fitting_epochs(10.0, 1.0) == 9  # 10 would leave no room for a 10% slower epoch
    assert fitting_epochs(1.0, 2.0) == 0


@pytest.mark.parametrize(
    ("epochs", "limit", "first", "most", "restart"),
    [
        (10, 100.0, 9.5, None, True),  # 10 epochs of 9.5s (with the margin) overrun 100s
        (10, 100.0, 8.0, None, False),  # 10 fit, and the 92s left hold 10, not 15
        (10, 100.0, 2.0, None, True),  # the 98s left hold 44 epochs: room for 1.5x as many
        (10, 100.0, 2.0, 12, False),  # ... but no more than 12 may be trained: not worth a restart
        (40, 100.0, 0.1, 40, False),  # at the cap already
    ],
)
def test_a_run_restarts_when_its_first_epoch_says_another_number_fits(epochs, limit, first, most, restart):
    assert off_pace(epochs, limit, first, most) is restart


class FakeTraining:
    """Stands in for trainer.train: reports a first epoch of `epoch_seconds`, then 'trains' the rest."""

    def __init__(self, epoch_seconds: float) -> None:
        self.epoch_seconds, self.calls = epoch_seconds, []

    def __call__(self, model, data, config, *, epochs, seed, on_epoch, deadline):
        self.calls.append((epochs, deadline.left()))
        for epoch in range(1, epochs + 1):
            on_epoch(EpochReport(epoch, 1.0, 1.0, 0.5, self.epoch_seconds * epoch, 100.0))
        return type("Result", (), {"train_seconds": self.epoch_seconds * epochs})()


@pytest.fixture
def fake_training(monkeypatch):
    def install(epoch_seconds: float) -> FakeTraining:
        fake = FakeTraining(epoch_seconds)
        monkeypatch.setattr(timed, "train", fake)
        monkeypatch.setattr(timed, "build_model", lambda space, candidate, seed: torch.nn.Identity())
        return fake

    return install


def tiny_candidate():
    space = load_space(TINY_SPACE)
    return space, space.references()["mlp-small"][0]


def some_data() -> TrainingData:
    images = torch.zeros((4, 1, 28, 28), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.int64)
    return TrainingData(images, labels, images, labels, images)


def test_timed_training_starts_again_at_the_epochs_its_first_epoch_says_fit(fake_training):
    fake = fake_training(epoch_seconds=2.0)
    space, candidate = tiny_candidate()
    notes = []
    done = train_in_time(space, candidate, 0, some_data(), 40, Deadline.after(30.0), most=40, on_restart=notes.append)
    # 40 epochs of 2s overrun 30s; the ~30s left fit floor(30 / 2.2) = 13
    assert [epochs for epochs, _ in fake.calls] == [40, 13]
    assert done.epochs == 13 and done.restarted and done.problem is None and done.result is not None
    assert fake.calls[1][1] <= 30.0 and "13 epochs instead of 40" in notes[0]


def test_timed_training_keeps_a_run_that_fits(fake_training):
    fake = fake_training(epoch_seconds=1.0)
    space, candidate = tiny_candidate()
    done = train_in_time(space, candidate, 0, some_data(), 10, Deadline.after(15.0))
    assert [epochs for epochs, _ in fake.calls] == [10] and done.epochs == 10 and not done.restarted


def test_timed_training_gives_up_with_a_reason_under_its_least_epochs(fake_training):
    fake_training(epoch_seconds=10.0)
    space, candidate = tiny_candidate()
    done = train_in_time(space, candidate, 0, some_data(), 10, Deadline.after(30.0), least=3)
    assert done.result is None and done.epochs == 0
    assert done.problem == "10.0s an epoch leaves time for 2 epochs, under 3"


# --- the command ---------------------------------------------------------------------------------


def test_all_labelled_is_the_training_and_validation_rows():
    prepared = prepare_data(None, limit=200, val_fraction=0.1, split_seed=0, device="cpu")
    data = all_labelled(prepared)
    train_rows, val_rows = len(prepared.split.train_index), len(prepared.split.val_index)
    assert len(data.train_labels) == train_rows + val_rows == 200
    assert torch.equal(data.train_labels.cpu(), torch.from_numpy(prepared.digits.train_labels))
    assert torch.equal(data.val_images, prepared.tensors.val_images)  # still the monitor


def test_all_digits_trains_on_the_validation_rows_too_and_says_so(capsys):
    assert run_cli("train", *TINY, "--epochs", 1, "--json") == 0
    held_out = json_line(capsys)
    assert run_cli("train", *TINY, "--epochs", 1, "--all-digits") == 0
    text = capsys.readouterr().out
    assert "not held out" in text and "on 200 digits" in text
    assert held_out["trained_digits"] == 180 and held_out["val_held_out"] is True


def test_out_writes_a_submission_and_its_lineage(tmp_path, capsys):
    out = tmp_path / "submission.csv"
    code = run_cli(
        "train",
        "--space",
        "cnn",
        "--reference",
        "bn-cnn",
        "--all-digits",
        "--epochs",
        1,
        "--limit",
        300,
        "--out",
        out,
        "--json",
    )
    assert code == 0
    summary = json_line(capsys)
    check_submission(out, 1000)  # the embedded sample's 1,000 test digits
    assert out.read_text().splitlines()[0] == "ImageId,Label"
    lineage = json.loads(out.with_suffix(".json").read_text())
    assert lineage_problem(out) is None
    assert lineage["config"]["reference"] == "bn-cnn" and lineage["config"]["family"] == "cnn"
    assert lineage["config"]["params"]["train.optimizer"]
    assert (
        lineage["training"]["epochs"] == 1
        and lineage["training"]["seed"] == 0
        and lineage["training"]["device"] == "cpu"
    )
    assert (
        lineage["data"]["all_digits"] is True
        and lineage["data"]["trained_digits"] == 300
        and lineage["data"]["data_hash"]
    )
    assert lineage["validation"]["held_out"] is False and "not held out" in lineage["validation"]["note"]
    assert lineage["validation"]["accuracy"] == pytest.approx(summary["val_accuracy"])
    assert summary["submission"] == str(out)


def test_budget_trains_the_epochs_that_fit_up_to_the_cap(monkeypatch, capsys):
    monkeypatch.setattr(train_one_module, "MAX_TIMED_EPOCHS", 2)  # 2 epochs of 180 digits fit a minute anywhere
    assert run_cli("train", *TINY, "--budget", "1m", "--json") == 0
    summary = json_line(capsys)
    assert summary["epochs"] == 2 and summary["budget_seconds"] == 60 and len(summary["history"]) == 2


def test_train_budgets_may_be_short_but_auto_budgets_may_not():
    assert TrainSpec(space="cnn", reference="bn-cnn", budget="30s").budget_seconds == 30
    with pytest.raises(UserError, match="under 60s"):
        parse_budget("30s")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget", "1m", "--epochs", "2"], "give --epochs N or --budget TIME, not both"),
        (["--budget", "soon"], "--budget 'soon' is not a duration"),
        (["--out", "{tmp}/missing/submission.csv"], "does not exist"),
        (["--out", "{tmp}"], "is a directory"),
        (["--out", "{tmp}/submission.json"], "give a .csv name"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_work(args, expected, tmp_path, monkeypatch, capsys):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the options were checked")

    monkeypatch.setattr(train_one_module, "prepare_data", no_data)
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", *TINY, *[arg.format(tmp=tmp_path) for arg in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_the_python_api_names_its_arguments():
    from search import api

    with pytest.raises(UserError, match="give epochs N or budget TIME, not both"):
        api.train_one("cnn", reference="bn-cnn", budget="1m", epochs=2)
