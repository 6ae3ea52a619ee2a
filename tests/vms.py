"""Containers that stand in for Debian VMs: a small fleet on one machine, reached over real SSH.

Each VM is a container of the image scripts/build-vm-image.sh makes (systemd as PID 1,
sshd, sudo user `ops`), with a fixed address on a bridge network of its own, run the way
that was found to work on Docker 20.10 with cgroup v1: not
privileged, every capability but three, no seccomp filter, a private cgroup namespace,
and /var/lib/docker on a volume so a nested engine gets overlay2. A fleet may mix Debian
releases (`images`, one per VM): Debian 13's systemd boots on this cgroup v1 host because the
image's PID 1 wrapper asks it to (scripts/build-vm-image.sh). Its Docker 26 can't start a
container on a bridge network in here (it sets IPv6 sysctls, and /proc/sys is the host's,
read-only): skfleet's containers use the host's network, as on a real VM.

Everything created carries the label `skfleet.test=vms` (and the fleet's prefix), so
`destroy_leftovers(prefix)` can clear what a killed test run left behind.

The tests drive the Docker engine through the Docker SDK; `docker_client()` is the one client.
"""

from __future__ import annotations

import functools
import ipaddress
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool

DEFAULT_IMAGE = "skfleet/vm:bookworm"
DEFAULT_SUBNET = "10.231.7.0/24"
LABEL_KEY, LABEL_VALUE = "skfleet.test", "vms"
LABEL = f"{LABEL_KEY}={LABEL_VALUE}"
FLEET_LABEL = "skfleet.test.fleet"  # its value: the fleet's name prefix
USER = "ops"
# The first VM gets the subnet's 11th address: room below for the gateway and helpers.
FIRST_HOST_OFFSET = 11
# Each Docker API call (removing a VM with its nested engine's volume included); a command in a VM has its own.
DOCKER_TIMEOUT_S = 120
BOOT_TIMEOUT_S = 180.0
POLL_INTERVAL_S = 0.5
SSH_OPTIONS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
)
# What a VM container may do: everything a VM's root may, except change the host's
# resources limits, clock or kernel modules. `privileged` fails on this kind of host
# (CAP_SYS_RESOURCE is outside the bounding set, and 20.10 ignores cap_drop with it).
VM_SECURITY: dict[str, object] = {
    "cgroupns": "private",
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE", "SYS_TIME", "SYS_MODULE"],
    # Nested containers need it ("unable to join session keyring" otherwise).
    "security_opt": ["seccomp=unconfined"],
}


class VmFleetError(RuntimeError):
    """The fleet could not be created, booted, reached or removed."""


class CommandError(VmFleetError):
    """A command failed or timed out; the message holds its stderr."""

    def __init__(self, command: Sequence[str], detail: str) -> None:
        super().__init__(f"`{' '.join(command)}` {detail}")
        self.command = list(command)


