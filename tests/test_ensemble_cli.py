"""`digit-search ensemble` and `predict` end to end on the embedded data with small, fast studies."""

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from search.cli.main import main
from search.config import METHODS, EnsembleSpec, RunSpec
from search.data.digits import load_digits, stratified_split
from search.data.kaggle_csv import PIXEL_COLUMNS
from search.dispatch.run import run_study
from search.ensemble.candidates import top_candidates
from search.ensemble.manifest import MANIFEST, read_manifest
from search.ensemble.saved import latest_ensemble, load_ensemble
from search.ensemble.selection import apply_temperatures, blend, fit_temperature, greedy, log_loss, select
from search.errors import UserError
from search.study.artifacts import ARTIFACT_ATTR, load_probabilities, open_artifact_store
from search.train.inference import TTA_SHIFTS, class_probabilities, shift_images
from spaces import load_space

FIXTURES = Path(__file__).parent / "fixtures"
MY_SPACE = FIXTURES / "my_space.py"
LIMIT = 2000
# --threads 1 keeps training fast on a busy 2-core machine
SMALL = {"limit": LIMIT, "epochs": 6, "pruner": "none", "reference": False, "threads": 1}
TEST_ROWS = 1000  # the embedded sample's unlabelled test part


def cli(*args) -> int:
    return main([str(arg) for arg in args])


def run_trials(url: str, space: str, study: str, base_params: dict, variations: list[dict], **options) -> None:
    """Run `study` on exactly the given trials: the base params changed by each variation."""
    created = optuna.create_study(study_name=study, storage=url, direction="maximize")
    for change in variations:
        created.enqueue_trial({**base_params, **change})
    # run_study rather than the CLI, so its progress goes to a buffer and not to whatever
    # sys.stdout was when search.study.setup was first imported
    summary = run_study(
        RunSpec(space=space, study=study, trials=len(variations), storage=url, **options), out=io.StringIO()
    )
    assert summary.counts == {"complete": len(variations)}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three LeNets ("cnn"), two MLPs from a user's space file ("mlp"), one LeNet on other data."""
    threads = torch.get_num_threads()
    yield make_studies(tmp_path_factory.mktemp("ensemble"))
    torch.set_num_threads(threads)


def make_studies(root: Path) -> tuple[Path, str]:
    url = f"sqlite:///{root}/studies.db"
    lenet = load_space("cnn").references()["lenet"][1]
    run_trials(url, "cnn", "cnn", lenet, [{"train.lr_adamw": lr} for lr in (2e-3, 3e-3, 4e-3)], **SMALL)
    mlp = load_space(str(MY_SPACE)).references()["mlp-small"][1]
    run_trials(url, str(MY_SPACE), "mlp", mlp, [{}, {"mlp.hidden": 64, "mlp.depth": 2}], **SMALL)
    run_trials(url, "cnn", "other-data", lenet, [{}], **{**SMALL, "limit": 300, "epochs": 1})
    return root, url


@pytest.fixture(scope="module")
def saved(studies, tmp_path_factory):
    """One greedy ensemble over both studies: (output folder, stdout)."""
    _, url = studies
    out = tmp_path_factory.mktemp("saved")
    args = [
        "ensemble",
        "--studies",
        "cnn,mlp",
        "--storage",
        url,
        "--space-file",
        MY_SPACE,
        "--out",
        out / "submission.csv",
        "--save",
        out / "ensemble",
    ]
    assert cli(*args) == 0
    return out


def stored_test_probs(url: str, root: Path, study: str, number: int, key: str = "test_probs") -> np.ndarray:
    trial = optuna.load_study(study_name=study, storage=url).trials[number]
    return load_probabilities(open_artifact_store(root / "artifacts"), trial.user_attrs[ARTIFACT_ATTR][key])


def stored_members_probs(url: str, root: Path, members: list[dict], key: str = "test_probs") -> np.ndarray:
    """(M, N, 10) stored probabilities of lineage or manifest members."""
    return np.stack([stored_test_probs(url, root, m["study"], m["trial"], key) for m in members])


