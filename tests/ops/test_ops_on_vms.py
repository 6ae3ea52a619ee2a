"""ops on the VMs, for real: scripts/ops.sh -i INVENTORY against the fleet site.yml provisioned
(tests/fleet.py), as an operator runs it from the repository root.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests import runbooks
from tests.fleet import Playbooks, VmTraining, ops, random_payload, runbook_env, start_ops, worker_hosts, worker_started_at
from tests.stack import wait_for
from tests.summary import summary_value

pytestmark = [
    pytest.mark.docker,
    pytest.mark.vms,
    pytest.mark.timeout(1800),
    # This machine's Python and the images' differ in the micro version only (the trainer's gate agrees).
    pytest.mark.filterwarnings("ignore:Mismatched versions found"),
]


def test_ops_status_names_every_vm_and_the_tls_scheduler(playbooks: Playbooks) -> None:
    result = ops(playbooks, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"scheduler  {playbooks.scheduler}" in result.stdout
    assert "2 of 2 joined" in result.stdout and result.stdout.rstrip().endswith("healthy")
    for vm in ("vm2", "vm3"):
        assert re.search(rf"tls://{re.escape(playbooks.fleet.vm(vm).address)}:8790 +{vm} +running", result.stdout), result.stdout


def test_ops_logs_gathers_every_vms_containers(playbooks: Playbooks, tmp_path: Path) -> None:
    result = ops(playbooks, "logs", "--output", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (archive,) = tmp_path.iterdir()
    with tarfile.open(archive) as tar:
        members = {Path(*Path(member.name).parts[1:]).as_posix(): member for member in tar.getmembers()}
        scheduler = tar.extractfile(members["vm1/skfleet-scheduler.log"]).read().decode()
    assert {"vm1/containers.txt", "vm2/skfleet-worker.log", "vm3/skfleet-worker.log", "status.txt"} <= set(members)
    assert re.search(rf"Scheduler at: +{re.escape(playbooks.scheduler)}", scheduler), scheduler[:3000]


def test_ops_train_runs_the_trainer_role_streams_its_progress_and_fetches_the_run(
    playbooks: Playbooks, vm_training: VmTraining
) -> None:
    result, run = vm_training.result, vm_training.run
    assert re.search(r"Done +(\d+) out of +\1 ", result.stderr), result.stderr[-3000:]  # streamed from the VM as it ran
    # train.yml's play (the trainer role: its job in the hardened container), which ends with the trainer's own summary.
    assert "TASK [skfleet : Run the container skfleet-trainer-" in result.stdout, result.stdout[-3000:]
    assert "TASK [trainer : Say what the run found" in result.stdout, result.stdout[-3000:]
    assert f"run {run.name} fetched to {run} (" in result.stdout
    results = json.loads((run / "results.json").read_text())
    best = ", ".join(f"{name.removeprefix('classifier__')}={value}" for name, value in sorted(results["best_params"].items()))
    assert summary_value(result.stdout, "best params") == best
    assert results["scheduler_address"] == playbooks.scheduler and results["n_workers"] == 2
    assert (run / "report.html").stat().st_size > 0
    # The job's container is gone; nothing but skfleet's services is left on the trainer host.
    assert [name for name in playbooks.containers("vm1") if name.startswith("skfleet-trainer")] == []


def test_ops_train_with_a_bad_grid_fails_with_the_trainers_words(playbooks: Playbooks, tmp_path: Path) -> None:
    result = ops(playbooks, "train", "--fetch-dir", str(tmp_path), "--", "--param", "max_depth=deep")
    assert result.returncode != 0
    assert "the trainer exited 2" in result.stdout, result.stdout[-3000:]
    assert "deep" in result.stderr + result.stdout  # the value the trainer refused, streamed and in the play's message
    assert list(tmp_path.iterdir()) == []
    assert [name for name in playbooks.containers("vm1") if name.startswith("skfleet-trainer")] == []


def test_an_interrupted_ops_train_stops_its_job_on_the_vm(playbooks: Playbooks, tmp_path: Path) -> None:
    # The job runs detached on vm1 (the trainer role): Ctrl-C on ops must not leave it running there.
    grid = ("--synthetic-rows", "40000", "--param", "n_estimators=30,60,90")

    def started_or_ended() -> bool:
        return any(name.startswith("skfleet-trainer") for name in playbooks.containers("vm1")) or training.poll() is not None

    training = start_ops(playbooks, "train", "--fetch-dir", str(tmp_path), "--", *grid)
    try:
        wait_for(started_or_ended, "the training job to start on vm1", timeout=300,
                 explain=training.output)  # fmt: skip
        assert training.poll() is None, f"ops train ended before the test could interrupt it\n{training.output()}"
        training.send_signal(signal.SIGINT)
        stdout, stderr = training.communicate(timeout=180)
    finally:
        if training.poll() is None:
            training.kill()
    assert training.returncode == 130, stdout[-3000:] + stderr[-3000:]
    assert "interrupted: stopped the training job on vm1" in stderr, stderr[-3000:]
    assert [name for name in playbooks.containers("vm1") if name.startswith("skfleet-trainer")] == []
    assert list(tmp_path.iterdir()) == []


def test_ops_restart_worker_keeps_its_data_and_it_rejoins(playbooks: Playbooks) -> None:
    started = worker_started_at(playbooks, "vm2")
    with playbooks.client() as client:
        payload = client.submit(random_payload, 1 << 20, workers=[worker_hosts(client)[playbooks.fleet.vm("vm2").address]],
                                allow_other_workers=False, pure=False)  # fmt: skip
        expected = payload.result(timeout=60)
        result = ops(playbooks, "restart-worker", "vm2")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "skfleet-worker on vm2 restarted and rejoined" in result.stdout
        assert payload.result(timeout=60) == expected  # moved to vm3 first, never recomputed
        assert len(worker_hosts(client)) == 2
    assert worker_started_at(playbooks, "vm2") > started


def test_ops_retire_worker_then_the_runbook_adds_it_back(playbooks: Playbooks) -> None:
    result = ops(playbooks, "retire-worker", "vm3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert playbooks.containers("vm3") == []
    status = ops(playbooks, "status")
    assert status.returncode == 1 and "1 of 2 workers joined the scheduler" in status.stdout, status.stdout
    # The missing one by its inventory host, with what to run.
    inventory = playbooks.inventory_dir / "hosts.ini"
    assert f"vm3 has no container skfleet-worker: ansible-playbook -i {inventory} site.yml --limit vm3" in status.stdout
    _, status = runbooks.run("add-remove-vm.md#add-a-vm", runbook_env(playbooks))
    assert status.stdout.rstrip().endswith("healthy")
    assert playbooks.containers("vm3") == ["skfleet-worker"]


def test_the_tunnel_runbook_opens_the_dashboard_and_the_tracking_server(playbooks: Playbooks) -> None:
    for port in (8787, 8789):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"127.0.0.1:{port} is taken here: the runbook's tunnel needs it"
    (tunnel,) = runbooks.run("dashboard-tunnel.md#open-it", runbook_env(playbooks))
    try:
        line = tunnel.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:8787/status"), line + tunnel.stderr.read()
        with urllib.request.urlopen("http://127.0.0.1:8787/health", timeout=10) as response:
            assert response.read() == b"ok"
        with urllib.request.urlopen("http://127.0.0.1:8787/status", timeout=10) as response:
            assert b"Dask" in response.read()
        # A client that resets its connection (as a browser may) ends that connection, not the tunnel.
        with socket.create_connection(("127.0.0.1", 8787), timeout=10) as dropped:
            dropped.sendall(b"GET /status HTTP/1.1\r\n")
            dropped.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        time.sleep(1)
        with urllib.request.urlopen("http://127.0.0.1:8787/health", timeout=10) as response:
            assert response.read() == b"ok"
        # MLflow's UI, where the runs' links point: HTTPS with vm1's certificate (it names 127.0.0.1), users only.
        line = tunnel.stdout.readline()
        secrets = playbooks.inventory_dir / "tracking" / "admin.password"
        assert line.startswith("tracking: https://127.0.0.1:8789/  (through vm1 to "), line
        assert line.rstrip().endswith(f"log in as admin, password in {secrets})"), line
        base = "https://127.0.0.1:8789"
        assert playbooks.tracking(base).call("experiments/search?max_results=1")[0] == 200
        assert playbooks.tracking(base, user=None).call("experiments/search?max_results=1")[0] == 401
    finally:
        still_open = tunnel.poll() is None
        if still_open:
            os.killpg(tunnel.pid, signal.SIGTERM)
        stdout, stderr = tunnel.communicate(timeout=30)
    assert still_open, f"the tunnel ended by itself (exit {tunnel.returncode}): {stdout}{stderr}"
    assert tunnel.returncode == 0 and "tunnel closed" in stdout, stdout + stderr
    assert "dropped by their client; the tunnel served the others" in stderr, stderr
    for port in (8787, 8789):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # closed with it
