"""scripts/ops.sh and the runbooks on the local Compose stack, for real: containers stopped,
retired, restarted and scaled; a drifted worker, a worker nobody can reach, a scheduler restart.

Every test leaves the stack as it found it: the scheduler and N_WORKERS healthy workers.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from skfleet.cluster import identity
from tests import runbooks
from tests.stack import N_WORKERS, ROOT, Stack, drifted_image, joined_worker, wait_for
from tests.summary import summary_value
from tests.vms import docker_client

pytestmark = pytest.mark.docker
# Dask's limit in the default 4 GiB worker container: a tenth lower (docker/worker.sh).
DASK_MEMORY_LIMIT = 4 * 2**30 - 4 * 2**30 // 10


def ops(stack: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run scripts/ops.sh ARGS against the stack, as a user would from the repository root."""
    return subprocess.run(
        [str(ROOT / "scripts" / "ops.sh"), *args], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=timeout
    )


def worker_names(stack: Stack) -> list[str]:
    return sorted(stack.compose("ps", "--format", "{{.Name}}", "worker").stdout.split())


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(f"tcp://127.0.0.1:{stack.scheduler_port}", timeout=30) as client:
        yield client


@pytest.fixture
def whole_again(stack: Stack) -> Iterator[None]:
    """After the test, N_WORKERS healthy workers again, whatever it did to them."""
    yield
    stack.compose("up", "--detach", "--wait", "--scale", f"worker={N_WORKERS}", "scheduler", "worker")
    assert ops(stack, "status", "--wait", "120").returncode == 0


def held_on(client: Client, container_address: str) -> tuple[object, bytes]:
    """Put 1 MiB of random bytes on the worker at CONTAINER_ADDRESS only; give the future and the bytes."""
    (worker,) = [address for address, info in identity(client)["workers"].items() if info["host"] == container_address]
    future = client.submit(os.urandom, 1 << 20, workers=[worker], allow_other_workers=False, pure=False)
    return future, future.result(timeout=60)


def inspect(name: str) -> dict:
    """Give `docker inspect NAME`, as of now."""
    return docker_client().containers.get(name).attrs


def container_ip(name: str) -> str:
    (network,) = inspect(name)["NetworkSettings"]["Networks"].values()  # the stack's one network
    return network["IPAddress"]


