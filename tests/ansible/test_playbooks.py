"""The Ansible path, for real: three VM containers (systemd, sshd, their own Docker engine),
the playbooks run over SSH, a TLS Dask cluster across the VMs, a client on this machine.

vm1 runs the scheduler (and the trainer), vm2 and vm3 the workers. The tests run in file
order on one cluster: site.yml twice, then real work, then the playbooks that change it
(train, scale down and up, rolling restart, upgrade, teardown).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker.errors
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from distributed import Client, Event
from distributed.security import Security
from prometheus_client.parser import text_string_to_metric_families

from tests import runbooks
from tests.stack import wait_for
from tests.vms import FLEET_LABEL, LABEL_KEY, LABEL_VALUE, VmFleet, destroy_leftovers, docker_client

pytestmark = [
    pytest.mark.docker,
    pytest.mark.vms,
    pytest.mark.timeout(1800),
    # This machine's Python and the images' differ in the micro version only (the trainer's gate agrees).
    pytest.mark.filterwarnings("ignore:Mismatched versions found"),
]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
PREFIX = "skfleet-ansible-test"
TAG = "e2e"
NEXT_TAG = "e2e-next"
# The test registry's last address byte on the VMs' network (the VMs are .11 and up).
REGISTRY_HOST = 5
REGISTRY_IMAGE = "skfleet-test/registry:bookworm"
REGISTRY_PUSH_PORT = 5055


@dataclass
class Playbooks:
    """The VM fleet, its inventory and a way to run the playbooks against it."""

    fleet: VmFleet
    inventory_dir: Path
    runs_dir: Path
    group_vars: dict[str, object]
    timings: dict[str, list[float]] = field(default_factory=dict)

    @property
    def registry(self) -> str:
        """Give the test registry's address as the VMs reach it (the upgrade ships through it)."""
        return f"{self.fleet.gateway.rsplit('.', 1)[0]}.{REGISTRY_HOST}:5000"

    def set_group_vars(self, **settings: object) -> None:
        """Change group_vars/all.yml, as a user edits the inventory."""
        self.group_vars.update(settings)
        (self.inventory_dir / "group_vars" / "all.yml").write_text(json.dumps(self.group_vars, indent=2))

    @property
    def scheduler(self) -> str:
        return f"tls://{self.fleet.vm('vm1').address}:8786"

    def write_inventory(self, workers: list[str], retired: list[str] | None = None) -> None:
        self.fleet.write_inventory(
            self.inventory_dir / "hosts.ini",
            {
                "dask_scheduler": ["vm1"],
                "dask_workers": workers,
                "dask_workers_retired": retired or [],
                "trainer": [],
            },
        )

    def run(self, playbook: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one playbook; give its output (failing the test, with that output, on a non-zero exit)."""
        command = [str(BIN / "ansible-playbook"), "-i", str(self.inventory_dir / "hosts.ini"), playbook, *extra]
        env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
        started = time.monotonic()
        result = subprocess.run(command, cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=1200)
        self.timings.setdefault(playbook, []).append(time.monotonic() - started)
        if check and result.returncode != 0:
            pytest.fail(f"{playbook} exited {result.returncode}\n{result.stdout[-20000:]}\n{result.stderr[-5000:]}")
        return result

    def client(self, **tls: str) -> Client:
        """Give a TLS client of the cluster with the trainer's certificate (or the files given)."""
        tls_dir = self.inventory_dir / "tls"
        security = Security(
            tls_ca_file=tls.get("ca", str(tls_dir / "ca.pem")),
            tls_client_cert=tls.get("cert", str(tls_dir / "trainer.pem")),
            tls_client_key=tls.get("key", str(tls_dir / "trainer.key")),
            require_encryption=True,
        )
        return Client(self.scheduler, security=security, timeout=30)

    def containers(self, vm: str) -> list[str]:
        """Give the names of the skfleet containers on a VM, running or not."""
        output = self.fleet.ssh(self.fleet.vm(vm), "sudo docker ps --all --format '{{.Names}}'").stdout
        return sorted(name for name in output.split() if name.startswith("skfleet-"))


def recap(output: str) -> dict[str, dict[str, int]]:
    """Give PLAY RECAP's counters per host."""
    counters = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, flags=re.MULTILINE):
        counters[host] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", fields)}
    return counters


