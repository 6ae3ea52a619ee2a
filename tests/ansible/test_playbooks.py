"""The playbooks, for real, on the VM fleet of tests/fleet.py (three VM stand-ins, a TLS Dask cluster).

The tests run in file order on one cluster: site.yml a second time (its first run, the fixture's,
opened the dashboards to a Prometheus server), a third time back to the default, then real work,
then the playbooks that change it (train, scale down and up, rolling restart, upgrade, CA rotation);
teardown.yml runs last of all, after tests/ops/test_ops_on_vms.py (marked `last`).
"""

from __future__ import annotations

import io
import json
import socket
import urllib.request
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from distributed import Client, Event
from prometheus_client.parser import text_string_to_metric_families

from tests import runbooks
from tests.fleet import (
    REGISTRY_PUSH_PORT,
    TAG,
    Playbooks,
    VmTraining,
    changed_tasks,
    gated_checksum,
    prometheus_stand_in,
    random_payload,
    recap,
    runbook_env,
    slow_checksum,
    worker_hosts,
    worker_started_at,
)
from tests.stack import wait_for
from tests.summary import summary_value
from tests.vms import docker_client

pytestmark = [
    pytest.mark.docker,
    pytest.mark.vms,
    pytest.mark.timeout(1800),
    # This machine's Python and the images' differ in the micro version only (the trainer's gate agrees).
    pytest.mark.filterwarnings("ignore:Mismatched versions found"),
]

NEXT_TAG = "e2e-next"


def test_site_converges_and_a_second_run_changes_nothing(playbooks: Playbooks) -> None:
    second = playbooks.run("site.yml", "--diff")  # what a task would change, shown when one does
    counters = recap(second.stdout)
    assert set(counters) >= {"vm1", "vm2", "vm3"}, second.stdout[-3000:]
    changed = {host: numbers["changed"] for host, numbers in counters.items() if numbers["changed"]}
    assert changed == {}, "\n".join(["changed on the second run:", *changed_tasks(second.stdout), second.stdout[-20000:]])
    assert "skfleet-scheduler" in playbooks.containers("vm1")
    assert playbooks.containers("vm2") == playbooks.containers("vm3") == ["skfleet-worker"]


def test_the_role_gave_every_vm_an_engine_on_overlay2_and_the_docker_command(playbooks: Playbooks) -> None:
    """Debian 13 packages the CLI apart (docker-cli): the ops tasks and the runbooks run it on every host."""
    for vm in playbooks.fleet.vms:
        # overlay2 needs /var/lib/docker on a volume (tests/vms.py): on the container's own filesystem it is vfs.
        driver = playbooks.fleet.ssh(vm, "sudo docker info --format '{{.Driver}}'")
        assert driver.stdout.strip() == "overlay2", (vm.name, driver.stdout, driver.stderr)


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