def ensemble_of_both_studies(url: str, tmp_path: Path, *options) -> int:
    """`digit-search ensemble` over the cnn and mlp studies, writing s.csv and e/ under tmp_path."""
    return cli(
        "ensemble",
        "--studies",
        "cnn,mlp",
        *options,
        "--storage",
        url,
        "--space-file",
        MY_SPACE,
        "--out",
        tmp_path / "s.csv",
        "--save",
        tmp_path / "e",
    )


def submitted_labels(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId,Label"
    ids, labels = zip(*(map(int, line.split(",")) for line in lines[1:]))
    assert list(ids) == list(range(1, len(lines)))
    return np.array(labels)


def one_line_error(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_ensemble_writes_the_submission_its_lineage_and_the_saved_ensemble(studies, saved):
    root, url = studies
    labels = submitted_labels(saved / "submission.csv")
    assert len(labels) == TEST_ROWS and set(labels) <= set(range(10))

    lineage = json.loads((saved / "submission.json").read_text())
    assert lineage["studies"] == ["cnn", "mlp"] and lineage["method"] == "greedy" and not lineage["tta"]
    assert lineage["data"]["hash"] == optuna.load_study(study_name="cnn", storage=url).user_attrs["data_hash"]
    assert lineage["data"]["limit"] == LIMIT
    assert {"python", "torch", "numpy", "optuna"} <= set(lineage["versions"])
    weights = [m["weight"] for m in lineage["members"]]
    assert sum(weights) == pytest.approx(1.0) and all(w > 0 for w in weights)
    validation = lineage["validation"]
    assert validation["greedy"]["log_loss"] <= min(best["log_loss"] for best in validation["best_per_study"].values())

    # the submission is the weighted vote of the members' stored test probabilities at their temperatures
    assert lineage["calibration"] == "temperature"
    temperatures = np.array([m["temperature"] for m in lineage["members"]])
    probs = apply_temperatures(stored_members_probs(url, root, lineage["members"]), temperatures)
    np.testing.assert_array_equal(labels, blend(probs, np.array(weights)).argmax(axis=1))

    manifest = json.loads((saved / "ensemble" / MANIFEST).read_text())
    assert manifest["calibration"] == "temperature"
    assert [(m["study"], m["trial"], m["weight"], m["temperature"]) for m in manifest["members"]] == [
        (m["study"], m["trial"], m["weight"], m["temperature"]) for m in lineage["members"]
    ]
    mlp_members = [m for m in manifest["members"] if m["study"] == "mlp"]
    assert all((saved / "ensemble" / m["space_file"]).is_file() for m in mlp_members)


@pytest.mark.slow
def test_the_table_shows_each_study_the_average_and_the_greedy_ensemble(studies, tmp_path, capsys):
    _, url = studies
    assert ensemble_of_both_studies(url, tmp_path, "--top", 2) == 0
    out = capsys.readouterr().out
    assert "4 candidates from 2 studies" in out
    for row in ("best of cnn (trial", "best of mlp (trial", "uniform average of 4", "greedy ensemble of"):
        assert row in out, row
    assert "<- submitted" in out.split("greedy ensemble of")[1].splitlines()[0]
    assert "greedy members:" in out


@pytest.mark.slow
def test_each_member_gets_the_temperature_fitted_on_its_validation_probabilities(studies, tmp_path, capsys):
    root, url = studies
    assert ensemble_of_both_studies(url, tmp_path, "--method", "average") == 0
    out = capsys.readouterr().out
    lineage = json.loads((tmp_path / "s.json").read_text())
    members = lineage["members"]
    assert lineage["calibration"] == "temperature" and len(members) == 5
    _, labels = validation_digits(None)
    val = stored_members_probs(url, root, members, "val_probs")
    temperatures = np.array([m["temperature"] for m in members])
    np.testing.assert_allclose(temperatures, [fit_temperature(p, labels) for p in val])
    assert np.abs(temperatures - 1).max() > 0.01  # something was calibrated

    listing = out.split("average members:")[1].splitlines()
    assert "temperature" in listing[1]
    for member in members:
        row = next(line for line in listing if line.strip().startswith(f"{member['study']}#{member['trial']} "))
        assert f"{member['temperature']:.3f}" in row.split()

    # the reported figures are those of the calibrated members
    calibrated = apply_temperatures(val, temperatures)
    assert lineage["validation"]["average"]["log_loss"] == pytest.approx(log_loss(calibrated.mean(axis=0), labels))
    assert members[0]["val_log_loss"] == pytest.approx(log_loss(calibrated[0], labels))
    manifest = json.loads((tmp_path / "e" / MANIFEST).read_text())
    assert [m["temperature"] for m in manifest["members"]] == temperatures.tolist()


@pytest.mark.slow
def test_calibration_none_weights_the_stored_probabilities_as_they_are(studies, tmp_path, capsys):
    root, url = studies
    assert ensemble_of_both_studies(url, tmp_path, "--calibration", "none") == 0
    out = capsys.readouterr().out
    candidates = [
        m for name in ("cnn", "mlp") for m in top_candidates(optuna.load_study(study_name=name, storage=url), 10)
    ]
    _, labels = validation_digits(None)
    val = np.stack([stored_test_probs(url, root, m.study, m.number, "val_probs") for m in candidates])
    uncalibrated = greedy(val, labels)

    lineage = json.loads((tmp_path / "s.json").read_text())
    assert lineage["calibration"] == "none"
    assert [(m["study"], m["trial"], m["weight"], m["temperature"]) for m in lineage["members"]] == [
        (candidates[i].study, candidates[i].number, float(uncalibrated.weights[i]), 1.0) for i in uncalibrated.members
    ]
    assert lineage["validation"]["greedy"]["log_loss"] == uncalibrated.log_loss
    test = stored_members_probs(url, root, lineage["members"])
    weights = np.array([m["weight"] for m in lineage["members"]])
    np.testing.assert_array_equal(submitted_labels(tmp_path / "s.csv"), blend(test, weights).argmax(axis=1))
    assert "temperature" not in out
    manifest = json.loads((tmp_path / "e" / MANIFEST).read_text())
    assert manifest["calibration"] == "none" and {m["temperature"] for m in manifest["members"]} == {1.0}


def test_an_unknown_calibration_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        cli("ensemble", "--studies", "cnn", "--calibration", "platt")
    assert exited.value.code == 2
    assert "--calibration" in one_line_error(capsys.readouterr().err)
    with pytest.raises(UserError, match="^calibration must be one of temperature, none"):  # the API names the argument
        EnsembleSpec(studies="cnn", calibration="platt")


@pytest.mark.slow
def test_best_of_one_study_reproduces_its_best_trial(studies, tmp_path):
    root, url = studies
    assert (
        cli(
            "ensemble",
            "--studies",
            "cnn",
            "--method",
            "best",
            "--storage",
            url,
            "--out",
            tmp_path / "s.csv",
            "--save",
            tmp_path / "e",
        )
        == 0
    )
    study = optuna.load_study(study_name="cnn", storage=url)
    lineage = json.loads((tmp_path / "s.json").read_text())
    [(chosen, weight)] = [(m["trial"], m["weight"]) for m in lineage["members"]]
    # trials tied on accuracy are told apart by log-loss, so the choice may differ from Optuna's first best
    assert weight == 1.0 and study.trials[chosen].value == study.best_value
    assert lineage["validation"]["submitted"]["accuracy"] == pytest.approx(study.best_value)
    expected = stored_test_probs(url, root, "cnn", chosen).argmax(axis=1)
    np.testing.assert_array_equal(submitted_labels(tmp_path / "s.csv"), expected)


@pytest.mark.slow
def test_missing_probabilities_are_recomputed_from_the_weights(studies, tmp_path, capsys):
    root, _ = studies
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    url = f"sqlite:///{copy}/studies.db"
    best = optuna.load_study(study_name="cnn", storage=url).best_trial
    for key in ("val_probs", "test_probs"):
        (copy / "artifacts" / best.user_attrs[ARTIFACT_ATTR][key]).unlink()
    assert (
        cli(
            "ensemble",
            "--studies",
            "cnn",
            "--method",
            "best",
            "--storage",
            url,
            "--out",
            tmp_path / "s.csv",
            "--save",
            tmp_path / "e",
        )
        == 0
    )
    assert f"cnn#{best.number}: stored probabilities missing, recomputed" in capsys.readouterr().out
    [chosen] = [m["trial"] for m in json.loads((tmp_path / "s.json").read_text())["members"]]
    expected = stored_test_probs(f"sqlite:///{root}/studies.db", root, "cnn", chosen).argmax(axis=1)
    np.testing.assert_array_equal(submitted_labels(tmp_path / "s.csv"), expected)


@pytest.mark.slow
def test_tta_weights_are_chosen_on_shifted_predictions_and_saved(studies, tmp_path):
    _, url = studies
    for name, tta in (("plain", []), ("tta", ["--tta"])):
        args = [
            "--studies",
            "cnn",
            "--method",
            "average",
            "--storage",
            url,
            "--out",
            tmp_path / f"{name}.csv",
            "--save",
            tmp_path / name,
        ]
        assert cli("ensemble", *args, *tta) == 0
    plain, shifted = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("plain", "tta"))
    assert shifted["tta"] and not plain["tta"]
    assert json.loads((tmp_path / "tta" / MANIFEST).read_text())["tta"]
    assert shifted["validation"]["average"]["log_loss"] != plain["validation"]["average"]["log_loss"]
    assert shifted["validation"]["average"]["accuracy"] > 0.8


@pytest.mark.slow
def test_saving_again_replaces_an_older_ensemble_but_never_other_files(studies, tmp_path, capsys):
    _, url = studies
    args = ["ensemble", "--studies", "cnn", "--storage", url, "--out", tmp_path / "s.csv"]
    assert cli(*args, "--method", "best", "--save", tmp_path / "e") == 0
    assert cli(*args, "--method", "average", "--save", tmp_path / "e") == 0
    assert json.loads((tmp_path / "e" / MANIFEST).read_text())["method"] == "average"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert cli(*args, "--save", tmp_path / "mine") == 2
    assert "not a saved ensemble" in one_line_error(capsys.readouterr().err)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_a_saved_ensemble_carries_the_user_space_file_it_needs(studies, tmp_path, capsys):
    _, url = studies
    space_file = tmp_path / "my_space.py"
    shutil.copyfile(MY_SPACE, space_file)
    args = ["--studies", "mlp", "--method", "average", "--space-file", space_file, "--storage", url]
    assert cli("ensemble", *args, "--out", tmp_path / "s.csv", "--save", tmp_path / "e") == 0
    space_file.unlink()  # predict must not need the original any more
    manifest = json.loads((tmp_path / "e" / MANIFEST).read_text())
    assert {m["space_file"] for m in manifest["members"]} == {"spaces/my_space.py"}
    images, _ = validation_digits(3)
    write_pixel_csv(tmp_path / "rows.csv", images)
    capsys.readouterr()
    assert cli("predict", "--ensemble", tmp_path / "e", tmp_path / "rows.csv") == 0
    assert len(predictions(capsys.readouterr().out)) == 3


def test_shifts_move_pixels_and_fill_the_border_with_background():
    images = torch.arange(1, 17, dtype=torch.uint8).reshape(1, 1, 4, 4)
    down = shift_images(images, 1, 0)[0, 0]
    assert down[0].tolist() == [0, 0, 0, 0] and down[1:].tolist() == images[0, 0, :3].tolist()
    left = shift_images(images, 0, -1)[0, 0]
    assert left[:, -1].tolist() == [0, 0, 0, 0] and left[:, :3].tolist() == images[0, 0, :, 1:].tolist()
    assert shift_images(images, 0, 0) is images
    assert sorted(TTA_SHIFTS) == [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--studies", "cnn,nope"], "no study 'nope'"),
        (["--studies", "cnn,other-data"], "different data"),
        (["--studies", "cnn", "--limit", 300], "--limit"),
        (["--studies", "cnn", "--data", "/nonexistent/dir"], "/nonexistent/dir"),
        (["--studies", "mlp"], "--space-file"),
        (["--studies", "empty"], "no completed trials"),
        (["--studies", "cnn", "--out", "{tmp}/missing/s.csv"], "does not exist"),
        (["--studies", "cnn,cnn"], "twice"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(studies, tmp_path, capsys, extra, expected):
    _, url = studies
    cnn = optuna.load_study(study_name="cnn", storage=url)
    if "empty" not in optuna.get_all_study_names(url):
        empty = optuna.create_study(study_name="empty", storage=url)
        for key, value in cnn.user_attrs.items():
            empty.set_user_attr(key, value)
    args = [str(arg).replace("{tmp}", str(tmp_path)) for arg in extra]
    code = cli("ensemble", "--storage", url, "--out", tmp_path / "s.csv", "--save", tmp_path / "e", *args)
    assert code == 2
    assert expected in one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


# --- predict -------------------------------------------------------------------------------------


def validation_digits(count: int):
    """Digits the studies held out (never trained on) and their labels."""
    digits = load_digits(None).limited(LIMIT)
    rows = stratified_split(digits.train_labels, 0.1, 0).val_index[:count]
    return digits.train_images[rows], digits.train_labels[rows]


def write_pixel_csv(path: Path, images: np.ndarray) -> None:
    rows = [",".join(PIXEL_COLUMNS)] + [",".join(map(str, image.ravel())) for image in images]
    path.write_text("\n".join(rows) + "\n")


def predictions(out: str) -> list[tuple[str, int, float]]:
    lines = [line.split("\t") for line in out.strip().splitlines()]
    return [(name, int(digit), float(prob)) for name, digit, prob in lines]


@pytest.mark.slow
def test_predict_recognises_rendered_digits_of_any_size_and_polarity(saved, tmp_path, capsys):
    images, labels = validation_digits(30)
    write_pixel_csv(tmp_path / "originals.csv", images)
    paths = []
    for index, image in enumerate(images):
        scale = (2, 5, 9)[index % 3]
        big = np.asarray(Image.fromarray(image).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC))
        canvas = np.zeros((28 * scale + 30, 28 * scale + 60), dtype=np.uint8)
        canvas[10 : 10 + 28 * scale, 40 : 40 + 28 * scale] = big
        path = tmp_path / f"digit-{index}.{'png' if index % 2 else 'jpg'}"
        Image.fromarray(255 - canvas if index % 2 else canvas).save(path)
        paths.append(path)

    assert cli("predict", "--ensemble", saved / "ensemble", tmp_path / "originals.csv", *paths) == 0
    found = predictions(capsys.readouterr().out)
    assert [name for name, _, _ in found] == [f"{tmp_path / 'originals.csv'}:{i}" for i in range(1, 31)] + list(
        map(str, paths)
    )
    assert all(0.1 <= prob <= 1 for _, _, prob in found)
    original = np.array([digit for _, digit, _ in found[:30]])
    rendered = np.array([digit for _, digit, _ in found[30:]])
    assert (original == labels).mean() >= 0.8
    assert (rendered == labels).mean() >= 0.8
    assert (rendered == original).mean() >= 0.85


@pytest.mark.slow
def test_predict_with_a_calibrated_ensemble_reproduces_its_submission(studies, saved, tmp_path, capsys):
    root, url = studies
    lineage = json.loads((saved / "submission.json").read_text())
    ensemble = load_ensemble(saved / "ensemble", torch.device("cpu"))
    assert ensemble.temperatures == [m["temperature"] for m in lineage["members"]]
    assert ensemble.weights == [m["weight"] for m in lineage["members"]]

    test_images = load_digits(None).test_images
    stored = stored_members_probs(url, root, lineage["members"])
    expected = blend(apply_temperatures(stored, np.array(ensemble.temperatures)), np.array(ensemble.weights))
    predicted = ensemble.predict_proba(test_images)  # (N, 28, 28) uint8, as a notebook has them
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    np.testing.assert_array_equal(ensemble.predict(test_images[:, None]), predicted.argmax(axis=1))

    write_pixel_csv(tmp_path / "test.csv", test_images)
    capsys.readouterr()
    assert cli("predict", "--ensemble", saved / "ensemble", tmp_path / "test.csv") == 0
    found = predictions(capsys.readouterr().out)
    np.testing.assert_array_equal([digit for _, digit, _ in found], submitted_labels(saved / "submission.csv"))
    np.testing.assert_allclose([prob for _, _, prob in found], expected.max(axis=1), atol=1e-4)


def without_temperatures(source: Path, target: Path) -> Path:
    """A copy of a saved ensemble as it was written before members were calibrated."""
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST).read_text())
    del manifest["calibration"]
    for member in manifest["members"]:
        del member["temperature"]
    (target / MANIFEST).write_text(json.dumps(manifest))
    return target