def worker_hosts(client: Client) -> dict[str, str]:
    """Give the worker addresses by their host's address."""
    return {info["host"]: address for address, info in client.scheduler_info()["workers"].items()}


def cluster_functions() -> tuple[Callable[[int], bytes], Callable[[bytes, float, int], int], Callable[[bytes, int, str], int]]:
    """Give the functions the tests send to the workers.

    Local functions, so that Dask pickles them by value: the workers can't import this module.
    """

    def random_payload(n_bytes: int) -> bytes:
        return os.urandom(n_bytes)

    def slow_checksum(payload: bytes, delay: float, salt: int) -> int:
        time.sleep(delay)
        return zlib.crc32(payload) + salt

    def gated_checksum(payload: bytes, salt: int, gate: str) -> int:
        # Runs (blocked) until the test opens the gate: the computation is surely in flight
        # while a playbook changes the cluster under it.
        Event(gate).wait(timeout=900)
        return zlib.crc32(payload) + salt

    return random_payload, slow_checksum, gated_checksum


random_payload, slow_checksum, gated_checksum = cluster_functions()


@pytest.fixture(scope="module")
def playbooks(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Playbooks]:
    subprocess.run([str(ROOT / "scripts" / "build-vm-image.sh")], check=True, timeout=900)
    destroy_leftovers(PREFIX)
    work = tmp_path_factory.mktemp("ansible")
    fleet = VmFleet(PREFIX, work_dir=work / "vms")
    inventory_dir = work / "inventory"
    inventory_dir.mkdir()
    (inventory_dir / "group_vars").mkdir()
    cluster = Playbooks(fleet, inventory_dir, work / "runs", group_vars={})
    # The images are built on this controller by the role itself (dask_images_build), with
    # the build settings scripts/test.sh exported (offline base image, pip CA bundle), and
    # shipped without a registry; upgrade.yml later pulls from the test registry.
    cluster.set_group_vars(
        skfleet_image_tag=TAG,
        dask_images_build=True,
        dask_images_archive_dir=str(work / "image-archives"),
        trainer_fetch_dir=str(cluster.runs_dir),
        # The VMs' facts see this whole machine; size the workers like small VMs.
        dask_worker_nthreads=1,
        dask_worker_memory_limit="2GiB",
        # The firewall on, admitting the cluster and this controller (the network's gateway).
        skfleet_firewall=True,
        skfleet_firewall_allowed_sources=[fleet.gateway],
        # The test registry speaks plain HTTP on the test network.
        docker_engine_insecure_registries=[cluster.registry],
        # site.yml and scale.yml write a Prometheus scrape configuration from the inventory.
        skfleet_prometheus_config=str(work / "prometheus.yml"),
    )
    cluster.write_inventory(["vm2", "vm3"])
    try:
        fleet.boot()
        start_registry(cluster)
        cluster.run("site.yml")
        yield cluster
    except BaseException:
        for vm in fleet.vms:
            print(f"\n===== journal of {vm.name} =====\n{fleet.logs(vm)}")
        raise
    finally:
        timings = ", ".join(f"{name} {' / '.join(f'{t:.0f}' for t in times)}" for name, times in cluster.timings.items())
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            print(f"\nplaybook wall times (s): {timings}")
        with contextlib.suppress(docker.errors.NotFound):  # not started, when the fleet did not boot
            docker_client().containers.get(f"{PREFIX}-registry").remove(force=True)
        fleet.destroy()


def test_site_converges_and_a_second_run_changes_nothing(playbooks: Playbooks) -> None:
    second = playbooks.run("site.yml")
    counters = recap(second.stdout)
    assert set(counters) >= {"vm1", "vm2", "vm3"}, second.stdout[-3000:]
    changed = {host: numbers["changed"] for host, numbers in counters.items() if numbers["changed"]}
    assert changed == {}, second.stdout[-20000:]
    assert "skfleet-scheduler" in playbooks.containers("vm1")
    assert playbooks.containers("vm2") == playbooks.containers("vm3") == ["skfleet-worker"]


