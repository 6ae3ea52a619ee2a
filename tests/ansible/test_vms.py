"""The VM stand-ins behave like fresh Debian VMs: Ansible reaches them, and a Docker engine runs inside.

Builds the VM image (scripts/build-vm-image.sh, skipped when current) and boots three VMs
once for the module; about 3 minutes cold on 2 cores, most of it the image and docker.io.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vms import VmFleet, destroy_leftovers, run_command

ROOT = Path(__file__).resolve().parents[2]
# Not the Ansible tests' prefix and subnet, so neither run clears or collides with the other.
PREFIX = "skfleet-vmsmoke"
SUBNET = "10.231.8.0/24"
ANSIBLE = Path(sys.executable).parent / "ansible"

pytestmark = [pytest.mark.docker, pytest.mark.vms]


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmFleet]:
    run_command([str(ROOT / "scripts" / "build-vm-image.sh")], timeout=900)
    destroy_leftovers(PREFIX)
    fleet = VmFleet(PREFIX, work_dir=tmp_path_factory.mktemp("vms"), names=("vm1", "vm2", "vm3"), subnet=SUBNET)
    failed_before = request.session.testsfailed
    try:
        started = time.monotonic()
        fleet.boot()
        print(f"\n{len(fleet.vms)} VMs booted and answering SSH in {time.monotonic() - started:.1f} s")
        yield fleet
    finally:
        if request.session.testsfailed > failed_before:
            for vm in fleet.vms:
                print(f"\n--- journal of {vm.name} ---\n{fleet.logs(vm)}")
        fleet.destroy()


def test_ansible_pings_every_vm_over_ssh(fleet: VmFleet, tmp_path: Path) -> None:
    inventory = fleet.write_inventory(tmp_path / "hosts.ini")
    # Run outside the repository so no ansible.cfg of the project changes what is tested here.
    result = subprocess.run(
        [str(ANSIBLE), "all", "-i", str(inventory), "-m", "ansible.builtin.ping", "--one-line"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answered = {line.split(" | ")[0] for line in result.stdout.splitlines() if " | SUCCESS " in line and "pong" in line}
    assert answered == {"vm1", "vm2", "vm3"}, result.stdout


def test_ops_has_passwordless_sudo(fleet: VmFleet) -> None:
    for vm in fleet.vms:
        assert fleet.ssh(vm, "sudo -n id -u").stdout.strip() == "0"


def test_each_vm_has_its_own_machine_id(fleet: VmFleet) -> None:
    machine_ids = [fleet.ssh(vm, "cat /etc/machine-id").stdout.strip() for vm in fleet.vms]
    assert all(len(machine_id) == 32 for machine_id in machine_ids), machine_ids
    assert len(set(machine_ids)) == len(fleet.vms), machine_ids


def test_each_vm_has_its_own_ssh_host_key(fleet: VmFleet) -> None:
    host_keys = [fleet.ssh(vm, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for vm in fleet.vms]
    assert len(set(host_keys)) == len(fleet.vms), host_keys


def test_vms_reach_each_other(fleet: VmFleet) -> None:
    for vm in fleet.vms:
        for other in fleet.vms:
            if other != vm:
                probe = fleet.ssh(vm, f"timeout 5 bash -c 'echo > /dev/tcp/{other.address}/22'", check=False)
                assert probe.returncode == 0, f"{vm.name} cannot reach {other.name} ({other.address}:22): {probe.stderr}"


def test_partitioned_vm_is_cut_off_until_healed(fleet: VmFleet) -> None:
    vm1, vm2 = fleet.vm("vm1"), fleet.vm("vm2")
    probe = f"timeout 3 bash -c 'echo > /dev/tcp/{vm2.address}/22'"
    fleet.partition(vm2)
    try:
        assert fleet.ssh(vm1, probe, check=False).returncode != 0
    finally:
        fleet.heal(vm2)
    assert fleet.ssh(vm1, probe, check=False).returncode == 0
    assert fleet.ssh(vm2, "hostname").stdout.strip() == "vm2"


def test_nested_docker_engine_runs_containers_on_overlay2(fleet: VmFleet) -> None:
    vm = fleet.vm("vm1")
    fleet.ssh(
        vm,
        "sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io",
        timeout=420,
    )
    # overlay2 needs /var/lib/docker on a volume: on the container's own filesystem it is vfs.
    assert fleet.ssh(vm, "sudo docker info --format '{{.Driver}}'").stdout.strip() == "overlay2"
    # dockerd starts even with read-only cgroups; its containers do not ("mkdir
    # /sys/fs/cgroup/cpuset/docker: read-only file system") without the image's PID-1 wrapper.
    # No registry: an image of the VM's own `true` and C library is enough to start one.
    fleet.ssh(
        vm,
        "sudo tar -C / -c lib lib64 usr/lib64 usr/bin/true usr/lib/x86_64-linux-gnu/libc.so.6"
        " usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 | sudo docker import - skfleet-probe:latest",
    )
    run = fleet.ssh(vm, "sudo docker run --rm skfleet-probe:latest /usr/bin/true && echo nested-ok", check=False, timeout=120)
    assert run.stdout.strip() == "nested-ok", run.stderr