@pytest.mark.slow
def test_an_ensemble_saved_before_calibration_predicts_at_temperature_one(saved, tmp_path, capsys):
    old = load_ensemble(without_temperatures(saved / "ensemble", tmp_path / "old"), torch.device("cpu"))
    assert old.temperatures == [1.0] * len(old.models)
    images, _ = validation_digits(50)
    tensor = torch.from_numpy(images).unsqueeze(1)
    uncalibrated = blend(
        np.stack([class_probabilities(model, tensor, tta=False) for model in old.models]), np.array(old.weights)
    )
    np.testing.assert_allclose(old.predict_proba(tensor), uncalibrated, rtol=1e-6)

    write_pixel_csv(tmp_path / "rows.csv", images[:3])
    assert cli("predict", "--ensemble", tmp_path / "old", tmp_path / "rows.csv") == 0
    assert len(predictions(capsys.readouterr().out)) == 3


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0, -1.5, "hot", None])
def test_predict_refuses_a_saved_temperature_that_is_not_above_zero(saved, tmp_path, capsys, temperature):
    shutil.copytree(saved / "ensemble", tmp_path / "e")
    manifest = json.loads((tmp_path / "e" / MANIFEST).read_text())
    manifest["members"][0]["temperature"] = temperature
    (tmp_path / "e" / MANIFEST).write_text(json.dumps(manifest))
    write_pixel_csv(tmp_path / "rows.csv", validation_digits(1)[0])
    assert cli("predict", "--ensemble", tmp_path / "e", tmp_path / "rows.csv") == 2
    assert "temperature" in one_line_error(capsys.readouterr().err)


