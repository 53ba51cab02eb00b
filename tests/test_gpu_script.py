"""bench/gpu.py, the run prepared for a short GPU window: its CPU dry run and its fail-fast checks.

GPU time comes rarely, so the script must not rot between windows. These tests need no GPU and no
../shared: the Kaggle-format files are written from the embedded sample.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search.data.digits import load_digits

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu.py"
STEPS = ("throughput", "time_to_accuracy", "packing", "auto")
VARIANTS = ("plain", "ours", "ours_fp32", "ours_no_channels_last", "ours_compiled")
DEVICE_FILE_LIMIT = 8  # files a device run brings back from $OUT


def write_kaggle_files(directory: Path, train_rows: int = 1000, test_rows: int = 200) -> Path:
    """train.csv (label, pixel0..783) and test.csv (pixel0..783) from the embedded sample's digits."""
    digits = load_digits()
    directory.mkdir(parents=True)
    pixels = ",".join(f"pixel{i}" for i in range(784))
    train = np.column_stack(
        [digits.train_labels[:train_rows], digits.train_images[:train_rows].reshape(train_rows, -1)]
    )
    np.savetxt(directory / "train.csv", train, fmt="%d", delimiter=",", header=f"label,{pixels}", comments="")
    test = digits.test_images[:test_rows].reshape(test_rows, -1)
    np.savetxt(directory / "test.csv", test, fmt="%d", delimiter=",", header=pixels, comments="")
    return directory


def run_script(*args: str, timeout: float, prelude: str = "") -> subprocess.CompletedProcess:
    """gpu.py as a script in a fresh interpreter; `prelude` runs first (e.g. to hide a package)."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = {[str(SCRIPT), *args]!r}\nrunpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu.py: error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_cpu_dry_run_records_every_step(tmp_path):
    data = write_kaggle_files(tmp_path / "data")
    out, work = tmp_path / "out", tmp_path / "work"
    # the auto step is left out to keep the suite under 10 minutes: it is `digit-search auto`, which
    # tests/test_auto.py runs for its whole 3-minute budget
    result = run_script(
        "--device",
        "cpu",
        "--quick",
        "--steps",
        ",".join(STEPS[:3]),
        "--data",
        str(data),
        "--out",
        str(out),
        "--work",
        str(work),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    assert sorted(path.name for path in out.iterdir()) == ["commands.log", "figures.json", "gpu.log", "summary.txt"]
    assert len(list(out.iterdir())) <= DEVICE_FILE_LIMIT
    figures = json.loads((out / "figures.json").read_text())
    assert figures["meta"]["device"] == "cpu" and figures["meta"]["quick"] is True
    assert figures["meta"]["digits"] == {"train": 900, "val": 100}
    steps = figures["steps"]
    assert list(steps) == list(STEPS[:3])
    for name in STEPS[:3]:
        assert steps[name]["seconds"] > 0
        assert "error" not in steps[name], (name, steps[name])

    # 1: every variant measured, or skipped with its reason; the ablation really changed what it says
    models = steps["throughput"]["models"]
    for model in ("bn-cnn", "vit-seed"):
        for variant in VARIANTS:
            entry = models[model][variant]
            assert entry.get("images_per_second", 0) > 0 or entry["skipped"], (model, variant, entry)
        assert models[model]["plain"]["images_per_second"] > 0 and models[model]["ours"]["images_per_second"] > 0
        assert models[model]["ours_fp32"]["autocast"] == "fp32"
        ours = models[model]["ours"]["images_per_second"]
        assert models[model]["ratio_to_plain"]["ours"] == pytest.approx(
            ours / models[model]["plain"]["images_per_second"]
        )
    bn = models["bn-cnn"]
    assert bn["ours"]["channels_last"] is True and bn["ours_no_channels_last"]["channels_last"] is False
    assert "not applicable" in models["vit-seed"]["ours_no_channels_last"]["skipped"]
    for model in ("bn-cnn", "vit-seed"):
        compiled = models[model]["ours_compiled"]
        assert compiled.get("compile_seconds", -1) >= 0 or compiled["skipped"].startswith("torch.compile failed")

    # 2: the train command ran to its end and each epoch was timed from launch
    tta = steps["time_to_accuracy"]
    (run,) = tta["runs"]
    assert len(run["curve"]) == tta["epochs"] == 1
    assert 0 <= run["final_accuracy"] <= 1
    assert 0 < run["curve"][0]["train_seconds"] < run["curve"][0]["seconds_from_launch"] <= run["command_seconds"]
    assert (run["seconds_from_launch_to_target"] is None) == (run["epochs_to_target"] is None)

    # 3: one figure per K, from K processes on one study
    packing = steps["packing"]["per_k"]
    assert list(packing) == ["1", "2"]
    for k, entry in packing.items():
        assert entry["processes"] == int(k)
        assert entry["trials_per_hour"] == pytest.approx(entry["finished_in_window"] * 3600 / entry["window_seconds"])
        assert entry["window_seconds"] >= 10
    assert (work / "pack.db").exists()

    summary = (out / "summary.txt").read_text()
    assert all(f"{name} (" in summary for name in STEPS[:3])
    assert summary in result.stdout and summary in (out / "gpu.log").read_text()
    assert "===== train seed 0" in (out / "commands.log").read_text()


def test_missing_data_folder_is_one_line(tmp_path):
    line = one_error_line(
        run_script("--device", "cpu", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), timeout=60)
    )
    assert "nowhere: no such folder" in line


def test_data_folder_without_test_file_is_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("label,pixel0\n")
    line = one_error_line(
        run_script("--device", "cpu", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), timeout=60)
    )
    assert "no test.csv or test.csv.gz" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    data = write_kaggle_files(tmp_path / "data", train_rows=20, test_rows=5)
    line = one_error_line(
        run_script("--device", "cuda", "--data", str(data), "--out", str(tmp_path / "out"), timeout=120)
    )
    assert "sees no CUDA device" in line


def test_missing_optuna_is_one_line(tmp_path):
    data = write_kaggle_files(tmp_path / "data", train_rows=20, test_rows=5)
    hide = "import sys; sys.modules['optuna'] = None  # `import optuna` now raises ImportError"
    line = one_error_line(
        run_script("--device", "cpu", "--data", str(data), "--out", str(tmp_path / "out"), timeout=120, prelude=hide)
    )
    assert "optuna is not importable" in line and "gpu.sh" in line
