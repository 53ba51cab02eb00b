"""One prepared run for a short GPU window: every GPU figure the project tracks, side by side, in one folder.

    bash bench/gpu.sh --out "$OUT"                      # on the GPU machine: installs the carried wheels, then this
    .venv/bin/python bench/gpu.py --device cpu --quick --out /tmp/gpu-dry    # the CPU dry run, ~2-3 min

Steps, each timed, each recorded in OUT/figures.json as soon as it ends (a run cut short keeps what
it measured):

1. throughput: training images/s of search.train.trainer.train for bn-cnn and vit-seed against the
   notebook loop (bench/plain_loop.py) on the same device, and the ablation: bf16 autocast off,
   channels_last off, torch.compile on (its compile time apart from its steady images/s);
2. time_to_accuracy: `digit-search train --space cnn --reference bn-cnn`, every epoch timed from
   launch (bench/time_to_accuracy.py's run_ours), and when it first reached 99.5%;
3. packing: trials/hour with K `digit-search run` processes sharing one SQLite study on the device,
   finished trials counted over a fixed window from launch (Ray's wheel is too big to carry);
4. auto: `digit-search auto --budget B` to a submission, and the validation accuracy its lineage gives.

OUT gets figures.json, summary.txt (also printed), gpu.log (everything printed) and commands.log
(every command's output); nothing else. Scratch (databases, caches, the submission) goes to --work,
by default a temporary folder removed at the end. Anything missing (the data folder, CUDA when
asked for, Optuna/SQLAlchemy/plotly) stops the run at once with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (str(REPO), str(BENCH)):  # search/spaces, and plain_loop / time_to_accuracy beside this file
    if _path not in sys.path:
        sys.path.insert(0, _path)

DATA_CANDIDATES = (REPO / ".gpu-data", Path("/work/shared/data/digit-recognizer"))
EXIT_MISSING = 2
TARGET = 0.995  # as time_to_accuracy.TARGET; repeated so the checks run before torch is imported
VAL_IMAGES = 256  # validation digits per throughput measurement: one eval batch, not timed
MB = 2**20
# "epoch 3/4: ... val accuracy 99.52% (12.3s, 1950 images/s)": the trainer's own seconds, beside the launch clock
TRAIN_SECONDS = re.compile(r"epoch \d+/\d+: .* val accuracy [\d.]+% \((?P<seconds>[\d.]+)s,")


@dataclass(frozen=True)
class Plan:
    """What the run measures and for how long; FULL sizes it for ~7.5 minutes on one H200."""

    models: tuple[str, ...] = ("bn-cnn", "vit-seed")
    ours_images: int = 32768  # per measurement of our trainer (a multiple of every batch size: no recompiles)
    plain_images: int = 4096  # the plain loop is CPU-bound (per-image Pillow augmentation)
    compile_backend: str = "inductor"
    tta_epochs: int = 4  # bn-cnn's reference recipe passed 99.5% after 4 epochs on every seed tried on CPU
    tta_seeds: tuple[int, ...] = (0, 1)
    pack_counts: tuple[int, ...] = (1, 2, 4, 8)
    pack_window: float = 40.0  # seconds from launch over which finished trials are counted
    pack_epochs: int = 2
    auto_budget: float = 120.0  # seconds; shrunk to what the deadline leaves, refused under 60
    auto_spaces: str | None = None  # None: auto's default families
    limit: int | None = None  # --limit for train and run
    auto_limit: int | None = None
    deadline: float = 470.0  # seconds for the whole run; a step that no longer fits is skipped, saying so


FULL = Plan()
# the plain loop's warm-up takes 5 batches of 64, so 336 leaves one timed batch
QUICK = Plan(
    ours_images=128,
    plain_images=336,
    compile_backend="eager",
    tta_epochs=1,
    tta_seeds=(0,),
    pack_counts=(1, 2),
    pack_window=10.0,
    pack_epochs=1,
    auto_budget=60.0,
    auto_spaces="cnn",
    limit=500,
    auto_limit=300,
    deadline=420.0,
)
AUTO_MIN_BUDGET = 60.0  # digit-search auto refuses less
AUTO_GRACE = 90.0  # start-up and the final phases may run past the budget by this much before we stop it
STOP_GRACE = 15.0  # seconds a packed `run` gets to fail and re-enqueue its trial after SIGINT


class Missing(Exception):
    """Something the run needs is not there: reported as one line, exit status 2."""


# --- checks, before anything heavy ---------------------------------------------------------------


def find_data(option: str | None) -> Path:
    if option is None:
        found = next((path for path in DATA_CANDIDATES if path.is_dir()), None)
        if found is None:
            raise Missing(
                f"no --data given and none of {', '.join(map(str, DATA_CANDIDATES))} exists; "
                "copy Kaggle's train.csv.gz and test.csv.gz into .gpu-data (bench/gpu_prepare.sh does)"
            )
        option = str(found)
    data = Path(option).resolve()
    if not data.is_dir():
        raise Missing(f"--data {option}: no such folder (it needs Kaggle's train.csv(.gz) and test.csv(.gz))")
    for name in ("train", "test"):
        if not any((data / f"{name}{suffix}").is_file() for suffix in (".csv", ".csv.gz")):
            raise Missing(f"--data {option}: no {name}.csv or {name}.csv.gz in it")
    return data


def check_device(name: str):
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Missing(
                f"--device {name}: torch {torch.__version__} sees no CUDA device (built for CUDA "
                f"{torch.version.cuda}); run with --device cpu for the dry run"
            )
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise Missing(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif name != "cpu":
        raise Missing(f"--device {name}: expected cpu, cuda or cuda:N")
    return torch.device(name)


def check_packages() -> None:
    """Optuna and SQLAlchemy for the studies, and the whole CLI importable (search.api loads plotly too)."""
    for module in ("optuna", "sqlalchemy"):
        try:
            __import__(module)
        except ImportError as err:
            raise Missing(
                f"{module} is not importable ({err}); on the GPU machine run through bench/gpu.sh "
                "with .whl carried (bench/gpu_prepare.sh downloads the wheels)"
            ) from None
    try:
        import search.api  # noqa: F401 - what every digit-search command imports
    except ImportError as err:
        raise Missing(
            f"digit-search's commands cannot import ({err}); carry that package's wheel in .whl (bench/gpu_prepare.sh)"
        ) from None


# --- output ----------------------------------------------------------------------------------------


class Tee(io.TextIOBase):
    """Writes to a stream and to the run's log, so gpu.log holds everything printed."""

    def __init__(self, stream, log) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.stream.flush()
        self.log.write(text)
        self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()


