"""Opening the SQL study database and the artifact store behind it."""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from search.errors import UserError

DEFAULT_STORAGE = "sqlite:///studies/digit-search.db"
DEFAULT_ARTIFACTS = "studies/artifacts"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90

# Drivers the project installs; a bare dialect would ask SQLAlchemy for one we don't ship.
_DRIVER_FOR_DIALECT = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql"}
EXAMPLE_URLS = "sqlite:///studies/digit-search.db or postgresql://user@host/db"


def parse_storage_url(text: str) -> URL:
    """Validate a storage URL and pin the driver this project installs; UserError if malformed."""
    try:
        url = make_url(text)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UserError(f"--storage {text!r} is not a database URL; use e.g. {EXAMPLE_URLS}") from None
    if url.drivername in _DRIVER_FOR_DIALECT:
        url = url.set(drivername=f"{url.drivername}+{_DRIVER_FOR_DIALECT[url.drivername]}")
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise UserError(f"--storage {text!r}: unsupported database {backend!r}; use SQLite, PostgreSQL or MySQL/MariaDB")
    if backend == "mariadb":
        url = url.set(drivername="mysql+pymysql")
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise UserError(f"--storage {text!r}: an in-memory SQLite database would lose the study; give a file, e.g. {DEFAULT_STORAGE}")
    return url


def redacted(url: URL | str) -> str:
    """The URL as it may be printed: password hidden."""
    url = make_url(url) if isinstance(url, str) else url
    return url.render_as_string(hide_password=True)


def open_storage(text: str) -> optuna.storages.RDBStorage:
    """Connect to (creating if needed) the study database; UserError with the URL when it can't."""
    url = parse_storage_url(text)
    engine_kwargs: dict = {}
    if url.get_backend_name() == "sqlite":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True  # survive a database restart between trials
    try:
        return optuna.storages.RDBStorage(
            url.render_as_string(hide_password=False),
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
        )
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise UserError(f"cannot open study database {redacted(url)}: {reason}; check the --storage URL and that the server is running") from None


def default_artifact_dir(storage_text: str) -> Path:
    """Artifacts live beside a SQLite file (so a temporary database keeps its own); else under studies/."""
    url = parse_storage_url(storage_text)
    if url.get_backend_name() == "sqlite":
        return Path(url.database).expanduser().parent / "artifacts"
    return Path(DEFAULT_ARTIFACTS)