def run_command(command: Sequence[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Give the finished command; raise CommandError with its stderr when it fails or runs past timeout."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise CommandError(command, f"timed out after {timeout:.0f} s: {error.stderr or ''}") from None
    if check and result.returncode != 0:
        raise CommandError(command, f"exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return result


@functools.cache
def docker_client() -> docker.DockerClient:
    """Give the tests' client of the Docker engine (DOCKER_HOST and the like honoured), made on first use."""
    return docker.from_env(timeout=DOCKER_TIMEOUT_S)


def execute(container: Container, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Give the result of COMMAND run in CONTAINER, ended by `timeout` in there after TIMEOUT seconds (exit 124).

    exec_run waits for the output with no limit of its own; the container's coreutils set one.
    """
    exit_code, (stdout, stderr) = container.exec_run(["timeout", f"{timeout:.0f}", *command], demux=True)
    return subprocess.CompletedProcess(list(command), exit_code, (stdout or b"").decode(), (stderr or b"").decode())


@dataclass(frozen=True)
class Vm:
    """One VM of the fleet: its name (also its hostname), address, container and image (its Debian release)."""

    name: str
    address: str
    container: str
    image: str


class VmFleet:
    """A few VM containers on a bridge network of their own, reachable as ops@address with one SSH key."""

    def __init__(
        self,
        prefix: str,
        *,
        work_dir: Path,
        names: Sequence[str] = ("vm1", "vm2", "vm3"),
        image: str = DEFAULT_IMAGE,
        images: Mapping[str, str] | None = None,
        subnet: str = DEFAULT_SUBNET,
        boot_timeout_s: float = BOOT_TIMEOUT_S,
    ) -> None:
        network = ipaddress.ip_network(subnet)
        if len(names) != len(set(names)) or not names:
            raise VmFleetError(f"VM names must be distinct and at least one: {list(names)}")
        if FIRST_HOST_OFFSET + len(names) >= network.num_addresses:
            raise VmFleetError(f"subnet {subnet} is too small for {len(names)} VMs")
        self.prefix = prefix
        self.network = prefix
        self.subnet = str(network)
        self.gateway = str(network.network_address + 1)
        self.image = image
        self.work_dir = Path(work_dir)
        self.boot_timeout_s = boot_timeout_s
        self.user = USER
        # IMAGES gives some VMs another image than IMAGE: a fleet of two Debian releases.
        unknown = set(images or {}) - set(names)
        if unknown:
            raise VmFleetError(f"images given for VMs the fleet does not have: {sorted(unknown)}")
        self.vms = [
            Vm(
                name=name,
                address=str(network.network_address + FIRST_HOST_OFFSET + index),
                container=f"{prefix}-{name}",
                image=(images or {}).get(name, image),
            )
            for index, name in enumerate(names)
        ]

    @property
    def private_key(self) -> Path:
        """Give the path of the SSH key every VM's `ops` accepts."""
        return self.work_dir / "id_ed25519"

    def vm(self, name: str) -> Vm:
        """Give the VM of that name."""
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)

    def boot(self) -> None:
        """Create the network, key, volumes and containers, then wait until every VM runs and answers SSH."""
        self._check_nothing_in_the_way()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._make_key()
        engine = docker_client()
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=self.subnet, gateway=self.gateway)])
        engine.networks.create(self.network, driver="bridge", ipam=ipam, labels=self._labels())
        for vm in self.vms:
            engine.volumes.create(self._volume(vm), labels=self._labels())
            self._start(vm)
        deadline = time.monotonic() + self.boot_timeout_s
        for vm in self.vms:
            self._wait_for_systemd(vm, deadline)
        for vm in self.vms:
            self._wait_for_ssh(vm, deadline)

    def ssh_command(self, vm: Vm, command: str) -> list[str]:
        """Give the argv that runs a shell command on the VM as `ops` over SSH."""
        return ["ssh", "-i", str(self.private_key), *SSH_OPTIONS, f"{self.user}@{vm.address}", command]

    def ssh(self, vm: Vm, command: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Give the result of a shell command run on the VM as `ops` over SSH."""
        return run_command(self.ssh_command(vm, command), timeout=timeout, check=check)

    def write_inventory(self, path: Path, groups: Mapping[str, Sequence[str]] | None = None) -> Path:
        """Give an Ansible INI inventory of the VMs (in `groups`, by VM name; default one group `vms`)."""
        groups = groups or {"vms": [vm.name for vm in self.vms]}
        lines = []
        for group, members in groups.items():
            lines.append(f"[{group}]")
            lines += [f"{name} ansible_host={self.vm(name).address}" for name in members]
            lines.append("")
        ssh_arguments = " ".join(SSH_OPTIONS[:4])  # host key checking off: every fleet has new keys
        lines += [
            "[all:vars]",
            f"ansible_user={self.user}",
            f"ansible_ssh_private_key_file={self.private_key}",
            "ansible_python_interpreter=/usr/bin/python3",
            f"ansible_ssh_common_args='{ssh_arguments}'",
            "",
        ]
        path.write_text("\n".join(lines))
        return path

    def partition(self, vm: Vm) -> None:
        """Cut the VM off the network (the container keeps running)."""
        if self._connected(vm):
            docker_client().networks.get(self.network).disconnect(vm.container)

    def heal(self, vm: Vm) -> None:
        """Put a partitioned VM back on the network, at its own address."""
        if not self._connected(vm):
            docker_client().networks.get(self.network).connect(vm.container, ipv4_address=vm.address)

    def logs(self, vm: Vm, lines: int = 200) -> str:
        """Give the tail of the VM's journal, or of its console when the journal cannot be read."""
        try:
            container = docker_client().containers.get(vm.container)
        except docker.errors.NotFound:
            return f"(no container {vm.container})"
        try:
            journal = execute(container, "journalctl", "--boot", "--no-pager", "-n", str(lines))
        except docker.errors.APIError as error:  # not running: no journal to ask
            why = error.explanation
        else:
            if journal.returncode == 0:
                return journal.stdout
            why = journal.stderr.strip()
        console = container.logs(tail=lines).decode(errors="replace")  # tty: stdout and stderr as one
        return f"(no journal: {why})\n{console}"

    def destroy(self) -> None:
        """Remove the containers, volumes and network; safe on a fleet partly booted or already destroyed."""
        remove_resources(
            containers=[vm.container for vm in self.vms],
            volumes=[self._volume(vm) for vm in self.vms],
            networks=[self.network],
        )

    def _labels(self) -> dict[str, str]:
        return {LABEL_KEY: LABEL_VALUE, FLEET_LABEL: self.prefix}

    def _volume(self, vm: Vm) -> str:
        return f"{vm.container}-docker"

    def _start(self, vm: Vm) -> None:
        """Start the VM's container (its network, volume and key made already)."""
        engine = docker_client()
        engine.containers.run(
            vm.image,
            detach=True,
            tty=True,  # systemd wants a console
            name=vm.container,
            hostname=vm.name,
            labels=self._labels(),
            network=self.network,
            networking_config={self.network: engine.api.create_endpoint_config(ipv4_address=vm.address)},
            **VM_SECURITY,
            tmpfs={"/run": "", "/run/lock": ""},
            volumes={
                self._volume(vm): {"bind": "/var/lib/docker", "mode": "rw"},
                str(self.work_dir / "authorized_keys"): {"bind": f"/home/{self.user}/.ssh/authorized_keys", "mode": "ro"},
            },
            # Lets ansible.builtin.reboot (and a crash) bring the VM back, as a VM would.
            restart_policy={"Name": "unless-stopped"},
        )

    def _check_nothing_in_the_way(self) -> None:
        if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
            raise VmFleetError("the VMs are reached over SSH: install openssh-client (ssh, ssh-keygen)")
        engine = docker_client()
        for image in sorted({vm.image for vm in self.vms}):
            try:
                engine.images.get(image)
            except docker.errors.ImageNotFound:
                suite = image.rsplit(":", 1)[-1]
                raise VmFleetError(f"no image {image}: build it with scripts/build-vm-image.sh --suite {suite}") from None
        if engine.containers.list(all=True, filters={"label": f"{FLEET_LABEL}={self.prefix}"}, sparse=True):
            raise VmFleetError(
                f"containers of an earlier fleet {self.prefix!r} still exist: "
                f"call tests.vms.destroy_leftovers({self.prefix!r}) or remove them with docker rm -f"
            )
        wanted = ipaddress.ip_network(self.subnet)
        for name, subnet in network_subnets().items():
            if ipaddress.ip_network(subnet).overlaps(wanted):
                raise VmFleetError(
                    f"subnet {self.subnet} is already used by Docker network {name!r} ({subnet}): "
                    f"pass another subnet to VmFleet, or remove that network"
                )

    def _make_key(self) -> None:
        for path in (self.private_key, self.private_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        run_command(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.prefix}-test", "-f", str(self.private_key)],
            timeout=30,
        )
        authorized_keys = self.work_dir / "authorized_keys"
        authorized_keys.write_text(self.private_key.with_suffix(".pub").read_text())
        # sshd reads it as ops through the bind mount: world-readable, writable by its owner only.
        authorized_keys.chmod(0o644)

    def _wait_for_systemd(self, vm: Vm, deadline: float) -> None:
        state = "not started"
        while time.monotonic() < deadline:
            try:
                container = docker_client().containers.get(vm.container)
            except docker.errors.NotFound:
                container = None
            if container is None or not container.attrs["State"]["Running"]:
                raise VmFleetError(f"VM {vm.name} stopped while booting:\n{self.logs(vm)}")
            try:
                result = execute(container, "systemctl", "is-system-running", timeout=15)
            except docker.errors.APIError as error:  # stopped since it was inspected: the next look says so
                state = error.explanation
                time.sleep(POLL_INTERVAL_S)
                continue
            if result.returncode == 124:  # a booting systemd may not answer yet: ask again
                state = "no answer within 15 s"
                continue
            state = result.stdout.strip() or result.stderr.strip()
            if state == "running":
                return
            if state == "degraded":
                failed = execute(container, "systemctl", "--failed", "--no-legend", "--plain")
                print(f"VM {vm.name} booted degraded; failed units:\n{failed.stdout}", file=sys.stderr)
                return
            time.sleep(POLL_INTERVAL_S)
        raise VmFleetError(f"VM {vm.name} not booted after {self.boot_timeout_s:.0f} s (systemd: {state!r}):\n{self.logs(vm)}")

    def _wait_for_ssh(self, vm: Vm, deadline: float) -> None:
        answer = ""
        while time.monotonic() < deadline:
            try:
                result = self.ssh(vm, "true", timeout=15, check=False)
            except CommandError as error:
                answer = str(error)
                continue
            if result.returncode == 0:
                return
            answer = result.stderr.strip()
            time.sleep(POLL_INTERVAL_S)
        raise VmFleetError(
            f"VM {vm.name} ({vm.address}) does not answer SSH as {self.user} after {self.boot_timeout_s:.0f} s "
            f"(last answer: {answer!r}):\n{self.logs(vm)}"
        )

    def _connected(self, vm: Vm) -> bool:
        networks = docker_client().containers.get(vm.container).attrs["NetworkSettings"]["Networks"]
        return self.network in networks


def network_subnets() -> dict[str, str]:
    """Give each Docker network's name and subnet (the first, for networks with several)."""
    subnets = {}
    for network in docker_client().networks.list():  # the listing holds each network's IPAM
        pools = (network.attrs.get("IPAM") or {}).get("Config") or []
        if pools and pools[0].get("Subnet"):
            subnets[network.name] = pools[0]["Subnet"]
    return subnets


def remove_resources(containers: Sequence[str], volumes: Sequence[str], networks: Sequence[str]) -> None:
    """Remove containers (running or not), then volumes, then networks; those already gone are skipped."""
    engine = docker_client()
    removals = (
        ("container", containers, lambda name: engine.api.remove_container(name, force=True, v=True)),
        ("volume", volumes, lambda name: engine.api.remove_volume(name, force=True)),
        ("network", networks, engine.api.remove_network),
    )
    for kind, names, remove in removals:
        for name in names:
            try:
                remove(name)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as error:
                raise VmFleetError(f"cannot remove {kind} {name}: {error.explanation}") from None


def destroy_leftovers(prefix: str) -> None:
    """Remove every container, volume and network an earlier fleet of this prefix left behind."""
    engine = docker_client()
    selector = {"label": [f"{FLEET_LABEL}={prefix}", LABEL]}
    remove_resources(
        containers=[container.id for container in engine.containers.list(all=True, filters=selector, sparse=True)],
        volumes=[volume.name for volume in engine.volumes.list(filters=selector)],
        networks=[network.id for network in engine.networks.list(filters=selector)],
    )


if __name__ == "__main__":  # `python -m tests.vms PREFIX`: clear a killed run's leftovers
    destroy_leftovers(sys.argv[1] if len(sys.argv) > 1 else "skfleet-vmtest")