def test_a_task_on_one_vm_consumes_a_result_made_on_the_other(playbooks: Playbooks) -> None:
    vm2, vm3 = playbooks.fleet.vm("vm2").address, playbooks.fleet.vm("vm3").address
    with playbooks.client() as client:
        workers = worker_hosts(client)
        assert set(workers) == {vm2, vm3}
        payload = client.submit(random_payload, 1 << 20, workers=[workers[vm2]], allow_other_workers=False, pure=False)
        checksum = client.submit(slow_checksum, payload, 0, 0, workers=[workers[vm3]], allow_other_workers=False)
        assert checksum.result(timeout=60) == zlib.crc32(payload.result(timeout=60))
        assert list(client.who_has([checksum])[checksum.key]) == [workers[vm3]]  # computed on vm3 ...
        # ... from bytes made on vm2 and fetched from there. (Not who_has: once the checksum is done,
        # Dask's memory manager may drop vm3's copy, which no task needs any more.)
        fetched = client.run(
            lambda dask_worker: [
                (entry["who"], [str(key) for key in entry["keys"]]) for entry in dask_worker.transfer_incoming_log
            ],
            workers=[workers[vm3]],
        )
        assert (workers[vm2], [payload.key]) in fetched[workers[vm3]], fetched


def test_plain_tcp_is_refused(playbooks: Playbooks) -> None:
    address = playbooks.scheduler.replace("tls://", "tcp://")
    with pytest.raises((OSError, TimeoutError)):
        Client(address, timeout=5)


def test_a_certificate_from_another_ca_is_refused(playbooks: Playbooks, tmp_path: Path) -> None:
    ca_key, ca_cert = make_certificate("intruder CA", issuer=None, path=tmp_path / "ca")
    make_certificate("intruder", issuer=(ca_key, ca_cert), path=tmp_path / "client")
    with pytest.raises((OSError, TimeoutError)):
        playbooks.client(cert=str(tmp_path / "client.pem"), key=str(tmp_path / "client.key"))
    # The cluster's own CA and a stranger's client certificate: refused too.
    with pytest.raises((OSError, TimeoutError)):
        playbooks.client(
            ca=str(playbooks.inventory_dir / "tls" / "ca.pem"),
            cert=str(tmp_path / "client.pem"),
            key=str(tmp_path / "client.key"),
        )


def test_dask_listens_on_the_private_address_only(playbooks: Playbooks) -> None:
    for vm_name, ports in (("vm1", {8786, 8787}), ("vm2", {8788, 8790, 8795})):
        vm = playbooks.fleet.vm(vm_name)
        listening = playbooks.fleet.ssh(vm, "ss -Hltn").stdout
        endpoints = {line.split()[3] for line in listening.splitlines()}
        for port in ports:
            assert f"{vm.address}:{port}" in endpoints, listening
            assert not {f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}"} & endpoints, listening


def test_the_firewall_drops_strangers(playbooks: Playbooks) -> None:
    """A machine on the same network but outside the cluster reaches SSH, not Dask."""
    scheduler = playbooks.fleet.vm("vm1").address
    probe = (
        f"timeout 5 bash -c 'echo > /dev/tcp/{scheduler}/22' && echo ssh-open; "
        f"timeout 5 bash -c 'echo > /dev/tcp/{scheduler}/8786' && echo dask-open; true"
    )
    # stdout only: bash's "connect: ..." complaints about the closed port go to stderr.
    stranger = docker_client().containers.run(
        playbooks.fleet.image, ["-c", probe], entrypoint="bash", network=playbooks.fleet.network, remove=True
    )
    assert stranger.decode().split() == ["ssh-open"], stranger.decode()


def test_host_tls_files_are_private(playbooks: Playbooks) -> None:
    listing = playbooks.fleet.ssh(playbooks.fleet.vm("vm2"), "sudo sh -c \"stat -c '%n %a %u' /etc/skfleet/tls/*\"").stdout
    modes = {Path(name).name: (mode, owner) for name, mode, owner in (line.split() for line in listing.splitlines())}
    assert modes["node.key"] == ("600", "10001")
    assert modes["node.pem"][0] == modes["ca.pem"][0] == "640"
    assert "ca.key" not in modes  # the CA key never leaves the controller


