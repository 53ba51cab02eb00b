"""The constants and option records every stage shares; standard library only, so any module may import it.

Each default is defined here once: the records' fields are what the Python API takes, and the
command line shows them in its help. A record checks its own values when it is built, before
anything is read or written, and names the argument that is wrong.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from search.errors import UserError

NUM_CLASSES = 10
IMAGE_SIDE = 28
IMAGE_SHAPE = (1, IMAGE_SIDE, IMAGE_SIDE)  # (channels, height, width) of one digit
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

STUDIES_HOME = Path("studies")  # default home of the database, artifacts, cache and saved ensembles
DEFAULT_STORAGE = f"sqlite:///{STUDIES_HOME / 'digit-search.db'}"
DEFAULT_ARTIFACTS = STUDIES_HOME / "artifacts"
DEFAULT_ENSEMBLES = STUDIES_HOME / "ensembles"
DEFAULT_CACHE = STUDIES_HOME / "cache"
DEFAULT_REPORTS = Path("reports")

DEFAULT_EPOCHS = 10  # the epochs of a trial's full training
MIN_LIMIT_ROWS = 20  # fewer training rows leave classes without a validation digit
RUNG_PRUNER = "rungs"  # successive halving over complete trainings on more and more images (search.study.rungs)
PRUNERS = (RUNG_PRUNER, "hyperband", "median", "none")  # the first is a new study's; the others prune on epochs
SAMPLERS = ("tpe", "random", "prior")
METHODS = ("greedy", "average", "best")
CALIBRATIONS = ("temperature", "none")
MAX_SEED = 2**32 - 1  # numpy's generators take seeds in 0..2**32-1


def check_at_least(name: str, value: int | None, least: int) -> None:
    if value is not None and value < least:
        raise UserError(f"--{name} must be at least {least}, got {value}")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < MIN_LIMIT_ROWS:
        raise UserError(f"--limit must be at least {MIN_LIMIT_ROWS} rows, got {limit}")


def check_seed(name: str, seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--{name} must be between 0 and {MAX_SEED}, got {seed}")


def check_positive_seconds(name: str, seconds: float | None) -> None:
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):  # NaN too
        raise UserError(f"--{name} must be positive seconds, got {seconds}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")


def check_split(val_fraction: float, split_seed: int) -> None:
    if not 0 < val_fraction <= 0.5:
        raise UserError(f"--val-fraction must be in (0, 0.5], got {val_fraction}")
    check_seed("split-seed", split_seed)


def study_names(text: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def check_studies(text: str | None) -> None:
    """--studies, when given, names at least one study, and each once."""
    if text is None:
        return
    names = study_names(text)
    if not names:
        raise UserError("--studies needs at least one study name, e.g. --studies cnn,vit")
    if len(set(names)) != len(names):
        raise UserError(f"--studies {text!r} names a study twice")


@dataclass(frozen=True, order=True)
class Deadline:
    """A moment after which no work may start, on the one clock every process of a run shares (also on
    other machines of a Ray cluster): the wall clock, in Unix seconds.

    A budget makes one (auto's Clock), and it is handed down as it is, to the run, the trial and the
    trainer, each of which takes the earlier of it and its own limit.
    """

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.time() + seconds)

    def left(self) -> float:
        """Seconds until the deadline; 0 once it has passed."""
        return max(0.0, self.at - time.time())

    def passed(self) -> bool:
        return time.time() > self.at

    def earlier(self, other: Deadline | None) -> Deadline:
        return self if other is None else min(self, other)


@dataclass(frozen=True)
class RunSpec:
    """`digit-search run`: create or continue a pruned study until it holds `trials` finished trials."""

    space: str | None = None  # default: the space the study was created with (then `study` is needed)
    trials: int = 20
    epochs: int | None = None  # default: the study's epoch budget, DEFAULT_EPOCHS for a new study
    data_dir: str | None = None
    storage: str = DEFAULT_STORAGE
    study: str | None = None  # default: the space's name
    seed: int = 0
    timeout: float | None = None
    trial_timeout: float | None = None
    deadline: Deadline | None = None  # no trial trains past it: the end of auto's phase, no flag
    limit: int | None = None
    pruner: str | None = None  # default: the study's pruner, PRUNERS[0] for a new study
    sampler: str = SAMPLERS[0]
    reference: bool = True
    only_references: tuple[str, ...] | None = None  # queue just these named references (auto's portfolio), no flag
    # references climb every rung (the bar for sampled configs); auto without a search skips it
    climb_references: bool = True
    val_fraction: float = 0.1
    split_seed: int = 0
    device: str = "auto"
    threads: int | None = None
    artifacts: str | None = None  # default: beside a SQLite file, else studies/artifacts
    workers: int = 1
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        check_at_least("trials", self.trials, 1)
        check_at_least("epochs", self.epochs, 1)
        check_at_least("workers", self.workers, 1)
        check_at_least("threads", self.threads, 1)
        check_limit(self.limit)
        check_seed("seed", self.seed)
        check_split(self.val_fraction, self.split_seed)
        check_positive_seconds("timeout", self.timeout)
        check_positive_seconds("trial-timeout", self.trial_timeout)
        if self.pruner is not None:
            check_choice("pruner", self.pruner, PRUNERS)
        check_choice("sampler", self.sampler, SAMPLERS)
        if self.cpus_per_trial is not None and not (0 < self.cpus_per_trial <= 4096):
            raise UserError(f"--cpus-per-trial must be above 0 and at most 4096, got {self.cpus_per_trial}")
        if self.gpus_per_trial is not None and not 0 <= self.gpus_per_trial <= 4096:
            raise UserError(f"--gpus-per-trial must be between 0 and 4096, got {self.gpus_per_trial}")
        if (
            self.gpus_per_trial is not None
            and self.gpus_per_trial > 1
            and self.gpus_per_trial != int(self.gpus_per_trial)
        ):
            raise UserError(f"--gpus-per-trial above 1 must be a whole number, got {self.gpus_per_trial}")

    @property
    def parallel(self) -> bool:
        """Trials go to Ray workers (several at once, or on a cluster) rather than this process."""
        return self.workers > 1 or self.address is not None


@dataclass(frozen=True)
class TrialJob:
    """Everything that turns a created trial into a trained one, besides the data: built once per run.

    The in-process loop and every Ray worker build their trial context from this same record.
    """

    storage: str  # absolute for SQLite, so workers in other directories find the file
    study_name: str
    space: str  # a built-in name, or an absolute path to a family file
    epochs: int
    base_seed: int  # trial k trains with seed base_seed + k
    data_hash: str
    split: str  # fingerprint of the validation split
    artifacts: str
    pruner: str
    sampler: str = SAMPLERS[0]
    threads: int | None = None
    trial_timeout: float | None = None  # seconds of training after which a trial is pruned
    deadline: Deadline | None = None  # no trial trains past it
    climb_references: bool = True
    trials_sharing_memory: int = 1  # trials that may run at once on one device: each may use its share


@dataclass(frozen=True)
class TrainSpec:
    """`digit-search train`: one config (a reference or a stored trial) outside any study."""

    space: str
    reference: str | None = None
    trial: str | None = None  # "STUDY:NUMBER"
    epochs: int | None = None  # default: a --trial's own epochs, DEFAULT_EPOCHS for a --reference
    data_dir: str | None = None
    limit: int | None = None
    storage: str = DEFAULT_STORAGE
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    as_json: bool = False
    all_digits: bool = False  # train on the validation rows too (they stay the monitor, no longer held out)
    budget: str | None = None  # 90s, 20m, 1h: as many epochs as fit, instead of `epochs`
    out: str | None = None  # a Kaggle submission of the test digits, its lineage beside it as .json

    def __post_init__(self) -> None:
        if (self.reference is None) == (self.trial is None):
            raise UserError("give exactly one of --reference REF or --trial STUDY:NUMBER")
        if self.budget is not None and self.epochs is not None:
            raise UserError("give --epochs N or --budget TIME, not both: --budget trains as many epochs as fit")
        if self.budget is not None:
            parse_budget(self.budget, least=MIN_TRAIN_BUDGET_SECONDS)
        check_at_least("epochs", self.epochs, 1)
        check_at_least("threads", self.threads, 1)
        check_limit(self.limit)
        check_seed("seed", self.seed)
        check_split(self.val_fraction, self.split_seed)

    @property
    def budget_seconds(self) -> float | None:
        return None if self.budget is None else parse_budget(self.budget, least=MIN_TRAIN_BUDGET_SECONDS)


@dataclass(frozen=True)
class EnsembleSpec:
    """`digit-search ensemble`: weight the top trials of several studies into a submission."""

    studies: str  # comma-separated study names
    top: int = 10
    method: str = "greedy"
    calibration: str = "temperature"
    tta: bool = False
    data_dir: str | None = None
    limit: int | None = None
    storage: str = DEFAULT_STORAGE
    artifacts: str | None = None
    out: str = "submission.csv"
    save: str | None = None  # default: a new folder under studies/ensembles
    space_files: tuple[str, ...] = ()
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "space_files", tuple(self.space_files))
        check_studies(self.studies)
        check_at_least("top", self.top, 1)
        check_at_least("threads", self.threads, 1)
        check_choice("method", self.method, METHODS)
        check_choice("calibration", self.calibration, CALIBRATIONS)
        check_limit(self.limit)

    @property
    def study_names(self) -> list[str]:
        return study_names(self.studies)


@dataclass(frozen=True)
class PredictSpec:
    """`digit-search predict`: classify image files or CSV pixel rows with a saved ensemble."""

    images: tuple[str, ...]
    ensemble: str | None = None  # default: the newest saved ensemble under studies/ensembles
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        if not self.images:
            raise UserError("give at least one image file (PNG, JPEG) or CSV of pixel rows")
        check_at_least("threads", self.threads, 1)


@dataclass(frozen=True)
class ReportSpec:
    """`digit-search report`: an HTML page of studies and their latest ensemble, and the trials as CSV."""

    studies: str | None = None  # comma-separated; None: every study in the storage
    storage: str = DEFAULT_STORAGE
    out: str = str(DEFAULT_REPORTS)
    artifacts: str | None = None  # default: beside a SQLite file, else studies/artifacts
    ensemble: str | None = None  # a saved ensemble folder; default: the newest of these studies
    ensembles: str = str(DEFAULT_ENSEMBLES)  # where saved ensembles are looked for
    data_dir: str | None = None  # the studies' data, for the ensemble's validation digits
    gallery: int = 60  # misclassified digits shown

    def __post_init__(self) -> None:
        check_studies(self.studies)
        check_at_least("gallery", self.gallery, 0)

    @property
    def study_names(self) -> list[str]:
        return study_names(self.studies)


@dataclass(frozen=True)
class LeaderboardSpec:
    """`digit-search leaderboard`: the studies and their best trials in the terminal, best first."""

    studies: str | None = None  # comma-separated; None: every study in the storage
    storage: str = DEFAULT_STORAGE
    as_json: bool = False  # one JSON document instead of the table

    def __post_init__(self) -> None:
        check_studies(self.studies)

    @property
    def study_names(self) -> list[str]:
        return study_names(self.studies)


@dataclass(frozen=True)
class DashboardSpec:
    """`digit-search dashboard`: optuna-dashboard on the study database, with the trials' artifacts."""

    storage: str = DEFAULT_STORAGE
    host: str = "127.0.0.1"  # this machine only: optuna-dashboard has no login
    port: int = 8080
    artifacts: str | None = None  # default: beside a SQLite file, else studies/artifacts
    allow_writes: bool = False  # optuna-dashboard's notes, deletions and edits

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"--port must be between 1 and 65535, got {self.port}")
        if not self.host.strip():
            raise UserError("--host must not be empty; use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")