class Record:
    """figures.json, rewritten whole (temporary file, then rename) after every step."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.path = out / "figures.json"
        self.data: dict[str, Any] = {"meta": meta, "steps": {}}
        self.save()

    def step(self, name: str, figures: dict[str, Any]) -> None:
        self.data["steps"][name] = figures
        self.save()

    def save(self) -> None:
        staged = self.path.with_name(f".{self.path.name}.tmp")
        staged.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(staged, self.path)


class Run:
    """What every step shares: the plan, paths, device, how to start digit-search, the clock."""

    def __init__(self, plan: Plan, args: argparse.Namespace, data: Path, out: Path, work: Path, device) -> None:
        self.plan, self.data, self.out, self.work, self.device = plan, data, out, work, device
        self.device_option, self.quick = args.device, args.quick
        self.started = time.perf_counter()
        self.cli = [
            sys.executable,
            "-m",
            "search.cli",
        ]  # no venv script on the GPU machine: the checkout is on PYTHONPATH
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
        self.commands_log = out / "commands.log"
        self.commands_log.write_text("")
        self.reserve = 0.0  # seconds of the deadline that earlier steps leave to later ones

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.plan.deadline - self.elapsed()

    def limit_args(self, limit: int | None) -> list[str]:
        return ["--limit", str(limit)] if limit is not None else []

    def keep_output(self, title: str, path: Path | None, text: str | None = None) -> None:
        """Append a command's output (its file, or `text`) to commands.log under a header."""
        if text is None:
            text = path.read_text(errors="replace") if path is not None and path.exists() else ""
        with self.commands_log.open("a") as log:
            log.write(f"\n===== {title}\n{text or '(no output)'}\n")


def tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(line.strip() for line in text[-lines:]) or "(no output)"


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# --- step 1: trainer throughput --------------------------------------------------------------------