def test_train_fetches_the_run_folder(playbooks: Playbooks) -> None:
    played = playbooks.run(
        "train.yml",
        "-e",
        json.dumps({"trainer_args": ["--synthetic-rows", "6000", "--param", "max_depth=4,8", "--param", "n_estimators=10"]}),
    )
    runs = sorted(playbooks.runs_dir.iterdir())
    assert len(runs) == 1
    results = json.loads((runs[0] / "results.json").read_text())
    assert {path.name for path in runs[0].iterdir()} >= {"results.json", "cv_results.csv", "model.skops"}
    assert results["scheduler_address"] == playbooks.scheduler
    assert results["local_cluster"] is False
    assert results["n_workers"] == 2
    assert results["n_fits"] == 2 * 3
    assert 0.5 < results["test_accuracy"] <= 1
    assert results["test_accuracy"] >= results["baseline_accuracy"]
    # The play ends with what the run found, read from its results.json.
    assert f"best CV {results['scoring']} {results['best_cv_score']:.4f}" in played.stdout, played.stdout[-3000:]
    assert f"test accuracy {results['test_accuracy']:.4f} (majority baseline" in played.stdout
    assert f"{results['n_fits']} fits in" in played.stdout and f"fetched to {runs[0]}" in played.stdout


def test_the_rendered_prometheus_config_lists_every_metrics_endpoint_and_each_answers(playbooks: Playbooks) -> None:
    config = yaml.safe_load((playbooks.inventory_dir.parent / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    targets = {job: {(static["targets"][0], static["labels"]["host"]) for static in statics} for job, statics in jobs.items()}
    address = {vm: playbooks.fleet.vm(vm).address for vm in ("vm1", "vm2", "vm3")}
    assert targets == {
        "dask-scheduler": {(f"{address['vm1']}:8787", "vm1")},
        "dask-workers": {(f"{address['vm2']}:8788", "vm2"), (f"{address['vm3']}:8788", "vm3")},
    }
    # What Prometheus would scrape, from this controller (the firewall admits it): Prometheus text, the right server.
    for job, expected_family in (("dask-scheduler", "dask_scheduler_workers"), ("dask-workers", "dask_worker_threads")):
        for target, _ in targets[job]:
            with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as response:
                families = {family.name for family in text_string_to_metric_families(response.read().decode())}
            assert expected_family in families, (target, sorted(families)[:20])


def ops(playbooks: Playbooks, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run scripts/ops.sh -i INVENTORY ARGS, as an operator would from the repository root."""
    command = [str(ROOT / "scripts" / "ops.sh"), "-i", str(playbooks.inventory_dir / "hosts.ini"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def runbook_env(playbooks: Playbooks) -> dict[str, str]:
    """The environment docs/runbooks/ asks for: INVENTORY, the inventory's hosts file."""
    return {**os.environ, "INVENTORY": str(playbooks.inventory_dir / "hosts.ini"), "ANSIBLE_FORCE_COLOR": "0"}


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


def test_ops_train_streams_progress_and_fetches_the_run(playbooks: Playbooks, tmp_path: Path) -> None:
    grid = ["--synthetic-rows", "6000", "--param", "max_depth=4", "--param", "n_estimators=10"]
    result = ops(playbooks, "train", "--fetch-dir", str(tmp_path), "--", *grid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Done +3 out of +3", result.stderr), result.stderr[-3000:]  # streamed from the VM as it ran
    (run,) = tmp_path.iterdir()
    assert f"run {run.name} fetched to {run}" in result.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["scheduler_address"] == playbooks.scheduler and results["n_workers"] == 2
    assert (run / "report.html").stat().st_size > 0


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
    _, status = runbooks.run("add-remove-vm.md#add-a-vm", runbook_env(playbooks))
    assert status.stdout.rstrip().endswith("healthy")
    assert playbooks.containers("vm3") == ["skfleet-worker"]


def test_the_tunnel_runbook_opens_the_dashboard(playbooks: Playbooks) -> None:
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8787)) != 0, "127.0.0.1:8787 is taken here: the runbook's tunnel needs it"
    (tunnel,) = runbooks.run("dashboard-tunnel.md#open-it", runbook_env(playbooks))
    try:
        line = tunnel.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:8787/status"), line + tunnel.stderr.read()
        with urllib.request.urlopen("http://127.0.0.1:8787/health", timeout=10) as response:
            assert response.read() == b"ok"
        with urllib.request.urlopen("http://127.0.0.1:8787/status", timeout=10) as response:
            assert b"Dask" in response.read()
    finally:
        still_open = tunnel.poll() is None
        if still_open:
            os.killpg(tunnel.pid, signal.SIGTERM)
        stdout, stderr = tunnel.communicate(timeout=30)
    assert still_open, f"the tunnel ended by itself (exit {tunnel.returncode}): {stdout}{stderr}"
    assert "tunnel closed" in stdout, stdout + stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8787)) != 0  # closed with it


