"""Faults a shared study must survive: a database restart, a lost node of a Ray cluster."""

import io
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from search.dispatch.run import run_study
from search.errors import UserError
from search.study.retries import process_exists
from search.study.storage import open_storage
from search.study.trial_attrs import FAIL_REASON_ATTR, RETRY_OF_ATTR
from tests.test_dispatch import SLOW_SPACE, finished, running_trial, server_url, spec, trials_of, wait_for

pytestmark = pytest.mark.slow


def restart_postgresql() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120)


@pytest.fixture
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None, reason="needs a local PostgreSQL cluster it may restart")
def test_workers_go_on_after_the_database_restarts(local_ray, tmp_path):
    run = spec(server_url("postgresql"), tmp_path, space=SLOW_SPACE, trials=4, epochs=3, pruner="none")
    open_storage(run.storage)
    driver = threading.Thread(target=run_study, args=(run,))
    driver.start()
    wait_for(lambda: running_trial(run))
    restart_postgresql()
    driver.join(timeout=400)
    assert not driver.is_alive()
    trials = trials_of(run)
    assert len(finished(trials)) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.fixture
def two_node_cluster():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="warning")
    cluster.wait_for_nodes()
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_a_lost_node_fails_its_trials_which_are_retried_elsewhere(two_node_cluster, tmp_path):
    cluster, nodes = two_node_cluster
    run = spec(
        server_url("postgresql"), tmp_path, space=SLOW_SPACE, trials=3, epochs=4, pruner="none", address=cluster.address
    )
    open_storage(run.storage)
    driver = threading.Thread(target=run_study, args=(run,))
    driver.start()
    victim = wait_for(lambda: running_trial(run))
    lost = next(node for node in nodes if node.node_id == victim.user_attrs["ray_node"])
    cluster.remove_node(lost)
    driver.join(timeout=400)
    assert not driver.is_alive()
    trials = trials_of(run)
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL and "worker lost" in killed.user_attrs["fail_reason"]
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["ray_node"] != lost.node_id
    assert len(finished(trials)) == 3 and not [t for t in trials if t.state == TrialState.RUNNING]


def test_sqlite_is_refused_across_nodes(two_node_cluster, tmp_path):
    cluster, _ = two_node_cluster
    run = spec(f"sqlite:///{tmp_path}/s.db", tmp_path, address=cluster.address)
    with pytest.raises(UserError, match="postgresql"):
        run_study(run)


def test_ctrl_c_on_the_driver_leaves_nothing_running_and_the_same_command_resumes(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    storage = f"sqlite:///{tmp_path}/s.db"
    command = [
        sys.executable,
        "-m",
        "search.cli",
        "run",
        "--space",
        SLOW_SPACE,
        "--workers",
        "2",
        "--trials",
        "4",
        "--epochs",
        "4",
        "--limit",
        "200",
        "--storage",
        storage,
        "--study",
        "ctrl-c",
        "--no-reference",
        "--pruner",
        "none",
        "--gpus-per-trial",
        "0",
    ]
    run = spec(storage, tmp_path, study="ctrl-c")
    open_storage(storage)
    # started with SIGINT ignored, as `cmd &` in a script starts it (and as CI once ran this test)
    driver = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    wait_for(lambda: running_trial(run))
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "run the same command again to resume" in err
    interrupted = trials_of(run)
    assert not [t for t in interrupted if t.state == TrialState.RUNNING]
    assert any("interrupted" in t.user_attrs.get("fail_reason", "") for t in interrupted)

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr
    trials = trials_of(run)
    assert len(finished(trials)) == 4 and not [t for t in trials if t.state == TrialState.RUNNING]


def test_trials_left_running_by_a_killed_driver_are_failed_and_retried_by_the_next_run(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    storage = f"sqlite:///{tmp_path}/s.db"
    command = [
        sys.executable,
        "-m",
        "search.cli",
        "run",
        "--space",
        SLOW_SPACE,
        "--workers",
        "2",
        "--trials",
        "4",
        "--epochs",
        "2",
        "--limit",
        "200",
        "--storage",
        storage,
        "--study",
        "killed",
        "--no-reference",
        "--pruner",
        "none",
        "--gpus-per-trial",
        "0",
        "--cpus-per-trial",
        "1",
    ]
    run = spec(
        storage,
        tmp_path,
        study="killed",
        space=SLOW_SPACE,
        trials=4,
        epochs=2,
        workers=1,
        pruner="none",
        reference=False,
    )
    open_storage(storage)
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len([t for t in trials_of_or_none(run) if t.state == TrialState.RUNNING]) == 2)
    driver.kill()  # SIGKILL: no handler runs, nothing is settled
    driver.wait()
    left = [t for t in trials_of(run) if t.state == TrialState.RUNNING]
    # Ray's processes die with their driver; a user reruns after that
    wait_for(lambda: not any(process_exists(t.user_attrs["pid"]) for t in left), timeout=60)

    out = io.StringIO()
    run_study(run, out)
    assert "left running by a run that is gone" in out.getvalue()
    trials = {t.number: t for t in trials_of(run)}
    for trial in left:
        settled = trials[trial.number]
        if settled.state == TrialState.COMPLETE:  # its worker finished it before it died with the driver
            continue
        assert settled.state == TrialState.FAIL and "is gone" in settled.user_attrs[FAIL_REASON_ATTR]
        retries = [t for t in trials.values() if t.user_attrs.get(RETRY_OF_ATTR) == trial.number]
        assert len(retries) == (1 if settled.params else 0)
    assert len(finished(list(trials.values()))) == 4 and not [
        t for t in trials.values() if t.state == TrialState.RUNNING
    ]


def trials_of_or_none(run):
    try:
        return trials_of(run)
    except KeyError:
        return []