@pytest.mark.slow
def test_predict_uses_the_most_recent_saved_ensemble(saved, tmp_path, monkeypatch, capsys):
    root = tmp_path / "studies" / "ensembles"
    for name, created in (
        ("newer-by-time", "2030-01-02T00:00:00+00:00"),
        ("z-older-by-time", "2030-01-01T00:00:00+00:00"),
    ):
        shutil.copytree(saved / "ensemble", root / name)
        manifest = json.loads((root / name / MANIFEST).read_text())
        manifest["created"] = created
        (root / name / MANIFEST).write_text(json.dumps(manifest))
    (root / "not-an-ensemble").mkdir()
    assert latest_ensemble(root) == root / "newer-by-time"

    images, _ = validation_digits(2)
    write_pixel_csv(tmp_path / "rows.csv", images)
    monkeypatch.chdir(tmp_path)
    assert cli("predict", "rows.csv") == 0
    assert len(predictions(capsys.readouterr().out)) == 2


def test_predict_without_a_saved_ensemble_says_what_to_do(tmp_path, monkeypatch, capsys):
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(tmp_path / "d.png")
    monkeypatch.chdir(tmp_path)
    assert cli("predict", "d.png") == 2
    assert "run digit-search ensemble first" in one_line_error(capsys.readouterr().err)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.png", None, "missing.png: no such file"),
        ("notes.png", b"hello", "notes.png: not an image format"),
        ("blank.png", "blank", "blank.png: no digit found"),
        ("rows.csv", b"pixel0,pixel1\n1,2\n", "rows.csv line 1"),
    ],
)
def test_predict_refuses_a_bad_file_by_name_before_printing_anything(saved, tmp_path, capsys, name, content, expected):
    good = tmp_path / "good.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(good)
    if content == "blank":
        Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / name)
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    assert cli("predict", "--ensemble", saved / "ensemble", good, tmp_path / name) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert expected in one_line_error(captured.err)


