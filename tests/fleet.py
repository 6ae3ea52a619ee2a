"""The VM fleet the Ansible and ops tests share: three VM stand-ins, the playbooks run over SSH
against them, a TLS Dask cluster across them, a client on this machine.

A fleet being upgraded: vm1 runs Debian 12 and the scheduler (and the trainer, and MLflow's tracking
server), vm2 and vm3 run Debian 13 and the workers. vm1 and vm2 are our images as built; vm3 is made
like a minimal cloud image another pipeline baked (bake_like_a_pipeline). `fleet` boots the VMs once
for the session (tests/ansible/test_vms.py checks them, before any playbook), `playbooks` runs
site.yml on them once; the tests that take either run last, together, in file order (tests/ansible,
then tests/ops), and the one marked `last` (teardown.yml) after them (tests/conftest.py orders them).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
import pytest
from distributed import Client, Event
from distributed.security import Security
from docker.models.containers import Container

from skfleet.cluster import identity
from tests.mlflow_api import MlflowApi
from tests.stack import ROOT, Background
from tests.vms import FLEET_LABEL, LABEL_KEY, LABEL_VALUE, Vm, VmFleet, destroy_leftovers, docker_client, run_command

ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
PREFIX = "skfleet-ansible-test"
TAG = "e2e"
# The test registry's last address byte on the VMs' network (the VMs are .11 and up).
REGISTRY_HOST = 5
REGISTRY_IMAGE = "skfleet-test/registry:bookworm"
REGISTRY_PUSH_PORT = 5055
# A stand-in for a Prometheus server on the fleet's network: the dashboards are opened to it (Playbooks).
PROMETHEUS = f"{PREFIX}-prometheus"
# Every playbook run's output, for reading after a slow or red run (Playbooks.run).
PLAYBOOK_LOGS = ROOT / "build" / "playbooks"
# Each VM's Debian release (scripts/build-vm-image.sh --suite): the scheduler's host on 12, the workers' on 13.
VM_SUITES = {"vm1": "bookworm", "vm2": "trixie", "vm3": "trixie"}


@dataclass
class Playbooks:
    """The VM fleet, its inventory and a way to run the playbooks against it.

    site.yml's first run opens the dashboards to a Prometheus server (PROMETHEUS, a container on the
    fleet's network, address `prometheus_address`) and writes its scrape configuration to
    `prometheus_config`; tests/ansible/test_playbooks.py takes them back to the default in its third.
    """

    fleet: VmFleet
    inventory_dir: Path
    runs_dir: Path
    group_vars: dict[str, object]
    prometheus_address: str = ""
    prometheus_config: Path | None = None
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
                "tracking": ["vm1"],
            },
        )

    def run(self, playbook: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one playbook; give its output (failing the test, with that output, on a non-zero exit).

        Each run's whole output, with the time of every task (ansible.posix.profile_tasks), is kept in
        build/playbooks/, so a slow run says which tasks took the time.
        """
        command = [str(BIN / "ansible-playbook"), "-i", str(self.inventory_dir / "hosts.ini"), playbook, *extra]
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "15",
        }
        started = time.monotonic()
        result = subprocess.run(command, cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=1200)
        self.timings.setdefault(playbook, []).append(time.monotonic() - started)
        PLAYBOOK_LOGS.mkdir(parents=True, exist_ok=True)
        runs = sum(len(times) for times in self.timings.values())
        (PLAYBOOK_LOGS / f"{runs:02d}-{playbook.removesuffix('.yml')}.log").write_text(result.stdout + result.stderr)
        if check and result.returncode != 0:
            pytest.fail(f"{playbook} exited {result.returncode}\n{result.stdout[-20000:]}\n{result.stderr[-5000:]}")
        return result

    def tracking(self, base: str | None = None, user: str | None = "admin") -> MlflowApi:
        """Give MLflow's REST API on vm1 (or BASE) over HTTPS, trusting the cluster CA only, as USER (None: nobody).

        The password is the one the role made on this controller.
        """
        login = None
        if user is not None:
            login = (user, (self.inventory_dir / "tracking" / f"{user}.password").read_text().strip())
        base = base or f"https://{self.fleet.vm('vm1').address}:8789"
        return MlflowApi(base, user=login, cafile=self.inventory_dir / "tls" / "ca.pem")

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


def changed_tasks(output: str) -> list[str]:
    """Give each task that changed something, with its hosts: "TASK NAME: vm1, vm2"."""
    changed = []
    for task, body in re.findall(r"^TASK \[(.+?)\] \**\n(.*?)(?=^TASK \[|^PLAY |\Z)", output, flags=re.MULTILINE | re.DOTALL):
        hosts = re.findall(r"^changed: \[([^\]]+)\]", body, flags=re.MULTILINE)
        if hosts:
            changed.append(f"{task}: {', '.join(hosts)}")
    return changed