def test_status_reports_a_healthy_stack(stack: Stack) -> None:
    result = ops(stack, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("healthy")
    assert f"{N_WORKERS} of {N_WORKERS} joined" in result.stdout
    for name in worker_names(stack):
        assert name in result.stdout
    state = json.loads(ops(stack, "status", "--json").stdout)
    assert state["healthy"] is True and state["problems"] == []
    assert len(state["workers"]) == N_WORKERS
    assert all(worker["memory"] > 0 and worker["memory_limit"] == DASK_MEMORY_LIMIT for worker in state["workers"].values())
    assert state["versions"]["scheduler"]["scikit-learn"] == importlib.metadata.version("scikit-learn")  # .venv: the same lock


def test_status_exits_1_while_a_worker_is_down_and_wait_sees_it_back(stack: Stack, whole_again: None) -> None:
    stopped = worker_names(stack)[0]
    docker_client().containers.get(stopped).stop()
    result = ops(stack, "status")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{N_WORKERS - 1} of {N_WORKERS} workers joined the scheduler" in result.stdout
    # The missing one by its container, with what to run.
    assert f"{stopped} is exited: docker compose up --detach worker" in result.stdout, result.stdout
    docker_client().containers.get(stopped).start()
    assert ops(stack, "status", "--wait", "120").returncode == 0


def test_status_exits_1_when_the_scheduler_is_down(stack: Stack, whole_again: None) -> None:
    stack.compose("stop", "scheduler")
    result = ops(stack, "status")
    assert result.returncode == 1
    assert "UNHEALTHY" in result.stdout and "scheduler container" in result.stdout and "not running" in result.stdout


def test_retire_worker_moves_its_data_and_removes_it_and_scale_brings_it_back(
    stack: Stack, client: Client, whole_again: None
) -> None:
    name = worker_names(stack)[-1]
    future, payload = held_on(client, container_ip(name))
    result = ops(stack, "retire-worker", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{name} on localhost: retired 1" in result.stdout
    assert name not in worker_names(stack)
    assert len(identity(client)["workers"]) == N_WORKERS - 1
    assert future.result(timeout=60) == payload  # the very bytes: moved, not recomputed (they are random)

    result = ops(stack, "scale", str(N_WORKERS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(identity(client)["workers"]) == N_WORKERS


def test_restart_worker_by_number_keeps_its_data_and_it_rejoins(stack: Stack, client: Client) -> None:
    name = worker_names(stack)[0]
    started = inspect(name)["State"]["StartedAt"]
    future, payload = held_on(client, container_ip(name))
    result = ops(stack, "restart-worker", name.rsplit("-", 1)[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{name} on localhost restarted and rejoined in" in result.stdout
    assert inspect(name)["State"]["StartedAt"] > started
    assert inspect(name)["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert future.result(timeout=60) == payload
    assert len(identity(client)["workers"]) == N_WORKERS


def test_unknown_worker_names_the_workers_there_are(stack: Stack) -> None:
    result = ops(stack, "restart-worker", "no-such-worker")
    assert result.returncode == 1
    assert "error: no container 'no-such-worker'" in result.stderr
    assert all(name in result.stderr for name in worker_names(stack))


def test_logs_gathers_every_container_into_one_archive(stack: Stack, tmp_path: Path) -> None:
    result = ops(stack, "logs", "--output", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (archive,) = tmp_path.iterdir()  # and no partial file left beside it
    assert archive.name.startswith("skfleet-logs-") and archive.name.endswith(".tar.gz")
    with tarfile.open(archive) as tar:
        members = {Path(member.name).relative_to(Path(member.name).parts[0]).as_posix(): member for member in tar.getmembers()}
        scheduler = tar.extractfile(members[f"localhost/{stack.project}-scheduler-1.log"]).read().decode()
        status = tar.extractfile(members["status.txt"]).read().decode()
    assert {f"localhost/{name}.log" for name in worker_names(stack)} <= set(members)
    assert "Scheduler at:" in scheduler and scheduler[:4].isdigit()  # with docker's timestamps
    assert "healthy" in status


def test_tunnel_on_the_local_stack_names_the_published_dashboard(stack: Stack) -> None:
    (result,) = runbooks.run("dashboard-tunnel.md#the-local-stack", stack.env)
    url = result.stdout.split()[1]
    assert url == f"http://127.0.0.1:{stack.dashboard_port}/status"
    with urllib.request.urlopen(url.replace("/status", "/health"), timeout=5) as response:
        assert response.read() == b"ok"


def test_train_streams_the_trainer_and_gives_its_exit_code(stack: Stack) -> None:
    result = ops(stack, "train", "--", "--synthetic-rows", "3000", "--param", "n_estimators=4", "--param", "max_depth=4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_value(result.stdout, "best params") == "max_depth=4, n_estimators=4"
    assert re.search(r"Done +3 out of +3", result.stderr)  # joblib's progress lines, as they came
    bad = ops(stack, "train", "--", "--data", "/data/missing.csv")
    assert bad.returncode == 2
    assert "missing.csv" in bad.stderr


def test_runbook_version_mismatch(stack: Stack, tmp_path: Path, whole_again: None) -> None:
    with joined_worker(stack, drifted_image(stack, "cloudpickle", "3.1.1", tmp_path), "old-worker") as worker:
        wait_for(lambda: f"{N_WORKERS + 1} of" in ops(stack, "status").stdout, "the drifted worker to join", timeout=120)
        env = {**stack.env, "WORKER": worker}
        status, doctor = runbooks.run("version-mismatch.md#confirm", env)
        assert f"version mismatch: cloudpickle 3.1.1 on {worker}" in status.stdout
        assert "cloudpickle: client 3.1.2 vs worker" in doctor.stdout
        (fixed,) = runbooks.run("version-mismatch.md#fix-one-odd-worker", env)
        assert f"{worker} on localhost: retired 1" in fixed.stdout
        assert fixed.stdout.rstrip().endswith("healthy")
    (rebuilt,) = runbooks.run("version-mismatch.md#fix-the-whole-stack", stack.env)
    assert rebuilt.stdout.rstrip().endswith("healthy")


def test_runbook_unreachable_worker(stack: Stack, whole_again: None) -> None:
    """A worker that advertises 127.0.0.1: it joins, and nobody can reach it."""
    image = f"skfleet/runtime:{stack.env['SKFLEET_TAG']}"
    advertise = ["--listen-address", "tcp://0.0.0.0:8790", "--contact-address", "tcp://127.0.0.1:8790"]
    with joined_worker(stack, image, "loopback-worker", *advertise) as worker:
        wait_for(lambda: f"{N_WORKERS + 1} of" in ops(stack, "status").stdout, "the misconfigured worker to join", timeout=120)
        env = {**stack.env, "WORKER": worker}
        (status,) = runbooks.run("unreachable-worker.md#confirm", env)
        assert "advertises tcp://127.0.0.1:8790, which the scheduler cannot reach" in status.stdout
        (fixed,) = runbooks.run("unreachable-worker.md#fix", env)
        assert f"{worker} on localhost: retired 1" in fixed.stdout
        assert fixed.stdout.rstrip().endswith("healthy")


def test_runbook_scheduler_restart(stack: Stack, client: Client) -> None:
    old = client.scheduler_info()["id"]
    (status,) = runbooks.run("scheduler-restart.md#restart", stack.env)
    assert status.stdout.rstrip().endswith("healthy")
    assert f"{N_WORKERS} of {N_WORKERS} joined" in status.stdout
    with Client(f"tcp://127.0.0.1:{stack.scheduler_port}", timeout=30) as fresh:
        assert fresh.scheduler_info()["id"] != old


def test_runbook_slow_grid_search(stack: Stack, whole_again: None) -> None:
    status, doctor = runbooks.run("slow-grid-search.md#look", stack.env)
    (scaled,) = runbooks.run("slow-grid-search.md#add-workers", stack.env)
    assert "tasks in flight" in status.stdout and "all versions match" in doctor.stdout
    assert "3 worker containers running and joined" in scaled.stdout
    result = ops(stack, "scale", str(N_WORKERS))
    assert result.returncode == 0 and "retired 1" in result.stdout, result.stdout + result.stderr