def test_scale_down_retires_the_worker_and_its_data_moves(playbooks: Playbooks) -> None:
    vm2, vm3 = playbooks.fleet.vm("vm2").address, playbooks.fleet.vm("vm3").address
    with playbooks.client() as client:
        workers = worker_hosts(client)
        # Data only vm3 holds, and a computation that needs it, held in flight until scale.yml is done.
        payload = client.submit(random_payload, 1 << 20, workers=[workers[vm3]], allow_other_workers=False, pure=False)
        expected = zlib.crc32(payload.result(timeout=60))
        gate = Event("scale-down", client=client)
        running = [client.submit(gated_checksum, payload, salt, gate.name) for salt in range(8)]
        wait_for(lambda: any(client.processing().values()), "the gated tasks to start")

        playbooks.write_inventory(["vm2"], retired=["vm3"])
        _, status = runbooks.run("add-remove-vm.md#remove-a-vm", runbook_env(playbooks))
        gate.set()
        assert "1 of 1 joined" in status.stdout and status.stdout.rstrip().endswith("healthy"), status.stdout

        assert client.gather(running) == [expected + salt for salt in range(8)]
        assert set(worker_hosts(client)) == {vm2}
        # The very bytes moved to vm2 (a recomputation would have made new random ones).
        assert list(client.who_has([payload])[payload.key]) == [workers[vm2]]
        assert zlib.crc32(payload.result(timeout=60)) == expected
    assert playbooks.containers("vm3") == []


def test_scale_up_adds_the_host_back(playbooks: Playbooks) -> None:
    playbooks.write_inventory(["vm2", "vm3"])
    _, status = runbooks.run("add-remove-vm.md#add-a-vm", runbook_env(playbooks))
    assert "2 of 2 joined" in status.stdout, status.stdout
    with playbooks.client() as client:
        assert set(worker_hosts(client)) == {playbooks.fleet.vm("vm2").address, playbooks.fleet.vm("vm3").address}


def test_rolling_restart_keeps_a_computation_alive(playbooks: Playbooks) -> None:
    started_before = {vm: worker_started_at(playbooks, vm) for vm in ("vm2", "vm3")}
    with playbooks.client() as client:
        payload = client.submit(random_payload, 1 << 16, pure=False)
        expected = zlib.crc32(payload.result(timeout=60))
        gate = Event("rolling-restart", client=client)
        running = [client.submit(gated_checksum, payload, salt, gate.name) for salt in range(8)]
        wait_for(lambda: any(client.processing().values()), "the gated tasks to start")

        playbooks.run("rolling-restart.yml")
        gate.set()

        assert client.gather(running) == [expected + salt for salt in range(8)]
        assert zlib.crc32(payload.result(timeout=60)) == expected  # moved, never recomputed
        assert len(worker_hosts(client)) == 2
    for vm in ("vm2", "vm3"):
        assert worker_started_at(playbooks, vm) > started_before[vm]


def test_upgrade_through_a_registry_moves_every_host_to_the_new_version(playbooks: Playbooks) -> None:
    for image in ("runtime", "trainer"):
        derive_image(f"skfleet/{image}:{TAG}", f"skfleet/{image}:{NEXT_TAG}")
        push_image(f"skfleet/{image}:{NEXT_TAG}", playbooks)
    new_version = ["-e", f"skfleet_image_tag={NEXT_TAG}", "-e", f"skfleet_registry={playbooks.registry}"]
    output = playbooks.run("upgrade.yml", *new_version).stdout
    assert "all versions match" in output, output[-5000:]
    assert "TLS: yes" in output and "2 workers" in output, output[-5000:]
    for vm, name in (("vm1", "skfleet-scheduler"), ("vm2", "skfleet-worker"), ("vm3", "skfleet-worker")):
        image = playbooks.fleet.ssh(playbooks.fleet.vm(vm), f"sudo docker inspect --format '{{{{.Config.Image}}}}' {name}")
        assert image.stdout.strip() == f"{playbooks.registry}/skfleet/runtime:{NEXT_TAG}"
    with playbooks.client() as client:
        assert len(worker_hosts(client)) == 2
    # As the runbook says: the inventory now names the new version, and the next site.yml keeps it.
    playbooks.set_group_vars(skfleet_image_tag=NEXT_TAG, skfleet_registry=playbooks.registry)


