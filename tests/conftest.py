import os

import pytest

# Two cores: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/studies.db"