# --- damaged artifacts, the Python API -----------------------------------------------------------


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"\x93NUMPY garbage" * 20)
    elif how == "nan":
        np.save(path, np.full((10, 10), np.nan, dtype=np.float32))  # np.save adds no suffix to an open file
        path.with_name(path.name + ".npy").replace(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, how, tta, expected",
    [
        ("val_probs", "truncated", False, "is not a readable .npy file"),
        ("test_probs", "garbage", False, "is not a readable .npy file"),
        ("val_probs", "nan", False, "values that are not finite probabilities"),
        ("weights", "truncated", True, "not a readable safetensors file"),
        ("weights", "garbage", True, "not a readable safetensors file"),
    ],
)
def test_a_damaged_artifact_is_one_line_naming_study_trial_and_artifact(
    studies, tmp_path, capsys, key, how, tta, expected
):
    root, _ = studies
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    url = f"sqlite:///{copy}/studies.db"
    best = optuna.load_study(study_name="cnn", storage=url).best_trial
    artifact = best.user_attrs[ARTIFACT_ATTR][key]
    damage(copy / "artifacts" / artifact, how)
    args = [
        "--studies",
        "cnn",
        "--method",
        "best",
        "--storage",
        url,
        "--out",
        tmp_path / "s.csv",
        "--save",
        tmp_path / "e",
    ]
    assert cli("ensemble", *args, *(["--tta"] if tta else [])) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"study 'cnn', trial {best.number}: its {key} artifact {artifact}" in err and expected in err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "e").exists()