AUTO_FAMILIES = ("cnn", "resnet", "stn", "vit")
MIN_BUDGET_SECONDS = 60  # less cannot train the references and build an ensemble even on the embedded sample
MIN_TRAIN_BUDGET_SECONDS = 1  # `train --budget`: its first epoch then says whether even one epoch fits
MAX_BUDGET_SECONDS = 7 * 24 * 3600  # a week: more is a typo (1000h for 10h); a study can be resumed
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def parse_budget(text: str, least: float = MIN_BUDGET_SECONDS) -> float:
    """'90s' -> 90, '20m' -> 1200, '1h30m' -> 5400; a bare number is seconds. UserError otherwise, or under `least` seconds."""
    cleaned = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        seconds = float(cleaned)
    else:
        parts = _DURATION_PART.findall(cleaned)
        units = [unit for _, unit in parts]
        in_order = units == sorted(units, key="hms".index) and len(set(units)) == len(units)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned or not in_order:
            raise UserError(f"--budget {text!r} is not a duration; use e.g. 90s, 20m, 1h or 1h30m")
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds < least:
        raise UserError(f"--budget {text!r} is under {least:g}s; give at least {least:g}s")
    if not seconds <= MAX_BUDGET_SECONDS:  # inf too: a number too long for a float
        raise UserError(f"--budget {text!r} is over a week; give at most {MAX_BUDGET_SECONDS // 3600}h")
    return seconds


