"""`digit-search auto` end to end: the short budget on the embedded sample, and its one-line refusals."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from search.ensemble.submission import check_submission

BUDGET_SECONDS = 180
SLACK = 0.05  # the command ends within 5% of its budget


def digit_search(*args, cwd, timeout):
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget", "soon"], "--budget 'soon' is not a duration"),
        (["--budget", "30s"], "under 60s"),
        (["--spaces", "cnn,mlp"], "unknown family 'mlp'"),
        (["--spaces", "cnn,cnn"], "names a family twice"),
        (["--seed", "-1"], "--seed must be between 0"),
        (["--out", "missing-folder/submission.csv"], "does not exist"),
        (["--save", "."], "--save '.'"),
    ],
)
def test_bad_options_are_one_line_before_anything_is_written(args, expected, tmp_path):
    done = digit_search("auto", *args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert not (tmp_path / "studies").exists()


@pytest.mark.slow
def test_a_three_minute_budget_ends_in_time_with_a_submission_lineage_saved_ensemble_and_report(tmp_path):
    started = time.monotonic()
    done = digit_search("auto", "--budget", "3m", "--threads", "2", cwd=tmp_path, timeout=BUDGET_SECONDS * 2)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert wall <= BUDGET_SECONDS * (1 + SLACK) + 5, (
        f"{wall:.0f}s for a {BUDGET_SECONDS}s budget (5s for the interpreter)\n{done.stdout}"
    )

    check_submission(tmp_path / "submission.csv", 1000)  # the embedded sample's 1,000 test digits
    lineage = json.loads((tmp_path / "submission.json").read_text())
    assert lineage["auto"]["budget_seconds"] == BUDGET_SECONDS
    assert set(lineage["auto"]["phases"]) >= {"measure", "portfolio", "search", "ensemble"}
    assert 0.5 < lineage["validation"]["submitted"]["accuracy"] <= 1  # chance is 0.1
    assert lineage["members"] and all(m["study"].startswith("auto-") for m in lineage["members"])

    saved = tmp_path / lineage["ensemble_dir"]
    assert (saved / "manifest.json").is_file()
    assert list((tmp_path / "reports").glob("report-*.html"))
    for line in ("family    best val", "ensemble", "time: measure"):
        assert line in done.stdout

    # the saved ensemble predicts as the submission says, through the Python API
    from search.api import load_ensemble
    from search.data.digits import load_digits

    test_images = load_digits(cache_dir=tmp_path / "cache").test_images
    labels = load_ensemble(str(saved), device="cpu").predict(test_images)
    submitted = np.loadtxt(tmp_path / "submission.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    assert (labels == submitted).mean() > 0.99  # refit models are saved as they predicted the test digits


@pytest.mark.slow
def test_ctrl_c_writes_the_best_submission_so_far_and_the_next_run_does_not_train_a_completed_reference_again(tmp_path):
    command = [sys.executable, "-m", "search.cli", "auto", "--budget", "3m", "--threads", "2", "--spaces", "cnn"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stdout:  # the portfolio's first config, bn-cnn, reports when it completes
        seen.append(line)
        if line.startswith("  bn-cnn, "):
            break
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=60)
    assert time.monotonic() - started < 30  # within seconds, not at the end of the trial it cut
    assert process.returncode == 130, "".join(seen) + rest + errors
    assert "Traceback" not in errors and "the submission is the best of what was complete" in errors
    assert "interrupted during the portfolio: submitting the best ensemble of what is complete" in rest
    check_submission(tmp_path / "submission.csv", 1000)
    lineage = json.loads((tmp_path / "submission.json").read_text())
    assert lineage["auto"]["cut_short"] == "portfolio"
    assert [m["study"] for m in lineage["members"]] == ["auto-cnn"]

    again = digit_search("auto", "--budget", "60s", "--threads", "2", "--spaces", "cnn", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained by an earlier run: bn-cnn" in again.stdout
    assert "  bn-cnn, " not in again.stdout  # not trained again
