"""The database servers the storage tests use: the machine's PostgreSQL and MariaDB, or skip outside CI."""

import os

import pytest

from search.study.storage import open_storage

SERVERS = {
    "postgresql": os.environ.get("DIGIT_SEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("DIGIT_SEARCH_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}


def server_url(backend: str) -> str:
    """A reachable server URL; CI must have the servers, elsewhere the test is skipped."""
    url = SERVERS[backend]
    try:
        open_storage(url)
    except Exception as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{backend} server not reachable ({err})")
    return url
