"""Atomic writes: every file and folder digit-search writes goes through here.

A file is written to a temporary name in its own folder, flushed to disk, renamed over the
target and the folder entry synced, so a reader (or a kill at any moment) sees the old file or
the new one, never half of one. A folder is replaced by rename-aside, rename-in, then deleting
the old one, so a kill in between leaves the old or the new folder, never neither.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = "."  # temporary files and folders are hidden: `.NAME.RANDOM.tmp`
TEMP_SUFFIX = ".tmp"
ASIDE_SUFFIX = ".old"
FILE_MODE = 0o644  # mkstemp makes files private; what we write need not be
DIR_MODE = 0o755


def is_temporary(path: Path) -> bool:
    """A name this module uses while writing: never a finished file or folder."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith((TEMP_SUFFIX, ASIDE_SUFFIX))


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextmanager
def naming(target: Path) -> Iterator[None]:
    """Make an OSError met while writing `target` name it: a failed write() names no file (a full disk), and
    the temporary file's hidden name means nothing to a user. An error about another file is left as it is."""
    try:
        yield
    except OSError as err:
        named = None if err.filename is None else Path(os.fsdecode(err.filename))
        if named is not None and not (
            named.parent == target.parent
            and named.name.startswith(f"{TEMP_PREFIX}{target.name}.")
            and is_temporary(named)
        ):
            raise
        raise OSError(err.errno, err.strerror or str(err), str(target)) from err  # OSError() picks the subclass


@contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """A temporary path beside `target` (same file system, so the rename is atomic); removed unless committed."""
    target = Path(target)
    with naming(target):
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}.", suffix=TEMP_SUFFIX)
    try:
        with naming(target):
            os.close(handle)
            os.chmod(name, FILE_MODE)
            yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def commit(staged: Path, target: str | Path) -> Path:
    """Flush `staged` to disk and rename it over `target`; returns the target."""
    target = Path(target)
    with naming(target):
        with open(staged, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(staged, target)
    sync_folder(target.parent)
    return target


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(stream) on a temporary file beside `path`, then rename it into place."""
    with staged_file(path) as staged:
        with open(staged, "wb") as stream:
            write(stream)
        return commit(staged, path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_atomically(path, lambda stream: stream.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside `target` to fill; removed unless replace_folder moved it into place."""
    target = Path(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}.", suffix=TEMP_SUFFIX))
    os.chmod(staging, DIR_MODE)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(staging: Path, target: str | Path) -> Path:
    """Move a filled staging folder to `target`; an existing `target` is renamed aside first and deleted last.

    The caller decides whether `target` may be replaced at all: this only makes the swap safe.
    """
    target = Path(target)
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}.", suffix=ASIDE_SUFFIX))
        os.rmdir(aside)  # only its unique name is wanted
        os.replace(target, aside)
    os.replace(staging, target)
    sync_folder(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


STALE_SECONDS = 600  # a write in progress is seconds old; a temporary this old was left by a kill


def remove_stale_temporaries(folder: str | Path, older_than: float = STALE_SECONDS) -> list[Path]:
    """Delete what killed writes left in `folder` (hidden .tmp/.old names, untouched for `older_than` s)."""
    folder = Path(folder)
    removed = []
    now = time.time()
    for path in folder.iterdir() if folder.is_dir() else []:
        if is_temporary(path) and now - path.lstat().st_mtime >= older_than:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