def step_throughput(run: Run, split) -> dict[str, Any]:
    from plain_loop import build_reference, plain_images_per_second

    from search.train.allocator import keep_freed_memory

    plan, device = run.plan, run.device
    models: dict[str, dict[str, Any]] = {name: {} for name in plan.models}
    # the plain loop first: keep_freed_memory (our commands call it) changes malloc for the whole process
    for name in plan.models:
        count = min(plan.plain_images, len(split.train_labels))
        model, _ = build_reference(name)
        started = time.perf_counter()
        speed = plain_images_per_second(model, split.train_images[:count], split.train_labels[:count], device=device)
        models[name]["plain"] = {"images_per_second": speed, "images": count, "seconds": time.perf_counter() - started}
        print(f"  {name} plain loop: {speed:,.0f} images/s", flush=True)
        del model
        release(device)
    keep_freed_memory()
    variants = {
        "ours": {},
        "ours_fp32": {"fp32": True},
        "ours_no_channels_last": {"channels_last": False},
        "ours_compiled": {"compile_backend": plan.compile_backend},
    }
    for name in plan.models:
        for key, options in variants.items():
            try:
                figures = measure_ours(name, split, plan.ours_images, device, **options)
            except Exception as err:  # one variant failing (a compile, say) leaves the others standing
                traceback.print_exc()
                reason = "torch.compile failed" if "compile_backend" in options else "failed"
                figures = {"skipped": f"{reason}: {one_line(err)}"}
            release(device)
            models[name][key] = figures
            if "images_per_second" in figures:
                print(
                    f"  {name} {key}: {figures['images_per_second']:,.0f} images/s"
                    + (f", compile {figures['compile_seconds']:.1f}s" if "compile_seconds" in figures else ""),
                    flush=True,
                )
            else:
                print(f"  {name} {key}: skipped ({figures['skipped']})", flush=True)
        plain = models[name]["plain"]["images_per_second"]
        models[name]["ratio_to_plain"] = {
            key: models[name][key]["images_per_second"] / plain
            for key in variants
            if "images_per_second" in models[name][key]
        }
        compiled, eager = models[name]["ours_compiled"], models[name]["ours"]
        if "warmup_seconds" in compiled and "warmup_seconds" in eager:
            # the compiled warm-up epoch did the same work as the eager one, plus compiling
            compiled["compile_seconds"] = max(0.0, compiled["warmup_seconds"] - eager["warmup_seconds"])
            print(f"  {name} ours_compiled: compile {compiled['compile_seconds']:.1f}s", flush=True)
    return {"models": models}


