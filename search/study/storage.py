"""Opening the SQL study database and the artifact store behind it."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from search.config import DEFAULT_ARTIFACTS, DEFAULT_STORAGE, STUDIES_HOME
from search.errors import UserError, is_write_fault, require_extra, write_fault

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90
SCHEMA_ATTEMPTS = 4
RECONNECT_ATTEMPTS = 40
RECONNECT_WAIT_SECONDS = 1.5
T = TypeVar("T")

# The driver of each server dialect and the extra that installs it (digit-search[postgres]); a bare
# dialect would ask SQLAlchemy for a driver the extra does not install.
_DRIVER_FOR_DIALECT = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
_EXTRA_FOR_DRIVER = {"psycopg": "postgres", "pymysql": "mysql"}
EXAMPLE_URLS = f"{DEFAULT_STORAGE} or postgresql://user@host/db"
HIDDEN = "***"
# Query parameters that carry a secret in some driver's URL: psycopg's password, pymysql's passwd, ...
_SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
# In text that is not a URL SQLAlchemy can parse: the password of user:password@, and secret query values.
_SECRET_USERINFO = re.compile(r"(://[^/?#@:]*):[^/?#]*@")  # up to the last @: a password may hold one
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:pass|pwd|secret|token|key)[^=&#]*=)[^&#]*", re.IGNORECASE)


def parse_storage_url(text: str) -> URL:
    """Validate a storage URL and pin the driver this project installs; UserError if malformed."""
    try:
        url = make_url(text)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UserError(f"--storage {redacted(text)!r} is not a database URL; use e.g. {EXAMPLE_URLS}") from None
    if url.host and "@" in url.host:
        raise UserError(f"--storage {redacted(text)!r}: write an @ in the user or password as %40")
    if url.drivername in _DRIVER_FOR_DIALECT:
        url = url.set(drivername=f"{url.drivername}+{_DRIVER_FOR_DIALECT[url.drivername]}")
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise UserError(
            f"--storage {redacted(url)!r}: unsupported database {backend!r}; use SQLite, PostgreSQL or MySQL/MariaDB"
        )
    if backend == "mariadb":
        url = url.set(drivername="mysql+pymysql")
    driver = url.get_driver_name()
    if driver in _EXTRA_FOR_DRIVER:
        require_extra(driver, _EXTRA_FOR_DRIVER[driver], f"--storage {redacted(url)}")
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise UserError(
            f"--storage {redacted(url)!r}: an in-memory SQLite database would lose the study; give a file, e.g. {DEFAULT_STORAGE}"
        )
    return url


def redacted(url: URL | str) -> str:
    """The URL as it may be printed or stored: its password hidden, whether in user:password@ or a query
    parameter (`?password=...`); text that is not a URL at all gets the same treatment by pattern."""
    if isinstance(url, str):
        # by pattern first: SQLAlchemy reads an unquoted @ in a password as part of the host
        text = _SECRET_QUERY.sub(rf"\g<1>{HIDDEN}", _SECRET_USERINFO.sub(rf"\g<1>:{HIDDEN}@", url))
        try:
            url = make_url(text)
        except (sqlalchemy.exc.ArgumentError, ValueError):
            return text
    secrets = {key: HIDDEN for key in url.query if _SECRET_QUERY_KEY.search(key)}
    # the query is rendered URL-quoted: show the mark as it is shown for user:password@
    return url.update_query_dict(secrets).render_as_string(hide_password=True).replace("%2A%2A%2A", HIDDEN)


def open_storage(text: str) -> optuna.storages.RDBStorage:
    """Connect to (creating if needed) the study database; UserError with the URL when it can't."""
    url = parse_storage_url(text)
    engine_kwargs: dict = {}
    if url.get_backend_name() == "sqlite":
        path = Path(url.database).expanduser()
        check_sqlite_folder(url)
        if path.parent.resolve() == STUDIES_HOME.resolve():
            path.parent.mkdir(exist_ok=True)
        use_write_ahead_log(path)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True  # survive a database restart between trials
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            return optuna.storages.RDBStorage(
                url.render_as_string(hide_password=False),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
            )
        except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError) as err:
            fault = write_fault(err, {}, database=sqlite_file(url))
            if fault:
                raise UserError(fault) from None
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            # two processes creating the tables of a new database at once: the loser sees them appear
            racing = isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in reason
            if racing and attempt < SCHEMA_ATTEMPTS:
                time.sleep(0.5 * attempt)
                continue
            raise UserError(
                f"cannot open study database {redacted(url)}: {reason}; check the --storage URL and that the server is running"
            ) from None
    raise AssertionError("unreachable")


