"""--artifacts as a directory or an S3 URL (against a local moto S3 server)."""

import socket

import boto3
import numpy as np
import optuna
import pytest
from moto.server import ThreadedMotoServer

from search.cli.main import main
from search.errors import UserError
from search.study.artifacts import ARTIFACT_ATTR, load_probabilities, open_artifact_store
from search.study.storage import open_storage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_bucket(monkeypatch):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="digits")
    yield "digits"
    server.stop()


def test_a_study_can_keep_its_artifacts_in_s3(s3_bucket, sqlite_url, tmp_path):
    space = str(__import__("pathlib").Path(__file__).parent / "fixtures" / "my_space.py")
    code = main(
        [
            "run",
            "--space",
            space,
            "--trials",
            "1",
            "--epochs",
            "1",
            "--limit",
            "200",
            "--storage",
            sqlite_url,
            "--no-reference",
            "--artifacts",
            f"s3://{s3_bucket}/runs/a",
        ]
    )
    assert code == 0
    trial = optuna.load_study(study_name="my_space", storage=open_storage(sqlite_url)).best_trial
    ids = trial.user_attrs[ARTIFACT_ATTR]
    keys = {item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {f"runs/a/{artifact_id}" for artifact_id in ids.values()}
    probs = load_probabilities(open_artifact_store(f"s3://{s3_bucket}/runs/a"), ids["val_probs"])
    assert probs.shape[1] == 10 and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert not (tmp_path / "artifacts").exists()


def test_a_missing_artifact_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_artifact_store(tmp_path / "nope", must_exist=True)


def test_an_s3_url_needs_a_bucket():
    with pytest.raises(UserError, match="no bucket"):
        open_artifact_store("s3:///prefix")
