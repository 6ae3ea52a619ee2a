"""The VM stand-ins behave like fresh Debian VMs of their releases: Ansible reaches them over SSH.

They run on the session's one fleet (tests/fleet.py), checked here before any playbook touches it.
Their nested Docker engine is proved by site.yml itself, which installs it and runs the cluster
on it (tests/ansible/test_playbooks.py checks it stores on overlay2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet import VM_SUITES
from tests.vms import VmFleet

ANSIBLE = Path(sys.executable).parent / "ansible"
RELEASES = {"bookworm": "12", "trixie": "13"}

pytestmark = [pytest.mark.docker, pytest.mark.vms]


def test_each_vm_runs_its_debian_release(fleet: VmFleet) -> None:
    for vm in fleet.vms:
        release = fleet.ssh(vm, ". /etc/os-release && echo $VERSION_ID $VERSION_CODENAME").stdout.split()
        assert release == [RELEASES[VM_SUITES[vm.name]], VM_SUITES[vm.name]], (vm.name, release)
    assert len(set(VM_SUITES.values())) == 2  # one fleet, both releases users boot


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
