"""The one exception type for mistakes a user can make; the CLI turns it into one line and exit 2."""

from __future__ import annotations

import errno
import importlib.util
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Command-line flags whose Python argument has another name; the rest are the flag with '_' for '-'.
ARGUMENT_OF_FLAG = {
    "--data": "data_dir",
    "--json": "as_json",
    "--space-file": "space_files",
    "--no-reference": "reference",
    "--no-refit": "refit",
}
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def argument_of_flag(flag: str) -> str:
    """'--trial-timeout' -> 'trial_timeout', '--data' -> 'data_dir': the Python argument behind a flag."""
    return ARGUMENT_OF_FLAG.get(flag, flag.removeprefix("--").replace("-", "_"))


class UserError(Exception):
    """A problem with the user's input (an option, a file, a URL, a study name), in one line.

    Messages are written naming options as the command line spells them (`--storage`): the CLI
    prints `cli_message`, while str() names the Python API's argument instead (`storage`).
    """

    def __init__(self, message: object) -> None:
        self.cli_message = " ".join(str(message).split())
        # `quoted` text is a command to type (`ray start --head`): its flags stay as they are
        parts = self.cli_message.split("`")
        parts[::2] = [_FLAG.sub(lambda match: argument_of_flag(match.group(0)), part) for part in parts[::2]]
        super().__init__("`".join(parts))


def require_extra(module: str, extra: str, what: str) -> None:
    """UserError naming the extra to install when `module` (a driver only some users need) is missing."""
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"{what} needs the {module} package, which is not installed; install it with `pip install 'digit-search[{extra}]'`"
        )


# ---- writes that fail for want of space or permission -------------------------------------------
# A full disk or a read-only folder surfaces in many shapes: an OSError from a write (ENOSPC, EDQUOT,
# EROFS, EACCES), SQLite's "database or disk is full" inside SQLAlchemy's OperationalError, itself
# inside Optuna's StorageInternalError, and sometimes an unrelated error raised while handling it.
# write_fault walks the whole chain of causes, so each ends the same way: one line naming the path.

# errno -> (what happened, what to do)
_OS_FAULTS = {
    errno.ENOSPC: ("no space left on device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota"),
    errno.EROFS: ("read-only file system", "make it writable"),
    errno.EACCES: ("permission denied", "make it writable"),
    errno.EPERM: ("operation not permitted", "make it writable"),
}
# SQLite's messages (which name no file) -> (what happened, what to do)
_SQLITE_FAULTS = {
    "database or disk is full": ("no space left on device", "free some space"),
    "attempt to write a readonly database": ("the database is read-only", "make it and its folder writable"),
    "unable to open database file": ("unable to open the database file", "make its folder writable"),
}
# options naming a path that a failing path is matched to (the deepest wins)
_PATH_OPTIONS = ("out", "save", "report", "artifacts", "data_dir")


@dataclass(frozen=True)
class Fault:
    what: str
    remedy: str
    path: str | None  # None: SQLite's (the database), or a write() that named no file
    database: bool  # SQLite said it


def causes(err: BaseException) -> Iterator[BaseException]:
    """`err`, what it was raised from or while handling, and a database error's original, each once."""
    seen: set[int] = set()
    queue: list[BaseException | None] = [err]
    while queue:
        cause = queue.pop(0)
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        orig = getattr(cause, "orig", None)
        queue.extend([cause.__cause__, cause.__context__, orig if isinstance(orig, BaseException) else None])


def fault_of(err: BaseException) -> Fault | None:
    """The first space or permission fault in `err`'s chain, or None when it holds none."""
    for cause in causes(err):
        if isinstance(cause, OSError) and cause.errno in _OS_FAULTS:
            return Fault(
                *_OS_FAULTS[cause.errno], None if cause.filename is None else str(cause.filename), database=False
            )
        if type(cause).__module__.startswith(("sqlite3", "sqlalchemy")):
            message = str(cause).lower()
            for text, (what, remedy) in _SQLITE_FAULTS.items():
                if text in message:
                    return Fault(what, remedy, None, database=True)
    return None


def is_write_fault(err: BaseException) -> bool:
    return fault_of(err) is not None


def write_fault(err: BaseException, options: Mapping[str, object], database: Path | None = None) -> str | None:
    """One line for a space or permission fault anywhere in `err`'s chain, naming the path and the option that
    chose it (`options` are the command's, e.g. vars(args); `database` the SQLite file of its --storage, which
    SQLite's messages do not name); None when `err` is no such fault."""
    fault = fault_of(err)
    if fault is None:
        return None
    path = str(database) if fault.database and database is not None else fault.path
    option = _option_for(path, options, database)
    elsewhere = f" or give {option} elsewhere" if option else ""
    return f"cannot write {path or 'a file'}: {fault.what}; {fault.remedy}{elsewhere}"


def _option_for(path: str | None, options: Mapping[str, object], database: Path | None) -> str | None:
    """The option (`--out`, ...) whose file or folder holds `path`: the deepest match."""
    if path is None:
        return None
    target = Path(path).expanduser().absolute()
    places: list[tuple[str, Path]] = [
        (name, Path(str(value))) for name in _PATH_OPTIONS if isinstance(value := options.get(name), str) and value
    ]
    if database is not None:
        places.append(("storage", database))
        places.append(("storage", database.parent))  # its -wal/-journal files, and the artifacts beside it by default
    best: tuple[int, str] | None = None
    for name, place in places:
        place = place.expanduser().absolute()
        if place == target or place in target.parents:
            depth = len(place.parts) + (name != "storage")  # an option given explicitly beats the database's folder
            if best is None or depth > best[0]:
                best = (depth, name)
    if best is None:
        return None
    name = best[1]
    return "--data" if name == "data_dir" else f"--{name.replace('_', '-')}"