def test_rotating_the_ca_locks_out_the_old_certificates(playbooks: Playbooks, tmp_path: Path) -> None:
    tls_dir = playbooks.inventory_dir / "tls"
    old = {name: (tls_dir / name).read_bytes() for name in ("ca.pem", "trainer.pem", "trainer.key")}
    for name, content in old.items():
        (tmp_path / name).write_bytes(content)

    runbooks.run("tls-rotation.md#rotate-the-ca-and-every-certificate", runbook_env(playbooks))
    (check,) = runbooks.run("tls-rotation.md#check", runbook_env(playbooks))
    assert check.stdout.rstrip().endswith("healthy"), check.stdout

    assert (tls_dir / "ca.pem").read_bytes() != old["ca.pem"]
    with playbooks.client() as client:  # the new trainer certificate works ...
        assert len(worker_hosts(client)) == 2
    with pytest.raises((OSError, TimeoutError)):  # ... the old one no longer does
        playbooks.client(ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "trainer.pem"), key=str(tmp_path / "trainer.key"))


def test_teardown_leaves_no_skfleet_container(playbooks: Playbooks) -> None:
    playbooks.run("teardown.yml", "-e", "teardown_remove_images=true")
    for vm in ("vm1", "vm2", "vm3"):
        assert playbooks.containers(vm) == []
        images = playbooks.fleet.ssh(playbooks.fleet.vm(vm), "sudo docker images --format '{{.Repository}}:{{.Tag}}'")
        assert f"{playbooks.registry}/skfleet/runtime:{NEXT_TAG}" not in images.stdout.split()


def worker_started_at(playbooks: Playbooks, vm: str) -> str:
    command = "sudo docker inspect --format '{{.State.StartedAt}}' skfleet-worker"
    return playbooks.fleet.ssh(playbooks.fleet.vm(vm), command).stdout.strip()


def derive_image(source: str, target: str) -> None:
    """Tag a new image ID on top of SOURCE: a new version for upgrade.yml, in a second."""
    dockerfile = f"FROM {source}\nLABEL skfleet.test.upgrade={target}\n"
    docker_client().images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=target, rm=True, timeout=120)


def start_registry(playbooks: Playbooks) -> None:
    """Run a registry (Debian's docker-registry) on the VMs' network, published on 127.0.0.1 for pushing."""
    base = os.environ.get("BASE_IMAGE", "skfleet/base:bookworm")
    dockerfile = (
        f"FROM {base}\n"
        "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends"
        " docker-registry && rm -rf /var/lib/apt/lists/*\n"
        # Debian's config asks for htpasswd logins; the test registry lives on a test network only.
        "RUN printf 'version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: /var/lib/docker-registry\\n"
        "http:\\n  addr: :5000\\n' > /etc/docker/registry/open.yml\n"
        'CMD ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/open.yml"]\n'
    )
    engine = docker_client()
    engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=REGISTRY_IMAGE, rm=True, timeout=600)
    network = playbooks.fleet.network
    engine.containers.run(
        REGISTRY_IMAGE,
        detach=True,
        name=f"{PREFIX}-registry",
        labels={LABEL_KEY: LABEL_VALUE, FLEET_LABEL: PREFIX},  # destroy_leftovers(PREFIX) clears it
        network=network,
        networking_config={network: engine.api.create_endpoint_config(ipv4_address=playbooks.registry.split(":")[0])},
        ports={"5000/tcp": ("127.0.0.1", REGISTRY_PUSH_PORT)},
    )


def push_image(image: str, playbooks: Playbooks) -> None:
    """Push IMAGE to the test registry (through its 127.0.0.1 port, which Docker trusts over HTTP)."""
    engine = docker_client()
    repository, tag = f"127.0.0.1:{REGISTRY_PUSH_PORT}/{image}".rsplit(":", 1)
    engine.images.get(image).tag(repository, tag)
    # A failed push is a line of the progress stream, not an exception.
    errors = [line["error"] for line in engine.api.push(repository, tag, stream=True, decode=True) if "error" in line]
    assert not errors, f"pushing {repository}:{tag}: {errors}"


def make_certificate(name: str, issuer: tuple | None, path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Write PATH.pem and PATH.key: a CA when ISSUER is None, else a client certificate it signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_key, issuer_cert = issuer or (key, None)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    certificate = builder.sign(issuer_key, hashes.SHA256())
    path.with_suffix(".pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key, certificate
