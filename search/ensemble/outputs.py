"""The files and folders digit-search keeps, and the check that no output option names one of them.

One definition for every command that writes a submission, a saved ensemble or a report
(`ensemble`, `auto`): an --out, --save or --report that would overwrite the study database (or
its SQLite -wal/-shm/-journal files), write into the artifact store, the data cache, a saved
ensemble or the Kaggle input files, or land on another output of the same command is refused in
one line before any work, so nothing has been written when it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search.config import DEFAULT_CACHE, DEFAULT_STORAGE
from search.ensemble.manifest import MANIFEST, read_manifest
from search.ensemble.saved import check_save_dir
from search.ensemble.submission import check_out_path, lineage_path
from search.errors import UserError
from search.study.artifacts import artifact_location, is_s3_url
from search.study.storage import parse_storage_url

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite keeps these beside the database while it writes
DATA_FILES = ("train.csv", "train.csv.gz", "test.csv", "test.csv.gz")


@dataclass(frozen=True)
class Kept:
    path: Path
    what: str  # "the study database", ...: how a refusal names it


def _stores(storage: str, artifacts: str | None) -> list[Kept]:
    url = parse_storage_url(storage)
    kept = [Kept(Path(url.database).expanduser(), "the study database")] if url.get_backend_name() == "sqlite" else []
    location = artifact_location(artifacts, storage)
    return kept if is_s3_url(location) else [*kept, Kept(Path(location), "the artifact store")]


def store_paths(storage: str, artifacts: str | None) -> list[Path]:
    """The SQLite database file and a local artifact store of one storage: what a --save folder must never hold."""
    return [item.path for item in _stores(storage, artifacts)]


def kept_paths(storage: str, artifacts: str | None, data_dir: str | None = None) -> list[Kept]:
    """Everything an output must not overwrite or write into: this run's storage and the default one
    (other runs' studies), with their artifact stores and SQLite side files, the data cache and the input files."""
    kept = []
    for item in [*_stores(storage, artifacts), *_stores(DEFAULT_STORAGE, None)]:
        kept.append(item)
        if item.what == "the study database":
            kept.extend(
                Kept(Path(f"{item.path}{suffix}"), f"the study database's {suffix[1:]} file")
                for suffix in SQLITE_SIDE_FILES
            )
    kept.append(Kept(DEFAULT_CACHE, "the data cache"))
    if data_dir:
        kept.extend(Kept(Path(data_dir) / name, "an input data file") for name in DATA_FILES)
    return kept


def check_outputs(
    storage: str, artifacts: str | None, data_dir: str | None, *, out: str, save: str | None, report: str | None = None
) -> None:
    """Refuse, in one line and before any work, an --out, --save or --report that is not writable as asked,
    names what digit-search keeps, or names another of them."""
    kept = kept_paths(storage, artifacts, data_dir)
    check_out_path(out)
    for path in (out, lineage_path(out)):
        check_not_kept("--out", out, path, kept, inside_ensemble=True)
    if save:
        check_not_kept("--save", save, save, kept, inside_ensemble=False)
        check_save_dir(save, store_paths(storage, artifacts))
        held = [k for k in kept if _within(k.path, save)]
        if held:
            raise UserError(f"--save {save!r} holds {held[0].what} {held[0].path}; choose a new directory")
        if _same(out, save) or _within(out, save):
            raise UserError(
                f"--out {out!r} is inside the --save folder {save!r}, which holds the saved ensemble alone; choose another path"
            )
    if (
        report is not None
    ):  # its folder's own checks (writable, not a file) are the report's: search.report.build.check_out_dir
        check_not_kept("--report", report, report, kept, inside_ensemble=True)
        if _same(out, report):
            raise UserError(
                f"--out and --report both name {out!r}; give the submission a file name outside the report folder"
            )
        if save and (_same(report, save) or _within(report, save)):
            raise UserError(
                f"--report {report!r} is inside the --save folder {save!r}, which holds the saved ensemble alone; choose another folder"
            )


def check_not_kept(
    option: str, given: str | Path, path: str | Path, kept: list[Kept], *, inside_ensemble: bool
) -> None:
    """UserError when `path` (what `option` writes, given as `given`) is or lies inside something digit-search keeps.

    A saved ensemble may be replaced by --save as a whole, so only its parents are checked there;
    --out and --report may write into none.
    """
    where = f"{option} {str(given)!r}"
    for item in kept:
        if _same(path, item.path):
            raise UserError(f"{where} is {item.what} ({item.path}); choose another path")
        if _within(path, item.path):
            raise UserError(f"{where} is inside {item.what} ({item.path}); choose another path")
    target = _resolved(path)
    for folder in [target, *target.parents] if inside_ensemble else target.parents:
        if (folder / MANIFEST).is_file() and _is_saved_ensemble(folder):
            raise UserError(f"{where} is inside the saved ensemble {folder}; choose another path")


def _is_saved_ensemble(folder: Path) -> bool:
    """A folder whose manifest.json is a saved ensemble's (another program's manifest.json is none of ours)."""
    try:
        read_manifest(folder)
    except (UserError, OSError, ValueError):
        return False
    return True


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _same(a: str | Path, b: str | Path) -> bool:
    return _resolved(a) == _resolved(b)


def _within(path: str | Path, folder: str | Path) -> bool:
    """`path` lies strictly inside `folder`."""
    return _resolved(folder) in _resolved(path).parents