def test_vm_workers_get_their_memory_limit_from_the_launcher_compose_runs_too(playbooks: Playbooks) -> None:
    """One launcher (docker/worker.sh): the container's 2 GiB is the kernel's wall, Dask's limit 256 MiB lower."""
    with playbooks.client() as client:
        limits = {worker["host"]: worker["memory_limit"] for worker in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert limits == dict.fromkeys((playbooks.fleet.vm("vm2").address, playbooks.fleet.vm("vm3").address), 2 * 2**30 - 2**28)
    for vm in ("vm2", "vm3"):
        command = "sudo docker inspect --format '{{.HostConfig.Memory}} {{.Args}}' skfleet-worker"
        inspected = playbooks.fleet.ssh(playbooks.fleet.vm(vm), command)
        memory, arguments = inspected.stdout.split(" ", 1)
        assert int(memory) == 2 * 2**30, inspected.stdout
        assert "skfleet-worker" in arguments and "--memory-limit" not in arguments, inspected.stdout


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


def test_dashboards_opened_to_prometheus_serve_it_and_nobody_else(playbooks: Playbooks) -> None:
    """skfleet_dashboard_sources, as site.yml's first run had it (tests/fleet.py): Prometheus's server (a container
    on the cluster's network) is let in to the dashboards, not to Dask; a stranger to neither."""
    check_the_rendered_prometheus_config(playbooks, playbooks.prometheus_config)
    fleet = playbooks.fleet
    vm1, vm2 = fleet.vm("vm1").address, fleet.vm("vm2").address
    probe = " ".join(
        f"timeout 5 bash -c 'echo > /dev/tcp/{address}/{port}' 2>/dev/null && echo {address}:{port};"
        for address, port in ((vm1, 8786), (vm1, 8787), (vm2, 8788), (vm2, 8790))
    )
    admitted = prometheus_stand_in().exec_run(["bash", "-c", probe + " true"]).output.decode().split()
    assert admitted == [f"{vm1}:8787", f"{vm2}:8788"]
    stranger = docker_client().containers.run(fleet.image, ["-c", probe + " true"], entrypoint="bash",
                                              network=fleet.network, remove=True)  # fmt: skip
    assert stranger.decode().split() == []


def test_back_to_the_default_no_rule_names_the_prometheus_server(playbooks: Playbooks) -> None:
    """The dashboards' sources taken out of the inventory: out of the firewall, and the dashboards back on 127.0.0.1."""
    playbooks.set_group_vars(skfleet_dashboard_sources=[], skfleet_prometheus_config="")
    playbooks.run("site.yml")
    for vm in ("vm1", "vm2"):
        rules = playbooks.fleet.ssh(playbooks.fleet.vm(vm), "sudo iptables -w -S SKFLEET").stdout
        assert playbooks.prometheus_address not in rules, rules


def test_dask_listens_on_the_private_address_and_the_dashboards_on_loopback_only(playbooks: Playbooks) -> None:
    for vm_name, dask_ports, dashboard_port in (("vm1", {8786}, 8787), ("vm2", {8790, 8795}, 8788)):
        vm = playbooks.fleet.vm(vm_name)
        listening = playbooks.fleet.ssh(vm, "ss -Hltn").stdout
        endpoints = {line.split()[3] for line in listening.splitlines()}
        for port in dask_ports:
            assert f"{vm.address}:{port}" in endpoints, listening
        assert f"127.0.0.1:{dashboard_port}" in endpoints and f"{vm.address}:{dashboard_port}" not in endpoints, listening
        for port in {*dask_ports, dashboard_port}:
            assert not {f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}"} & endpoints, listening
    # Not even the controller, which the firewall admits, reaches the dashboard: the tunnel does (tests/ops).
    with socket.socket() as probe:
        probe.settimeout(5)
        assert probe.connect_ex((playbooks.fleet.vm("vm1").address, 8787)) != 0


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


def test_train_fetches_the_run_folder(playbooks: Playbooks, vm_training: VmTraining) -> None:
    """train.yml's play (the trainer role), here as `ops.sh train` runs it (tests/ops checks what ops adds)."""
    played, run = vm_training.result, vm_training.run
    results = json.loads((run / "results.json").read_text())
    assert {path.name for path in run.iterdir()} >= {"results.json", "cv_results.csv", "model.skops"}
    assert results["scheduler_address"] == playbooks.scheduler
    assert results["local_cluster"] is False
    assert results["n_workers"] == 2
    assert results["n_fits"] == 4 * 3
    assert 0.5 < results["test_accuracy"] <= 1
    assert results["test_accuracy"] >= results["baseline_accuracy"]
    # The play ends with the trainer's own summary (its result line's), then where the folder went.
    assert summary_value(played.stdout, f"best CV {results['scoring']}") == f"{results['best_cv_score']:.4f}", played.stdout[
        -3000:
    ]
    assert summary_value(played.stdout, "test accuracy").startswith(f"{results['test_accuracy']:.4f}")
    assert summary_value(played.stdout, "fit").startswith(f"{results['n_fits']} fits in")
    assert f"run {run.name} fetched to {run} (" in played.stdout
    assert "written to" not in played.stdout  # the container's path means nothing on the controller
    # Logged to MLflow's server on vm1 (group tracking), over HTTPS, as the trainer's user: the run, a
    # nested run per candidate, its files; its link points at the end of `ops.sh tunnel`.
    tracking = playbooks.tracking()
    (parent,) = tracking.parent(results["run_id"])
    info = parent["info"]
    assert info["status"] == "FINISHED"
    assert results["tracking"]["url"] == f"https://127.0.0.1:8789/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"
    assert len(tracking.children(info["run_id"])) == results["n_candidates"] == 4
    assert tracking.artifacts(info["run_id"]) == {path.name for path in run.iterdir()}
    # Nobody gets in without a user; the trainer's can't manage users.
    assert playbooks.tracking(user=None).call("experiments/get-by-name?experiment_name=skfleet")[0] == 401
    assert playbooks.tracking(user="trainer").call("users/get?username=admin")[0] == 403


def check_the_rendered_prometheus_config(playbooks: Playbooks, path: Path) -> None:
    config = yaml.safe_load(path.read_text())
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
    for image in ("runtime", "trainer", "tracking"):
        derive_image(f"skfleet/{image}:{TAG}", f"skfleet/{image}:{NEXT_TAG}")
        push_image(f"skfleet/{image}:{NEXT_TAG}", playbooks)
    new_version = ["-e", f"skfleet_image_tag={NEXT_TAG}", "-e", f"skfleet_registry={playbooks.registry}"]
    output = playbooks.run("upgrade.yml", *new_version).stdout
    assert "all versions match" in output, output[-5000:]
    assert "TLS: yes" in output and "2 workers" in output, output[-5000:]
    for vm, name in (("vm1", "skfleet-scheduler"), ("vm2", "skfleet-worker"), ("vm3", "skfleet-worker")):
        image = playbooks.fleet.ssh(playbooks.fleet.vm(vm), f"sudo docker inspect --format '{{{{.Config.Image}}}}' {name}")
        assert image.stdout.strip() == f"{playbooks.registry}/skfleet/runtime:{NEXT_TAG}"
    tracking = playbooks.fleet.ssh(playbooks.fleet.vm("vm1"), "sudo docker inspect --format '{{.Config.Image}}' skfleet-tracking")
    assert tracking.stdout.strip() == f"{playbooks.registry}/skfleet/tracking:{NEXT_TAG}"
    assert playbooks.tracking().get("experiments/search?max_results=1")  # up, and admin still logs in
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


@pytest.mark.last
def test_teardown_leaves_no_skfleet_container(playbooks: Playbooks) -> None:
    playbooks.run("teardown.yml", "-e", "teardown_remove_images=true")
    for vm in ("vm1", "vm2", "vm3"):
        assert playbooks.containers(vm) == []
        images = playbooks.fleet.ssh(playbooks.fleet.vm(vm), "sudo docker images --format '{{.Repository}}:{{.Tag}}'")
        assert f"{playbooks.registry}/skfleet/runtime:{NEXT_TAG}" not in images.stdout.split()


def derive_image(source: str, target: str) -> None:
    """Tag a new image ID on top of SOURCE: a new version for upgrade.yml, in a second."""
    dockerfile = f"FROM {source}\nLABEL skfleet.test.upgrade={target}\n"
    docker_client().images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=target, rm=True, timeout=120)


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