def open_existing_storage(text: str) -> optuna.storages.RDBStorage | None:
    """The study database when there is one to read; None for a SQLite file not created yet (opening would create it)."""
    url = parse_storage_url(text)
    if url.get_backend_name() == "sqlite" and not Path(url.database).expanduser().is_file():
        check_sqlite_folder(url)
        return None
    return open_storage(text)


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for a server."""
    return Path(url.database).expanduser() if url.get_backend_name() == "sqlite" and url.database else None


def check_sqlite_folder(url: URL) -> None:
    """A SQLite file may be new, but not its folder: a missing one is a typo, not a request to create it.

    The default folder, studies/ under the working directory, is ours and is created when missing.
    """
    if url.get_backend_name() != "sqlite":
        return
    folder = Path(url.database).expanduser().parent
    if not folder.is_dir() and folder.resolve() != STUDIES_HOME.resolve():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"--storage {redacted(url)}: {folder} {problem}; create the folder first or fix the path")


def check_database_exists(storage: str) -> None:
    """Opening a missing SQLite file would create an empty database; say it is missing instead."""
    url = parse_storage_url(storage)
    if url.get_backend_name() == "sqlite" and not Path(url.database).expanduser().is_file():
        raise UserError(
            f"--storage {redacted(url)}: no such database file; run digit-search run first, or pass the --storage the studies are in"
        )


def use_write_ahead_log(path: Path) -> None:
    """WAL lets readers and one writer work at once, so several local workers can share one file."""
    try:
        with sqlite3.connect(path, timeout=60) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as err:
        fault = write_fault(err, {}, database=path)
        raise UserError(fault or f"--storage {path}: not a SQLite database ({err}); give another file name") from None


def absolute_storage_url(text: str) -> str:
    """The URL with a SQLite path made absolute, for processes that start in another directory."""
    url = parse_storage_url(text)
    if url.get_backend_name() != "sqlite":
        return url.render_as_string(hide_password=False)
    return url.set(database=str(Path(url.database).expanduser().resolve())).render_as_string(hide_password=False)


def default_artifact_dir(storage_text: str) -> Path:
    """Artifacts live beside a SQLite file (so a temporary database keeps its own); else under studies/."""
    url = parse_storage_url(storage_text)
    if url.get_backend_name() == "sqlite":
        return Path(url.database).expanduser().parent / "artifacts"
    return Path(DEFAULT_ARTIFACTS)


def retry_on_database_errors(
    action: Callable[[], T], *, attempts: int = RECONNECT_ATTEMPTS, wait: float = RECONNECT_WAIT_SECONDS
) -> T:
    """Run `action`, retrying while the database is unreachable (a restart), so workers go on after it."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (
            optuna.exceptions.StorageInternalError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.InterfaceError,
        ) as err:
            if attempt == attempts or is_write_fault(err):  # a full disk does not come back by waiting
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


def check_study_names(storage: optuna.storages.BaseStorage, names: list[str], storage_text: str) -> list[str]:
    """The named studies (every study when `names` is empty), checked to exist; UserError listing those that do."""
    known = sorted(study.study_name for study in storage.get_all_studies())
    where = redacted(parse_storage_url(storage_text))
    if not names:
        if not known:
            raise UserError(f"no studies in {where}; run digit-search run first")
        return known
    missing = [name for name in names if name not in known]
    if missing:
        raise UserError(f"no study {missing[0]!r} in {where}; studies there: {', '.join(known) or 'none'}")
    return list(names)