def worker_hosts(client: Client) -> dict[str, str]:
    """Give the worker addresses by their host's address."""
    return {info["host"]: address for address, info in identity(client)["workers"].items()}


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


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmFleet]:
    """The three VMs, booted and answering SSH, vm3 baked like a pipeline's image; removed at the end."""
    for suite in sorted(set(VM_SUITES.values())):
        run_command([str(ROOT / "scripts" / "build-vm-image.sh"), "--suite", suite], timeout=900)
    destroy_leftovers(PREFIX)
    images = {name: f"skfleet/vm:{suite}" for name, suite in VM_SUITES.items()}
    fleet = VmFleet(PREFIX, work_dir=tmp_path_factory.mktemp("vms"), names=tuple(VM_SUITES), images=images)
    try:
        started = time.monotonic()
        fleet.boot()
        bake_like_a_pipeline(fleet, fleet.vm("vm3"))
        print(f"\n{len(fleet.vms)} VMs booted and answering SSH in {time.monotonic() - started:.1f} s")
        yield fleet
    except BaseException:
        for vm in fleet.vms:
            print(f"\n===== journal of {vm.name} =====\n{fleet.logs(vm)}")
        raise
    finally:
        fleet.destroy()


@pytest.fixture(scope="session")
def playbooks(fleet: VmFleet, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Playbooks]:
    work = tmp_path_factory.mktemp("ansible")
    shutil.rmtree(PLAYBOOK_LOGS, ignore_errors=True)  # this session's runs only
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
    )
    cluster.write_inventory(["vm2", "vm3"])
    try:
        start_registry(cluster)
        cluster.prometheus_address = start_prometheus_stand_in(fleet)
        cluster.prometheus_config = work / "prometheus.yml"
        cluster.set_group_vars(
            skfleet_dashboard_sources=[cluster.prometheus_address], skfleet_prometheus_config=str(cluster.prometheus_config)
        )
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
        for helper in (f"{PREFIX}-registry", PROMETHEUS):
            with contextlib.suppress(docker.errors.NotFound):  # not started, when the fleet did not boot
                docker_client().containers.get(helper).remove(force=True)


# One search long enough to disturb mid-way (the silent-VM tests), and the session's one undisturbed run of it.
TRAIN_GRID = ("--synthetic-rows", "40000", "--param", "n_estimators=30,60", "--param", "max_depth=8,12")


@dataclass(frozen=True)
class VmTraining:
    """`ops.sh -i INVENTORY train` of TRAIN_GRID, once: what it printed and the run folder it fetched."""

    result: subprocess.CompletedProcess[str]
    run: Path


@pytest.fixture(scope="session")
def vm_training(playbooks: Playbooks, tmp_path_factory: pytest.TempPathFactory) -> VmTraining:
    """The session's one undisturbed training on the fleet, run the way operators run it (ops.sh, then train.yml's play).

    It serves the tests of train.yml and of `ops.sh train`, and gives the silent-VM tests the scores
    their disturbed runs must match: seeded fits give them on any cluster of these images.
    """
    fetched = tmp_path_factory.mktemp("vm-training")
    result = ops(playbooks, "train", "--fetch-dir", str(fetched), "--", *TRAIN_GRID)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = fetched.iterdir()
    return VmTraining(result=result, run=run)


def bake_like_a_pipeline(fleet: VmFleet, vm: Vm) -> None:
    """Make VM like a minimal cloud image a pipeline baked minutes ago, not like our own image.

    python3-apt installed (cloud images have it, so Ansible's apt module does not refresh the
    lists to install it), and the package lists emptied just now: their folder's age says fresh,
    their content has no package. An apt task that trusts `cache_valid_time` finds nothing to install.
    """
    bake = "apt-get install -y -qq --no-install-recommends python3-apt >/dev/null && rm -rf /var/lib/apt/lists/*"
    fleet.ssh(vm, f"sudo sh -c {shlex.quote(bake)} && sudo rm -f /var/lib/apt/periodic/update-success-stamp", timeout=300)


def ops_command(playbooks: Playbooks, *args: str) -> list[str]:
    """scripts/ops.sh -i INVENTORY ARGS."""
    return [str(ROOT / "scripts" / "ops.sh"), "-i", str(playbooks.inventory_dir / "hosts.ini"), *args]


def ops(playbooks: Playbooks, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run scripts/ops.sh -i INVENTORY ARGS, as an operator would from the repository root."""
    return subprocess.run(ops_command(playbooks, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def start_ops(playbooks: Playbooks, *args: str) -> Background:
    """Start `ops` without waiting for it; its output is read as it comes (`Background`)."""
    return Background(ops_command(playbooks, *args), cwd=ROOT)


def runbook_env(playbooks: Playbooks) -> dict[str, str]:
    """The environment docs/runbooks/ asks for: INVENTORY, the inventory's hosts file."""
    return {**os.environ, "INVENTORY": str(playbooks.inventory_dir / "hosts.ini"), "ANSIBLE_FORCE_COLOR": "0"}


def worker_started_at(playbooks: Playbooks, vm: str) -> str:
    command = "sudo docker inspect --format '{{.State.StartedAt}}' skfleet-worker"
    return playbooks.fleet.ssh(playbooks.fleet.vm(vm), command).stdout.strip()


def start_prometheus_stand_in(fleet: VmFleet) -> str:
    """Start a container on the fleet's network where a Prometheus server would be; give its address."""
    container = docker_client().containers.run(
        fleet.image,
        ["infinity"],
        entrypoint="sleep",
        name=PROMETHEUS,
        network=fleet.network,
        labels={LABEL_KEY: LABEL_VALUE, FLEET_LABEL: PREFIX},  # destroy_leftovers(PREFIX) clears it
        detach=True,
    )
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][fleet.network]["IPAddress"]


def prometheus_stand_in() -> Container:
    """Give the container of start_prometheus_stand_in."""
    return docker_client().containers.get(PROMETHEUS)


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