@dataclass(frozen=True)
class AutoSpec:
    """`digit-search auto`: from the data to the best submission within one wall-clock budget."""

    budget: str = "1h"  # 90s, 20m, 1h, 1h30m: bounds the whole command
    data_dir: str | None = None
    spaces: str = ",".join(AUTO_FAMILIES)
    storage: str = DEFAULT_STORAGE
    study_prefix: str = "auto-"  # the studies are PREFIX + family: ordinary studies, browsable and resumable
    artifacts: str | None = None
    out: str = "submission.csv"
    save: str | None = None  # default: a new folder under studies/ensembles
    report: str = str(DEFAULT_REPORTS)
    tta: bool = False
    refit: bool = True  # the final training of the chosen models on every labelled digit
    search: bool = True  # sampled trials after the portfolio of references, when the plan finds time for them
    sampler: str = SAMPLERS[0]
    seed: int = 0
    limit: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    device: str = "auto"
    threads: int | None = None
    workers: int = 1
    gpus_per_trial: float | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        parse_budget(self.budget)
        if not self.family_names:
            raise UserError("--spaces needs at least one family, e.g. --spaces cnn,vit")
        unknown = [name for name in self.family_names if name not in AUTO_FAMILIES]
        if unknown:
            raise UserError(f"--spaces: unknown family {unknown[0]!r}; choose from {', '.join(AUTO_FAMILIES)}")
        if len(set(self.family_names)) != len(self.family_names):
            raise UserError(f"--spaces {self.spaces!r} names a family twice")
        if not self.study_prefix.strip():
            raise UserError("--study-prefix must not be empty")
        check_at_least("workers", self.workers, 1)
        check_at_least("threads", self.threads, 1)
        check_limit(self.limit)
        check_seed("seed", self.seed)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_split(self.val_fraction, self.split_seed)

    @property
    def family_names(self) -> list[str]:
        return study_names(self.spaces)

    @property
    def budget_seconds(self) -> float:
        return parse_budget(self.budget)
