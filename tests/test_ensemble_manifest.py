"""Saved ensembles without training: the manifest's validation, finding the newest, and what --save may replace."""

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from search.cli.main import main
from search.data.kaggle_csv import PIXEL_COLUMNS
from search.ensemble.manifest import (
    MANIFEST,
    Manifest,
    ManifestError,
    ManifestMember,
    folder_problem,
    newest_ensemble,
    read_manifest,
)
from search.ensemble.saved import check_save_dir, latest_ensemble, save_ensemble
from search.ensemble.selection import blend, calibrated_blend
from search.errors import UserError
from search.report.build import LoadedStudy, newest_matching_ensemble

CREATED = "2025-01-02T00:00:00+00:00"


def member_record(**changes) -> dict:
    record = {
        "study": "cnn",
        "trial": 2,
        "family": "cnn",
        "space": "cnn",
        "space_file": None,
        "params": {},
        "weight": 1.0,
        "temperature": 1.0,
        "val_accuracy": 0.9,
        "weights_file": "member-00.safetensors",
    }
    return {**record, **changes}


def manifest_record(members: list | None = None, **changes) -> dict:
    record = {
        "format": 1,
        "created": CREATED,
        "method": "greedy",
        "calibration": "temperature",
        "tta": False,
        "studies": ["cnn"],
        "data_hash": "h",
        "split": "s",
        "val_accuracy": 0.9,
        "val_log_loss": 0.3,
        "members": [member_record()] if members is None else members,
    }
    return {**record, **changes}


