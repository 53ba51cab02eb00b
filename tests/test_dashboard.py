"""The dashboard's guard: foreign Host headers (DNS rebinding) and writes without --allow-writes are refused."""

import io
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

from search.config import DashboardSpec
from search.report.dashboard import Guard, allowed_host, browser_url, dashboard_app
from search.study.storage import open_storage


def call(app, method: str, path: str, host: str) -> tuple[str, bytes]:
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update({"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_HOST": host, "wsgi.input": io.BytesIO(b"")})
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], body


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("attacker.example:8080", False),  # a rebound DNS name
        ("attacker.example", False),
        ("127.0.0.1:9999", False),  # another port
        ("127.0.0.1:8080:x", False),
        ("", False),
    ],
)
def test_only_addresses_of_this_server_are_allowed_hosts(host, allowed):
    assert allowed_host(host, "127.0.0.1", 8080) is allowed


def test_a_wildcard_listen_address_prints_a_url_a_browser_opens():
    assert browser_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/dashboard/"
    assert browser_url("::1", 8081) == "http://[::1]:8081/dashboard/"


@pytest.fixture
def study_db(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.create_study(study_name="kept", storage=open_storage(url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    return url


def study_names(url):
    return [s.study_name for s in open_storage(url).get_all_studies()]


def test_a_foreign_host_cannot_delete_a_study(study_db):
    app, _ = dashboard_app(DashboardSpec(storage=study_db))
    guarded = Guard(app, "127.0.0.1", 8080, allow_writes=True)
    status, _ = call(guarded, "DELETE", "/api/studies/1", "attacker.example:8080")
    assert status.startswith("421")
    assert study_names(study_db) == ["kept"]


def test_the_dashboard_is_read_only_unless_writes_are_allowed(study_db):
    app, _ = dashboard_app(DashboardSpec(storage=study_db))
    read_only = Guard(app, "127.0.0.1", 8080, allow_writes=False)
    status, body = call(read_only, "DELETE", "/api/studies/1", "127.0.0.1:8080")
    assert status.startswith("403") and b"--allow-writes" in body
    assert study_names(study_db) == ["kept"]
    status, _ = call(read_only, "GET", "/api/studies", "127.0.0.1:8080")
    assert status.startswith("200")

    writable = Guard(app, "127.0.0.1", 8080, allow_writes=True)
    status, _ = call(writable, "DELETE", "/api/studies/1", "localhost:8080")
    assert status.startswith("204") or status.startswith("200"), status
    assert study_names(study_db) == []