@pytest.mark.slow
def test_the_python_api_builds_an_ensemble_that_saves_itself_and_writes_its_submission(studies, tmp_path):
    from search import api

    root, url = studies
    log = io.StringIO()
    ensemble = api.build_ensemble(
        "cnn,mlp", storage=url, space_files=[str(MY_SPACE)], out=str(tmp_path / "default.csv"), log=log
    )
    assert "5 candidates from 2 studies" in log.getvalue() and ensemble.saved is None and not list(tmp_path.iterdir())

    # every method's figures come from selection.select on the calibrated validation probabilities
    _, labels = validation_digits(None)
    val = apply_temperatures(
        stored_members_probs(
            url, root, [{"study": c.study, "trial": c.number} for c in ensemble.candidates], "val_probs"
        ),
        ensemble.temperatures,
    )
    assert set(ensemble.selections) == set(METHODS)
    for method, chosen in ensemble.selections.items():
        np.testing.assert_allclose(chosen.weights, select(method, val, labels).weights)
    assert ensemble.val_accuracy == ensemble.selections["greedy"].accuracy and "greedy ensemble of" in ensemble.table()

    csv_path, json_path = ensemble.write_submission()
    assert csv_path == tmp_path / "default.csv" and json.loads(json_path.read_text())["ensemble_dir"] is None
    folder = ensemble.save(tmp_path / "e")
    assert folder == ensemble.saved == tmp_path / "e"
    _, json_path = ensemble.write_submission(tmp_path / "s.csv")
    assert json.loads(json_path.read_text())["ensemble_dir"] == str(folder)
    np.testing.assert_array_equal(submitted_labels(tmp_path / "s.csv"), ensemble.test_labels)

    loaded = api.load_ensemble(str(folder), device="cpu")
    assert [(m.study, m.trial) for m in loaded.manifest.members] == [
        (ensemble.candidates[i].study, ensemble.candidates[i].number) for i in ensemble.chosen.members
    ]
    test_images = load_digits(None).test_images  # (T, 28, 28) uint8
    np.testing.assert_array_equal(loaded.predict(test_images), ensemble.test_labels)
    assert loaded.predict_proba(test_images[:7]).shape == (7, 10)
    Image.fromarray(test_images[0]).resize((112, 112)).save(tmp_path / "digit.png")
    [found] = loaded.predict_files([tmp_path / "digit.png"])
    assert found.name == str(tmp_path / "digit.png") and 0 <= found.digit <= 9 and 0.1 <= found.probability <= 1
    for bad in (test_images.astype(np.float32), test_images[0], test_images[:, :14]):
        with pytest.raises(UserError, match="^images must be"):
            loaded.predict(bad)


