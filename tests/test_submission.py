"""The Kaggle submission file and its lineage: format, atomic write, refusals."""

import hashlib
import json
import os

import numpy as np
import pytest

from search.ensemble import submission
from search.ensemble.submission import HEADER, check_submission, lineage_path, lineage_problem, write_submission
from search.errors import UserError


def test_submission_has_header_ids_from_one_and_one_row_per_image(tmp_path):
    labels = np.array([3, 0, 9, 7, 7])
    csv_path, json_path = write_submission(tmp_path / "submission.csv", labels, {"method": "greedy"})
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "ImageId,Label" == HEADER
    assert lines[1:] == ["1,3", "2,0", "3,9", "4,7", "5,7"]
    assert json_path == tmp_path / "submission.json"
    lineage = json.loads(json_path.read_text())
    assert lineage["method"] == "greedy" and lineage["rows"] == 5 and lineage["submission"] == "submission.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv", "submission.json"]


def test_lineage_goes_beside_the_submission_with_the_same_stem(tmp_path):
    assert lineage_path(tmp_path / "runs" / "kaggle-1.csv") == tmp_path / "runs" / "kaggle-1.json"


def test_numpy_values_in_the_lineage_become_plain_json(tmp_path):
    _, json_path = write_submission(
        tmp_path / "s.csv", np.arange(10), {"weights": np.array([0.5, 0.5]), "accuracy": np.float32(0.5)}
    )
    lineage = json.loads(json_path.read_text())
    assert lineage["weights"] == [0.5, 0.5] and lineage["accuracy"] == 0.5


def test_a_submission_is_readable_by_others(tmp_path):
    csv_path, _ = write_submission(tmp_path / "s.csv", np.arange(10), {})
    assert csv_path.stat().st_mode & 0o044 == 0o044


def test_a_failing_check_leaves_no_file_and_keeps_an_older_submission(tmp_path, monkeypatch):
    target = tmp_path / "submission.csv"
    target.write_text("old\n")

    def broken_text(labels):
        return HEADER + "\n1,3\n"  # one row short

    monkeypatch.setattr(submission, "submission_text", broken_text)
    with pytest.raises(ValueError, match="1 rows, expected 2"):
        write_submission(target, np.array([3, 4]), {})
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


def test_an_unserialisable_lineage_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        write_submission(tmp_path / "submission.csv", np.array([1, 2]), {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_submission(tmp_path / "submission.csv", np.arange(100) % 10, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("ImageId,label\n1,3\n", "first line"),
        (HEADER + "\n1,3\n", "1 rows, expected 2"),
        (HEADER + "\n1,3\n3,4\n", "line 3"),
        (HEADER + "\n1,3\n2,10\n", "line 3"),
        (HEADER + "\n1,3\n2,x\n", "line 3"),
        (HEADER + "\n1,3\n2,-1\n", "line 3"),
    ],
)
def test_check_refuses_malformed_submissions(tmp_path, text, message):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        check_submission(path, rows=2)


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing/submission.csv", "does not exist"),
        (".", "is a directory"),
        ("submission.json", ".csv"),
    ],
)
def test_bad_out_paths_are_user_errors_naming_the_path(tmp_path, name, message):
    with pytest.raises(UserError, match=message) as caught:
        write_submission(tmp_path / name, np.array([1]), {})
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_versions_name_the_packages_behind_a_prediction():
    assert {"python", "torch", "numpy", "optuna", "digit-search"} <= set(submission.versions())


def test_the_lineage_records_the_hash_of_its_submission_so_a_stale_pair_is_detected(tmp_path):
    csv_path, json_path = write_submission(tmp_path / "s.csv", np.array([3, 1, 4]), {"method": "greedy"})
    lineage = json.loads(json_path.read_text())
    assert lineage["submission_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert lineage_problem(csv_path) is None
    csv_path.write_text(HEADER + "\n1,3\n2,1\n3,5\n")  # a newer submission, its lineage not yet written
    assert "records another submission than s.csv" in lineage_problem(csv_path)
    json_path.unlink()
    assert "cannot compare" in lineage_problem(csv_path)


def test_the_submission_is_renamed_into_place_before_its_lineage(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def recording_replace(source, target):
        renamed.append(os.path.basename(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_submission(tmp_path / "submission.csv", np.arange(10), {})
    assert renamed == ["submission.csv", "submission.json"]


def test_a_kill_between_the_two_renames_leaves_a_detectably_stale_lineage(tmp_path, monkeypatch):
    write_submission(tmp_path / "s.csv", np.array([1, 2]), {"run": 1})
    real_replace = os.replace

    def killed_before_the_lineage(source, target):
        if str(target).endswith(".json"):
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_before_the_lineage)
    with pytest.raises(KeyboardInterrupt):
        write_submission(tmp_path / "s.csv", np.array([7, 7]), {"run": 2})
    assert (tmp_path / "s.csv").read_text() == HEADER + "\n1,7\n2,7\n"
    assert json.loads((tmp_path / "s.json").read_text())["run"] == 1
    assert lineage_problem(tmp_path / "s.csv") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.json"]
