"""The study database URL: passwords never shown, SQLite folders never invented."""

import io
import os
from pathlib import Path

import pytest

from search.cli.main import main
from search.config import RunSpec
from search.dispatch.run import run_study
from search.errors import UserError
from search.study.storage import open_storage, parse_storage_url, redacted
from tests.servers import server_url

SECRET = "hunter2-secret"
TINY_SPACE = str(Path(__file__).parent / "fixtures" / "my_space.py")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://user@host/db?password={SECRET}",
        f"postgresql://user@host/db?sslmode=require&password={SECRET}",
        f"mysql://root@host/db?passwd={SECRET}",
        f"postgresql://user:{SECRET}@host/db",
        f"postgresql://user:p@ss{SECRET}@host/db",  # an @ inside the password
    ],
)
def test_redacted_hides_a_password_in_any_part_of_a_url(url):
    shown = redacted(url)
    assert SECRET not in shown and "ss" + SECRET not in shown and "***" in shown
    assert shown.startswith(("postgresql://user", "mysql://root")) and "host/db" in shown
    try:
        assert SECRET not in redacted(parse_storage_url(url))
    except UserError as err:  # an unquoted @ in the password is refused, without the password
        assert SECRET not in err.cli_message and "%40" in err.cli_message


def test_redacted_keeps_other_query_parameters():
    shown = redacted(f"postgresql://user@host/db?sslmode=require&password={SECRET}")
    assert "sslmode=require" in shown and "password=***" in shown  # SQLAlchemy sorts the query


@pytest.mark.parametrize(
    "url, expected",
    [
        (f"postgresql://user:{SECRET}@host:notaport/db", "not a database URL"),
        (f"oracle://user:{SECRET}@host/db", "unsupported database"),
        (f"not a url at all ?password={SECRET}", "not a database URL"),
    ],
)
def test_a_malformed_url_is_refused_without_echoing_its_password(url, expected):
    with pytest.raises(UserError, match=expected) as caught:
        parse_storage_url(url)
    assert SECRET not in caught.value.cli_message and SECRET not in str(caught.value)
    assert "user:***@" in caught.value.cli_message or "password=***" in caught.value.cli_message


def test_the_cli_prints_a_malformed_url_in_one_line_without_its_password(capsys):
    assert main(["run", "--space", "cnn", "--storage", f"postgresql://user:{SECRET}@host:notaport/db"]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and len(err.strip().splitlines()) == 1


def test_a_sqlite_file_in_a_missing_folder_is_refused_and_nothing_is_created(tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    with pytest.raises(UserError, match="does not exist") as caught:
        open_storage(f"sqlite:///{missing}/x.db")
    assert str(missing) in caught.value.cli_message
    assert not (tmp_path / "nonexistent").exists()


def test_run_refuses_a_sqlite_file_in_a_missing_folder_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["run", "--space", "cnn", "--storage", f"sqlite:///{tmp_path}/nonexistent/dir/x.db", "--limit", "200"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nonexistent/dir does not exist" in err
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "studies").exists()


def test_a_new_sqlite_file_in_an_existing_folder_is_created(tmp_path):
    open_storage(f"sqlite:///{tmp_path}/new.db")
    assert (tmp_path / "new.db").is_file()


def test_the_default_studies_folder_is_created_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    open_storage("sqlite:///studies/digit-search.db")
    assert (tmp_path / "studies" / "digit-search.db").is_file()
    with pytest.raises(UserError, match="does not exist"):
        open_storage("sqlite:///studies/nested/x.db")  # only studies/ itself is ours to create


def test_a_password_in_the_url_query_is_never_printed_by_run(tmp_path):
    url = f"{server_url('postgresql')}?password={SECRET}"  # the test server trusts local users: the password is ignored
    out = io.StringIO()
    study = f"secret-{os.getpid()}-{tmp_path.name}"[:60]
    summary = run_study(
        RunSpec(
            space=TINY_SPACE,
            study=study,
            trials=1,
            epochs=1,
            limit=200,
            storage=url,
            reference=False,
            artifacts=str(tmp_path / "a"),
        ),
        out,
    )
    assert SECRET not in out.getvalue() and "password=***" in out.getvalue()
    assert SECRET not in summary.storage


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["leaderboard", "--storage", "postgresql://user:hunter2@db.example/studies"], "psycopg", "postgres"),
        (["leaderboard", "--storage", "mysql://root@db.example/studies"], "pymysql", "mysql"),
        (["run", "--space", "cnn", "--trials", "1", "--artifacts", "s3://bucket/runs"], "boto3", "s3"),
    ],
)
def test_a_missing_driver_names_the_extra_that_installs_it_before_anything_is_written(
    tmp_path, monkeypatch, capsys, argv, module, extra
):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == module else find_spec(name, *args)
    )
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert f"pip install 'digit-search[{extra}]'" in error and len(error.splitlines()) == 1
    assert "hunter2" not in error
    assert list(tmp_path.iterdir()) == []  # nothing written