@pytest.mark.slow
def test_a_built_ensemble_saves_given_weights_in_place_of_the_stored_ones(studies, tmp_path):
    """What `auto` does with members retrained on every labelled digit."""
    from search import api
    from search.train.weights import load_weights_file

    _, url = studies
    ensemble = api.build_ensemble("cnn", storage=url, method="average", log=io.StringIO())
    assert all(
        c.seed is not None and c.epochs == SMALL["epochs"] and c.images_per_second > 0 for c in ensemble.candidates
    )
    heaviest = int(ensemble.chosen.members[0])
    stored = load_weights_file(ensemble.save(tmp_path / "stored") / "member-00.safetensors")[0]
    retrained = {name: torch.zeros_like(tensor) for name, tensor in stored.items()}
    folder = ensemble.save(tmp_path / "retrained", states={heaviest: retrained})
    saved = [load_weights_file(folder / f"member-{i:02d}.safetensors")[0] for i in range(len(ensemble.chosen.members))]
    assert all(not tensor.any() for tensor in saved[0].values())
    assert all(
        torch.equal(saved[1][name], tensor)
        for name, tensor in load_weights_file(tmp_path / "stored" / "member-01.safetensors")[0].items()
    )


@pytest.mark.slow
def test_the_report_scores_the_saved_ensemble_at_its_members_temperatures(studies, saved):
    from search.config import ReportSpec
    from search.report.build import load_studies, score_ensemble, stored_ensemble_probabilities

    _, url = studies
    manifest = read_manifest(saved / "ensemble")
    lineage = json.loads((saved / "submission.json").read_text())
    assert manifest.calibration == "temperature" and all(m.temperature != 1.0 for m in manifest.members)
    spec = ReportSpec(storage=url, studies="cnn,mlp")
    loaded = load_studies(spec)
    scored = score_ensemble(spec, saved / "ensemble", manifest, loaded)
    assert scored.accuracy == pytest.approx(lineage["validation"][manifest.method]["accuracy"])
    probs = stored_ensemble_probabilities(spec, manifest, loaded)
    uncalibrated = stored_ensemble_probabilities(
        spec, replace(manifest, members=tuple(replace(m, temperature=1.0) for m in manifest.members)), loaded
    )
    assert probs is not None and not np.allclose(probs, uncalibrated)


@pytest.mark.slow
def test_the_report_notes_a_damaged_member_artifact_instead_of_failing(studies, saved, tmp_path):
    from search.config import ReportSpec
    from search.report.build import find_ensemble, load_studies

    root, _ = studies
    shutil.copytree(root, tmp_path / "copy")
    url = f"sqlite:///{tmp_path / 'copy'}/studies.db"
    member = read_manifest(saved / "ensemble").members[0]
    artifact = (
        optuna.load_study(study_name=member.study, storage=url)
        .trials[member.trial]
        .user_attrs[ARTIFACT_ATTR]["val_probs"]
    )
    damage(tmp_path / "copy" / "artifacts" / artifact, "garbage")
    spec = ReportSpec(storage=url, studies="cnn,mlp", ensemble=str(saved / "ensemble"))
    data, note = find_ensemble(spec, load_studies(spec))
    assert (
        data is None
        and f"study {member.study!r}, trial {member.trial}: its val_probs artifact {artifact} is not a readable .npy file"
        in note
    )