def write_folder(folder: Path, record: dict | str, files: tuple[str, ...] = ("member-00.safetensors",)) -> Path:
    """A saved-ensemble folder with the given manifest (a dict, or raw text) and placeholder member files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(record if isinstance(record, str) else json.dumps(record))
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"weights")
    return folder


def one_line_error(err: str) -> str:
    err = err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ---- the manifest as a whole ----------------------------------------------------------------------


def test_a_manifest_reads_back_as_it_was_written(tmp_path):
    folder = write_folder(
        tmp_path / "e",
        manifest_record(
            members=[
                member_record(),
                member_record(trial=3, weight=2.0, temperature=0.5, weights_file="member-01.safetensors"),
            ]
        ),
    )
    manifest = read_manifest(folder)
    assert manifest.created == datetime(2025, 1, 2, tzinfo=timezone.utc)
    assert [m.label for m in manifest.members] == ["cnn#2", "cnn#3"]
    np.testing.assert_array_equal(manifest.weights, [1.0, 2.0])
    np.testing.assert_array_equal(manifest.temperatures, [1.0, 0.5])
    assert Manifest.from_json(manifest.to_json(), folder) == manifest
    assert manifest.to_json() == manifest_record(
        members=[
            member_record(),
            member_record(trial=3, weight=2.0, temperature=0.5, weights_file="member-01.safetensors"),
        ]
    )
    assert manifest.files() == {MANIFEST, "member-00.safetensors", "member-01.safetensors"}


def test_a_member_saved_before_calibration_has_temperature_one(tmp_path):
    record = member_record()
    del record["temperature"]
    assert ManifestMember.from_json(record, tmp_path).temperature == 1.0


BAD_MANIFESTS = [
    (manifest_record(members=[1, 2]), "member 1: a member must be a JSON object"),
    (manifest_record(members=[]), "members must be a non-empty list"),
    (manifest_record(members="member-00"), "members must be a non-empty list"),
    (manifest_record(format=None), "not a format-1 saved ensemble"),
    ({"name": "my-web-app", "members": []}, "not a format-1 saved ensemble"),
    (manifest_record(members=[member_record(weight=float("nan"))]), "weight must be a finite number >= 0"),
    (manifest_record(members=[member_record(weight=-1.0)]), "weight must be a finite number >= 0"),
    (manifest_record(members=[member_record(weight="1")]), "weight must be a finite number >= 0"),
    (manifest_record(members=[member_record(weight=0.0)]), "weights are all zero"),
    (manifest_record(members=[member_record(temperature=0)]), "temperature must be a finite number above 0"),
    (manifest_record(members=[member_record(temperature=float("inf"))]), "temperature must be a finite number above 0"),
    (manifest_record(members=[member_record(temperature=None)]), "temperature must be a finite number above 0"),
    (manifest_record(created="2025-01-02T00:00:00"), "created must be an ISO time with a timezone"),
    (manifest_record(created="yesterday"), "created must be an ISO time with a timezone"),
    (manifest_record(created=None), "created must be an ISO time with a timezone"),
    (
        manifest_record(members=[member_record(weights_file="../x.safetensors")]),
        "weights_file '../x.safetensors' must be a relative path inside",
    ),
    (
        manifest_record(members=[member_record(weights_file="/etc/passwd")]),
        "weights_file '/etc/passwd' must be a relative path inside",
    ),
    (manifest_record(members=[member_record(weights_file=None)]), "weights_file must be a relative path inside"),
    (manifest_record(members=[member_record(space="evil")]), "space 'evil' is not a built-in family"),
    (
        manifest_record(members=[member_record(space="evil", space_file="../anything.py")]),
        "space_file '../anything.py' must be a relative path inside",
    ),
    (
        manifest_record(members=[member_record(space="evil", space_file="/tmp/evil.py")]),
        "space_file '/tmp/evil.py' must be a relative path inside",
    ),
    (manifest_record(members=[member_record(trial="2")]), "trial must be a whole number"),
    (manifest_record(members=[member_record(params=[1])]), "params must be a JSON object"),
    (manifest_record(studies=[]), "studies must be a non-empty list"),
    (manifest_record(method="vote"), "method must be one of"),
    ("{", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
]


@pytest.mark.parametrize("record, message", BAD_MANIFESTS)
def test_a_bad_manifest_is_refused_as_a_whole_in_one_line(tmp_path, record, message):
    folder = write_folder(tmp_path / "e", record)
    with pytest.raises(ManifestError, match="^" + re.escape(f"{folder / MANIFEST}: ")) as caught:
        read_manifest(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("record, message", BAD_MANIFESTS[:16])
def test_predict_refuses_a_bad_manifest_with_exit_2_before_loading_anything(tmp_path, capsys, record, message):
    folder = write_folder(tmp_path / "e", record)
    (tmp_path / "d.csv").write_text(",".join(PIXEL_COLUMNS) + "\n" + ",".join(["0"] * len(PIXEL_COLUMNS)) + "\n")
    assert main(["predict", "--ensemble", str(folder), str(tmp_path / "d.csv")]) == 2
    assert message in one_line_error(capsys.readouterr().err)


def test_a_path_that_escapes_through_a_symbolic_link_is_refused(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "evil.py").write_text("raise SystemExit('ran')\n")
    folder = write_folder(
        tmp_path / "e", manifest_record(members=[member_record(space="evil", space_file="spaces/evil.py")])
    )
    (folder / "spaces").symlink_to(tmp_path / "outside")
    with pytest.raises(ManifestError, match="leads outside the ensemble folder"):
        read_manifest(folder)
    os.symlink("/etc/passwd", folder / "member-01.safetensors")
    with pytest.raises(ManifestError, match="weights_file 'member-01.safetensors' leads outside"):
        read_manifest(
            write_folder(
                folder, manifest_record(members=[member_record(weights_file="member-01.safetensors")]), files=()
            )
        )


def test_a_space_file_inside_the_folder_may_name_any_space(tmp_path):
    folder = write_folder(
        tmp_path / "e",
        manifest_record(members=[member_record(space="mine", space_file="spaces/mine.py")]),
        files=("member-00.safetensors", "spaces/mine.py"),
    )
    assert read_manifest(folder).members[0].space_file == "spaces/mine.py"
    assert read_manifest(folder).files() == {MANIFEST, "member-00.safetensors", "spaces/mine.py"}


def test_a_huge_manifest_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr("search.ensemble.manifest.MAX_MANIFEST_BYTES", 100)
    folder = write_folder(tmp_path / "e", manifest_record())
    with pytest.raises(ManifestError, match="larger than"):
        read_manifest(folder)


def test_the_blend_is_each_member_at_its_temperature_then_weighted():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=(3, 5))  # (M, N, C)
    weights, temperatures = np.array([1.0, 0.0, 3.0]), np.array([0.5, 1.0, 2.0])
    expected = (
        probs[0] ** 2 / (probs[0] ** 2).sum(1, keepdims=True)
        + 3 * np.sqrt(probs[2]) / np.sqrt(probs[2]).sum(1, keepdims=True)
    ) / 4
    np.testing.assert_allclose(calibrated_blend(probs, weights, temperatures), expected)
    np.testing.assert_allclose(calibrated_blend(probs, weights, np.ones(3)), blend(probs, weights))
    with pytest.raises(ValueError, match="finite"):
        blend(probs, np.array([np.nan, 1.0, 1.0]))


# ---- the newest saved ensemble --------------------------------------------------------------------


def saved_at(root: Path, name: str, created: str, **changes) -> Path:
    return write_folder(root / name, manifest_record(created=created, **changes))


def test_the_newest_valid_visible_ensemble_is_found_and_broken_ones_never_crash_it(tmp_path):
    root = tmp_path / "ensembles"
    saved_at(root, "old", "2025-01-01T00:00:00+00:00")
    saved_at(root, "ours", "2025-01-02T00:00:00+01:00")
    saved_at(root, ".ours.k3j4.tmp", "2030-01-01T00:00:00+00:00")  # a save a kill interrupted
    saved_at(root, ".hidden", "2030-01-01T00:00:00+00:00")
    saved_at(root, "naive", "2030-01-01T00:00:00")
    saved_at(root, "nan-weight", "2030-01-01T00:00:00+00:00", members=[member_record(weight=float("nan"))])
    saved_at(root, "bad-members", "2030-01-01T00:00:00+00:00", members=[1, 2])
    saved_at(
        root,
        "escapes",
        "2030-01-01T00:00:00+00:00",
        members=[member_record(weights_file="../old/member-00.safetensors")],
    )
    write_folder(root / "garbage", "\x00\xff not json")
    (root / "not-a-folder").write_text("x")
    (root / "no-manifest").mkdir()
    assert latest_ensemble(root) == root / "ours"
    folder, manifest = newest_ensemble(root)
    assert folder == root / "ours" and manifest.created.isoformat() == "2025-01-02T00:00:00+01:00"
    assert newest_ensemble(root, lambda m: m.created.year == 2024) is None
    assert newest_ensemble(tmp_path / "missing") is None


def test_latest_without_a_valid_ensemble_says_what_to_do(tmp_path):
    saved_at(tmp_path, ".e.abcd.tmp", CREATED)
    with pytest.raises(UserError, match="no saved ensemble under .*run digit-search ensemble first"):
        latest_ensemble(tmp_path)


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path):
    stale = saved_at(tmp_path, ".e.old1.tmp", CREATED)
    saved_at(tmp_path, ".e.new1.tmp", CREATED)  # fresh: kept
    aside = saved_at(tmp_path, ".e.old2.old", CREATED)
    hour_ago = time.time() - 3600
    for path in (stale, aside):
        os.utime(path, (hour_ago, hour_ago))
    keep = saved_at(tmp_path, ".keep", CREATED)
    os.utime(keep, (hour_ago, hour_ago))  # hidden, but not a name digit-search writes
    assert newest_ensemble(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e.new1.tmp", ".keep"]


def test_the_newest_ensemble_of_the_reported_studies_is_found(tmp_path):
    trials = [optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.9) for _ in range(3)]
    for number, trial in enumerate(trials):
        trial.number = number
    studies = [LoadedStudy("cnn", {"data_hash": "h", "split": "s"}, optuna.study.StudyDirection.MAXIMIZE, trials)]
    saved_at(tmp_path, "old", "2025-01-01T00:00:00+00:00")
    saved_at(tmp_path, "ours", "2025-01-02T00:00:00+00:00")
    saved_at(tmp_path, "other-study", "2025-01-03T00:00:00+00:00", studies=["cnn", "vit"])
    saved_at(tmp_path, "other-data", "2025-01-04T00:00:00+00:00", data_hash="x")
    saved_at(tmp_path, "gone-trial", "2025-01-05T00:00:00+00:00", members=[member_record(trial=99)])
    saved_at(tmp_path, ".ours.x.tmp", "2025-01-06T00:00:00+00:00")
    saved_at(tmp_path, "naive", "2025-01-07T00:00:00")
    write_folder(tmp_path / "broken", "{")
    directory, manifest = newest_matching_ensemble(tmp_path, studies)
    assert directory == tmp_path / "ours" and manifest.created.day == 2
    assert newest_matching_ensemble(tmp_path / "missing", studies) is None


# ---- what --save may replace ----------------------------------------------------------------------


def small_manifest(**changes) -> Manifest:
    members = (ManifestMember("cnn", 2, "cnn", "cnn", {}, 1.0, "member-00.safetensors", 0.8, val_accuracy=0.9),)
    fields = dict(
        created=datetime.now(timezone.utc),
        method="greedy",
        tta=False,
        studies=("cnn",),
        data_hash="h",
        split="s",
        members=members,
        calibration="temperature",
    )
    return Manifest(**{**fields, **changes})


def save(directory: Path, **changes) -> Path:
    return save_ensemble(directory, small_manifest(**changes), [{"w": torch.zeros(2)}], {})


def test_a_saved_ensemble_is_replaced_by_a_new_one_and_nothing_is_left_beside_it(tmp_path):
    save(tmp_path / "e", method="best")
    assert folder_problem(tmp_path / "e") is None
    save(tmp_path / "e", method="average")
    assert read_manifest(tmp_path / "e").method == "average"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [MANIFEST, "member-00.safetensors"]


def test_saving_copies_the_user_space_file_inside(tmp_path):
    (tmp_path / "mine.py").write_text("NAME = 'mine'\n")
    member = ManifestMember("mlp", 0, "mlp", "mine", {}, 1.0, "member-00.safetensors", space_file="spaces/mine.py")
    save_ensemble(
        tmp_path / "e",
        small_manifest(members=(member,)),
        [{"w": torch.zeros(1)}],
        {"spaces/mine.py": tmp_path / "mine.py"},
    )
    assert (tmp_path / "e" / "spaces" / "mine.py").read_text() == "NAME = 'mine'\n"
    assert folder_problem(tmp_path / "e") is None


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: write_folder(d, {"name": "my-web-app", "version": 3}, files=("index.html",)),
            "not a format-1 saved ensemble",
        ),
        (
            lambda d: write_folder(d, {"members": [{"weights_file": "app.js"}]}, files=("app.js",)),
            "not a format-1 saved ensemble",
        ),
        (
            lambda d: (save(d), (d / "notes.txt").write_text("mine")),
            "it holds notes.txt, which its manifest.json does not name",
        ),
        (lambda d: (save(d), (d / "spaces").mkdir()), "it holds spaces, which its manifest.json does not name"),
        (lambda d: (save(d), (d / "link").symlink_to(d.parent)), "it holds a symbolic link, link"),
        (lambda d: (d.parent.joinpath("elsewhere").mkdir(), d.symlink_to(d.parent / "elsewhere")), "not a folder"),
        (lambda d: d.write_text("a file"), "not a folder"),
    ],
)
def test_save_never_replaces_what_digit_search_did_not_write(tmp_path, make, message):
    target = tmp_path / "target"
    make(target)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="exists and is not a saved ensemble") as caught:
        save(target)
    assert message in str(caught.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_save_never_replaces_the_working_directory_its_ancestors_or_the_database_folder(tmp_path, monkeypatch):
    work = save(tmp_path / "work" / "sub")  # a real saved ensemble, so only the place refuses it
    monkeypatch.chdir(work)
    for target in (".", work, work.parent, "..", "/"):
        with pytest.raises(UserError, match="is the working directory or holds it"):
            check_save_dir(target)
    monkeypatch.chdir("/")
    database = tmp_path / "db" / "studies.db"
    save(tmp_path / "db")
    database.write_bytes(b"")
    for target in (tmp_path / "db", tmp_path):
        with pytest.raises(UserError, match="holds the study database"):
            check_save_dir(target, protected=[database])
    assert check_save_dir(tmp_path / "new", protected=[database]) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_save_dir(tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.parametrize(
    "save_to, message",
    [
        (".", "is the working directory or holds it"),
        ("{tmp}", "is the working directory or holds it"),
        ("{tmp}/studies", "holds the study database"),
        ("{tmp}/app", "exists and is not a saved ensemble"),
    ],
)
def test_the_ensemble_command_refuses_such_a_save_before_any_work_and_deletes_nothing(
    tmp_path, monkeypatch, capsys, save_to, message
):
    """The data-loss cases once reported: a web app's folder with a manifest.json, `--save .`, the database's folder."""
    for folder in (tmp_path, tmp_path / "studies", tmp_path / "app"):
        folder.mkdir(exist_ok=True)
        (folder / MANIFEST).write_text(json.dumps({"name": "web app", "members": ["x"]}))
    (tmp_path / "studies" / "studies.db").write_bytes(b"SQLite format 3\x00")
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    storage = f"sqlite:///{tmp_path}/studies/studies.db"
    code = main(
        ["ensemble", "--studies", "cnn", "--storage", storage, "--save", save_to.replace("{tmp}", str(tmp_path))]
    )
    assert code == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