def measure_ours(
    name: str,
    split,
    images: int,
    device,
    *,
    fp32: bool = False,
    channels_last: bool = True,
    compile_backend: str | None = None,
) -> dict[str, Any]:
    """Our trainer's images/s on `images` training digits: one warm-up epoch (timed: it holds any compile), then one timed epoch."""
    import torch
    from plain_loop import build_reference

    from search.train.trainer import ComputePlan, TrainingData, train

    model, config = build_reference(name)
    count = min(images, len(split.train_labels))
    data = TrainingData.from_numpy(
        split.train_images[:count],
        split.train_labels[:count],
        split.val_images[:VAL_IMAGES],
        split.val_labels[:VAL_IMAGES],
        None,
        device,
    )
    if not channels_last and not ComputePlan.for_model(model, device).channels_last:
        return {"skipped": "not applicable: no BatchNorm2d convs, so the trainer never uses channels_last here"}
    options = {"precision": "fp32" if fp32 else "auto", "channels_last": None if channels_last else False}
    compute = ComputePlan.for_model(model, device, **options)
    if compile_backend is not None:
        torch._dynamo.reset()  # no graphs from an earlier model: the warm-up pays the whole compile
        model.compile(backend=compile_backend)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    train(model, data, config, epochs=1, **options)  # ends by copying probabilities to the host: synchronised
    warmup = time.perf_counter() - started
    result = train(model, data, config, epochs=1, **options)
    figures = {
        "images_per_second": result.images_per_second,
        "images": count,
        "batch_size": config.batch_size,
        "warmup_seconds": warmup,
        "autocast": str(compute.autocast).removeprefix("torch.") if compute.autocast else "fp32",
        "channels_last": compute.channels_last,
    }
    if compile_backend is not None:
        figures["compile_backend"] = compile_backend
    if device.type == "cuda":
        figures["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / MB
    return figures


def release(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- step 2: time to 99.5% -------------------------------------------------------------------------


def step_time_to_accuracy(run: Run) -> dict[str, Any]:
    from time_to_accuracy import REFERENCE, run_ours

    plan = run.plan
    runs = []
    for seed in plan.tta_seeds:
        if run.left() < 20:
            runs.append({"seed": seed, "skipped": f"out of time ({run.left():.0f}s of the deadline left)"})
            continue
        train_seconds: list[float] = []
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            match = TRAIN_SECONDS.match(line)
            if match:
                train_seconds.append(float(match["seconds"]))

        output = run.work / f"train-seed{seed}.err"
        started = time.perf_counter()
        try:
            with output.open("w") as stderr:
                outcome = run_ours(
                    str(run.data),
                    plan.tta_epochs,
                    seed,
                    run.device_option,
                    cli=run.cli,
                    extra_args=run.limit_args(plan.limit),
                    cwd=run.work,
                    env=run.env,
                    stderr=stderr,
                    on_line=on_line,
                )
        except SystemExit as err:  # run_ours's way of saying the command failed
            runs.append({"seed": seed, "error": f"{err}: {tail(output)}"})
            continue
        finally:
            run.keep_output(f"train seed {seed}", None, "".join(lines))
            run.keep_output(f"train seed {seed} (stderr)", output)
        reached = outcome.seconds_to_target
        runs.append(
            {
                "seed": seed,
                "seconds_from_launch_to_target": reached,
                "epochs_to_target": outcome.epochs_to_target,
                "train_seconds_to_target": (
                    train_seconds[outcome.epochs_to_target - 1]
                    if reached is not None and len(train_seconds) >= outcome.epochs_to_target
                    else None
                ),
                "final_accuracy": outcome.final_accuracy,
                "command_seconds": time.perf_counter() - started,
                "curve": [
                    {
                        "epoch": epoch,
                        "seconds_from_launch": seconds,
                        "train_seconds": (train_seconds[epoch - 1] if epoch <= len(train_seconds) else None),
                        "val_accuracy": accuracy,
                    }
                    for epoch, (seconds, accuracy) in enumerate(outcome.curve, 1)
                ],
            }
        )
    return {"reference": REFERENCE, "epochs": plan.tta_epochs, "target": TARGET, "limit": plan.limit, "runs": runs}


# --- step 3: packed trials -------------------------------------------------------------------------


def step_packing(run: Run) -> dict[str, Any]:
    plan = run.plan
    database = run.work / "pack.db"
    storage = f"sqlite:///{database}"
    cores = os.cpu_count() or 1
    per_k: dict[str, Any] = {}
    for k in plan.pack_counts:
        if run.left() - run.reserve < plan.pack_window + STOP_GRACE:
            per_k[str(k)] = {
                "skipped": f"out of time ({run.left():.0f}s of the deadline left, {run.reserve:.0f}s of it kept for auto)"
            }
            continue
        per_k[str(k)] = pack(run, k, storage, database, threads=max(1, cores // k))
        figures = per_k[str(k)]
        print(
            f"  K={k}: {figures['finished_in_window']} trials finished in {plan.pack_window:.0f}s "
            f"-> {figures['trials_per_hour']:.0f} trials/hour ({figures['failed']} failed)",
            flush=True,
        )
    return {
        "epochs_per_trial": plan.pack_epochs,
        "window_seconds": plan.pack_window,
        "limit": plan.limit,
        "storage": "sqlite (one file, shared by the K processes)",
        "per_k": per_k,
    }


def pack(run: Run, k: int, storage: str, database: Path, threads: int) -> dict[str, Any]:
    """K `digit-search run` processes on one study and one device for the window; trials finished in it."""
    plan = run.plan
    study = f"pack{k}"
    launched = datetime.datetime.now()  # Optuna stamps trials with naive local time
    started = time.perf_counter()
    processes, outputs = [], []
    for index in range(k):
        command = [
            *run.cli,
            "run",
            "--space",
            "cnn",
            "--study",
            study,
            "--storage",
            storage,
            "--epochs",
            str(plan.pack_epochs),
            "--data",
            str(run.data),
            "--device",
            run.device_option,
            "--pruner",
            "none",
            "--trials",
            "100000",
            "--seed",
            str(index),
            "--threads",
            str(threads),
            *run.limit_args(plan.limit),
        ]
        output = run.work / f"pack{k}-{index}.log"
        outputs.append(output)
        with output.open("w") as handle:
            processes.append(
                subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=run.work, env=run.env)
            )
    while time.perf_counter() - started < plan.pack_window and any(p.poll() is None for p in processes):
        time.sleep(0.5)
    window_end = launched + datetime.timedelta(seconds=time.perf_counter() - started)
    early = [index for index, process in enumerate(processes) if process.poll() is not None]
    stop(processes)
    for index, output in enumerate(outputs):
        run.keep_output(f"run K={k} process {index}", output)
    trials = read_trials(database, study)
    finished = sorted(
        done for state, begun, done in trials if state == "COMPLETE" and done is not None and done <= window_end
    )
    durations = sorted(
        (done - begun).total_seconds()
        for state, begun, done in trials
        if state == "COMPLETE" and begun is not None and done is not None
    )
    first_start = min((begun for _, begun, _ in trials if begun is not None), default=None)
    window = (window_end - launched).total_seconds()
    figures: dict[str, Any] = {
        "processes": k,
        "threads_per_process": threads,
        "window_seconds": window,
        "finished_in_window": len(finished),
        "trials_per_hour": len(finished) * 3600 / window,
        # trials failed inside the window; the ones our SIGINT failed afterwards (and re-enqueued) are not counted
        "failed": sum(state == "FAIL" and done is not None and done <= window_end for state, _, done in trials),
        "first_trial_started_after": (first_start - launched).total_seconds() if first_start else None,
        "first_trial_finished_after": (finished[0] - launched).total_seconds() if finished else None,
        "median_trial_seconds": durations[len(durations) // 2] if durations else None,
    }
    if first_start is not None and window_end > first_start:
        # start-up (imports, CUDA, data) left out: the rate once the first trial had begun
        figures["trials_per_hour_after_startup"] = len(finished) * 3600 / (window_end - first_start).total_seconds()
    if early:
        first = early[0]
        figures["exited_early"] = (
            f"{len(early)} process(es) ended inside the window; process {first} with exit status "
            f"{processes[first].returncode}: {tail(outputs[first])}"
        )
    return figures


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGINT (the command fails and re-enqueues its running trial), then SIGKILL after STOP_GRACE."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.perf_counter() + STOP_GRACE
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_trials(database: Path, study: str) -> list[tuple[str, datetime.datetime | None, datetime.datetime | None]]:
    """(state, start, complete) of every trial of `study`, read straight from Optuna's SQLite tables."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
        rows = connection.execute(
            "SELECT t.state, t.datetime_start, t.datetime_complete FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = ?",
            (study,),
        ).fetchall()

    def stamp(text: str | None) -> datetime.datetime | None:
        return datetime.datetime.fromisoformat(text) if text else None

    return [(state, stamp(begun), stamp(done)) for state, begun, done in rows]


# --- step 4: auto ----------------------------------------------------------------------------------


def step_auto(run: Run) -> dict[str, Any]:
    plan = run.plan
    check = subprocess.run([*run.cli, "auto", "--help"], capture_output=True, text=True, cwd=run.work, env=run.env)
    if check.returncode != 0:
        last = (check.stderr.strip() or check.stdout.strip() or "no output").splitlines()[-1]
        return {"skipped": f"`digit-search auto --help` failed (exit status {check.returncode}): {last}"}
    budget = min(plan.auto_budget, run.left() - AUTO_GRACE / 2)
    if budget < AUTO_MIN_BUDGET:
        return {
            "skipped": f"out of time: {run.left():.0f}s of the deadline left, auto needs a budget of at least {AUTO_MIN_BUDGET:.0f}s"
        }
    submission = run.work / "submission.csv"
    command = [
        *run.cli,
        "auto",
        "--budget",
        f"{int(budget)}s",
        "--data",
        str(run.data),
        "--device",
        run.device_option,
        "--out",
        str(submission),
        "--storage",
        f"sqlite:///{run.work / 'auto.db'}",
        *run.limit_args(plan.auto_limit),
    ]
    command += ["--spaces", plan.auto_spaces] if plan.auto_spaces else []
    output = run.work / "auto.log"
    started = time.perf_counter()
    with output.open("w") as handle:
        try:
            status = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, cwd=run.work, env=run.env, timeout=budget + AUTO_GRACE
            ).returncode
        except subprocess.TimeoutExpired:
            status = None
    seconds = time.perf_counter() - started
    run.keep_output("auto", output)
    figures: dict[str, Any] = {
        "budget_seconds": int(budget),
        "spaces": plan.auto_spaces or "default",
        "limit": plan.auto_limit,
        "command_seconds": seconds,
        "exit_status": status,
    }
    if status is None:
        figures["error"] = f"still running {budget + AUTO_GRACE:.0f}s after launch, stopped: {tail(output)}"
        return figures
    lineage = submission.with_suffix(".json")
    if status != 0 or not lineage.exists():
        figures["error"] = f"exit status {status}, lineage {'found' if lineage.exists() else 'missing'}: {tail(output)}"
        return figures
    record = json.loads(lineage.read_text())
    figures["val_accuracy"] = record["validation"]["submitted"]["accuracy"]
    figures["submission_rows"] = record.get("rows")
    figures["validation"] = record["validation"]
    return figures


# --- the run ---------------------------------------------------------------------------------------


def describe(device, plan: Plan, data: Path, quick: bool) -> dict[str, Any]:
    import torch

    meta: dict[str, Any] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": str(device),
        "quick": quick,
        "plan": asdict(plan),
        "data": str(data),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": os.getloadavg(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "commit": git_commit(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        meta.update(
            gpu=properties.name,
            gpu_memory_gib=properties.total_memory / 2**30,
            multiprocessors=properties.multi_processor_count,
            capability=f"{properties.major}.{properties.minor}",
            bf16=torch.cuda.is_bf16_supported(),
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            query = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
            )
            meta["driver"] = query.stdout.strip() or None
    else:
        meta["cpu"] = platform.processor() or platform.machine()
    return meta


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None  # the GPU machine's copy of the checkout has no .git


def summarise(data: dict[str, Any], seconds: float) -> str:
    meta, steps = data["meta"], data["steps"]
    where = meta.get("gpu") or meta.get("cpu") or meta["device"]
    lines = [
        f"digit-search GPU run on {meta['device']} ({where}), torch {meta['torch']}, "
        f"{'quick dry run, ' if meta['quick'] else ''}{seconds:.0f}s in all"
    ]

    def state(figures: dict[str, Any]) -> str | None:
        if "skipped" in figures:
            return f"skipped: {figures['skipped']}"
        if "error" in figures:
            return f"ERROR: {figures['error']}"
        return None

    for name in ("throughput", "time_to_accuracy", "packing", "auto"):
        figures = steps.get(name)
        if figures is None:
            lines.append(f"{name}: not reached")
            continue
        head = f"{name} ({figures.get('seconds', 0):.0f}s)"
        if state(figures):
            lines.append(f"{head}: {state(figures)}")
            continue
        lines.append(f"{head}:")
        if name == "throughput":
            for model, results in figures["models"].items():
                parts = []
                for key in ("plain", "ours", "ours_fp32", "ours_no_channels_last", "ours_compiled"):
                    value = results.get(key, {})
                    if "images_per_second" in value:
                        extra = f" (compile {value['compile_seconds']:.1f}s)" if "compile_seconds" in value else ""
                        ratio = results["ratio_to_plain"].get(key)
                        parts.append(
                            f"{key} {value['images_per_second']:,.0f}"
                            + (f" ({ratio:.2f}x)" if ratio and key != "plain" else "")
                            + extra
                        )
                    else:
                        parts.append(f"{key} skipped")
                lines.append(f"  {model} images/s: " + ", ".join(parts))
        elif name == "time_to_accuracy":
            for entry in figures["runs"]:
                if state(entry):
                    lines.append(f"  seed {entry['seed']}: {state(entry)}")
                    continue
                reached = entry["seconds_from_launch_to_target"]
                trained = entry["train_seconds_to_target"]
                lines.append(
                    f"  seed {entry['seed']}: "
                    + (
                        f"{figures['target']:.1%} after {reached:.1f}s from launch ({trained:.1f}s of training, epoch {entry['epochs_to_target']})"
                        if reached is not None
                        else f"never reached {figures['target']:.1%}"
                    )
                    + f"; final {entry['final_accuracy']:.2%} after {figures['epochs']} epoch(s), command {entry['command_seconds']:.1f}s"
                )
        elif name == "packing":
            for k, entry in figures["per_k"].items():
                if state(entry):
                    lines.append(f"  K={k}: {state(entry)}")
                    continue
                after = entry.get("trials_per_hour_after_startup")
                lines.append(
                    f"  K={k}: {entry['finished_in_window']} trials in {entry['window_seconds']:.0f}s -> "
                    f"{entry['trials_per_hour']:.0f} trials/hour"
                    + (f" ({after:.0f} after start-up)" if after else "")
                    + f", {entry['failed']} failed"
                    + (f"; {entry['exited_early']}" if "exited_early" in entry else "")
                )
        elif name == "auto":
            lines.append(
                f"  budget {figures['budget_seconds']}s ({figures['spaces']}): validation accuracy "
                f"{figures['val_accuracy']:.2%}, command {figures['command_seconds']:.0f}s"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for figures.json, summary.txt, gpu.log and commands.log")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument(
        "--data",
        default=None,
        help="folder with Kaggle's train.csv(.gz) and test.csv(.gz) "
        f"(default: the first of {', '.join(str(path) for path in DATA_CANDIDATES)} that exists)",
    )
    parser.add_argument("--quick", action="store_true", help="everything tiny: the CPU dry run (~2-3 min)")
    parser.add_argument(
        "--work", default=None, help="scratch folder, kept (default: a temporary folder, removed at the end)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for the whole run; later steps that no longer fit are skipped",
    )
    parser.add_argument(
        "--steps", default="throughput,time_to_accuracy,packing,auto", help="comma-separated steps to run"
    )
    return parser.parse_args(argv)


STEPS = ("throughput", "time_to_accuracy", "packing", "auto")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.deadline is not None:
        plan = replace(plan, deadline=args.deadline)
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    try:
        unknown = [step for step in steps if step not in STEPS]
        if unknown:
            raise Missing(f"--steps: unknown step {unknown[0]!r}; choose from {', '.join(STEPS)}")
        data = find_data(args.data)
        out = Path(args.out).resolve()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise Missing(f"--out {args.out}: cannot create it ({err.strerror})") from None
        device = check_device(args.device)
        check_packages()
    except Missing as err:
        print(f"gpu.py: error: {err}", file=sys.stderr)
        return EXIT_MISSING

    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="digit-search-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    log = (out / "gpu.log").open("w")
    sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
    os.chdir(work)  # the data cache, studies/ and reports/ of every command land in the scratch folder
    try:
        return measure(Run(plan, args, data, out, work, device), steps)
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        log.close()
        os.chdir(REPO)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def measure(run: Run, steps: list[str]) -> int:
    from plain_loop import load_split

    record = Record(run.out, describe(run.device, run.plan, run.data, run.quick))
    print(
        f"{run.device} {record.data['meta'].get('gpu', '')}; data {run.data}; scratch {run.work}; "
        f"deadline {run.plan.deadline:.0f}s",
        flush=True,
    )
    started = time.perf_counter()
    split = load_split(run.data)  # parses the Kaggle files once and fills the cache the commands then read
    record.data["meta"]["data_load_seconds"] = time.perf_counter() - started
    record.data["meta"]["digits"] = {"train": len(split.train_labels), "val": len(split.val_labels)}
    failed = False
    for name in STEPS:
        if name not in steps:
            continue
        # packing gives up its last K values rather than the time auto needs at the least
        run.reserve = AUTO_MIN_BUDGET + AUTO_GRACE / 2 if name == "packing" and "auto" in steps else 0.0
        print(f"\n== {name} ({run.elapsed():.0f}s into the run)", flush=True)
        started = time.perf_counter()
        try:
            if run.left() <= 0:
                figures = {"skipped": "out of time before it began"}
            elif name == "throughput":
                figures = step_throughput(run, split)
            elif name == "time_to_accuracy":
                figures = step_time_to_accuracy(run)
            elif name == "packing":
                figures = step_packing(run)
            else:
                figures = step_auto(run)
        except Exception as err:  # a step that breaks is recorded, and the next one still runs
            traceback.print_exc()
            figures = {"error": one_line(err)}
        figures["seconds"] = time.perf_counter() - started
        failed |= "error" in figures or any("error" in entry for entry in figures.get("runs", []))
        record.step(name, figures)
    record.data["meta"]["load_average_after"] = os.getloadavg()
    record.data["meta"]["seconds"] = run.elapsed()
    record.save()
    summary = summarise(record.data, run.elapsed())
    (run.out / "summary.txt").write_text(summary)
    print("\n" + summary, end="", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
