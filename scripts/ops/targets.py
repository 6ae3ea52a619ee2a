"""Where the ops tasks act: the local Compose stack, or the hosts of an Ansible inventory (over SSH with Fabric).

Both give the same few verbs: run a Python script inside the scheduler container, run
`docker` on a host, name the worker containers and the hosts. The tasks in `tasks.py` are
written once against these verbs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from fabric import Connection

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "ansible" / "roles"
LOCAL_HOST = "localhost"


class OpsError(Exception):
    """A task cannot go on; the message says why (and what to do)."""


@dataclass(frozen=True)
class Done:
    """A finished command: its exit code and output."""

    code: int
    stdout: str
    stderr: str

    def check(self, what: str) -> Done:
        """Give self, or raise OpsError naming WHAT and the command's last error line."""
        if self.code != 0:
            detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
            raise OpsError(f"{what} failed (exit {self.code}): {detail[-1] if detail else 'no output'}")
        return self


@dataclass(frozen=True)
class WorkerContainer:
    """A worker's container: on which host, under which name, at which address."""

    host: str
    container: str
    address: str  # the address its Dask processes advertise (the host part of their Dask address)


class Local:
    """The Compose stack of this checkout (`docker compose` from the repository root, honouring .env)."""

    name = "the local Compose stack"

    def compose(self, *args: str, capture: bool = True, timeout: float = 600) -> Done:
        return _run(["docker", "compose", *args], capture=capture, timeout=timeout)

    def docker(self, host: str, *args: str, timeout: float = 120) -> Done:
        return _run(["docker", *args], timeout=timeout)

    @cached_property
    def project(self) -> str:
        config = self.compose("config", "--format", "json").check("docker compose config")
        return json.loads(config.stdout)["name"]

    def containers(self, service: str | None = None) -> list[dict[str, str]]:
        """Give the project's containers (running or not) as name, service, state, number and one-off flag."""
        labels = ["com.docker.compose.service", "com.docker.compose.container-number", "com.docker.compose.oneoff"]
        template = "\t".join(["{{.Names}}", "{{.State}}", *(f'{{{{.Label "{label}"}}}}' for label in labels)])
        # config-hash: set on the containers Compose creates, never on images. Images Compose built carry
        # its project and service labels, and hand them to any container started from them.
        project = [f"--filter=label=com.docker.compose.project={self.project}", "--filter=label=com.docker.compose.config-hash"]
        listing = self.docker(LOCAL_HOST, "ps", "--all", *project, "--format", template).check("docker ps")
        found = []
        for line in listing.stdout.splitlines():
            name, state, svc, number, oneoff = (line.split("\t") + [""] * 5)[:5]
            if service is None or svc == service:
                found.append({"name": name, "state": state, "service": svc, "number": number, "oneoff": oneoff})
        return found

    def scheduler_container(self) -> tuple[str, str]:
        running = [c["name"] for c in self.containers("scheduler") if c["state"] == "running"]
        if not running:
            raise OpsError(f"the scheduler container of project {self.project} is not running: docker compose up --detach")
        return LOCAL_HOST, running[0]

    def scheduler_python(self, script: str, *args: str, timeout: float = 120) -> Done:
        _, container = self.scheduler_container()
        return self.docker(LOCAL_HOST, "exec", container, "python", "-c", script, *args, timeout=timeout)

    def hosts(self) -> list[str]:
        return [LOCAL_HOST]

    def expected_workers(self) -> int:
        """Give the worker processes Compose runs: one per worker container (running or meant to)."""
        return len([c for c in self.containers("worker") if c["oneoff"] != "True"])

    def network_addresses(self) -> dict[str, str]:
        """Give each container on the project's networks by its IP address."""
        networks = self.docker(
            LOCAL_HOST, "network", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={self.project}"
        ).check("docker network ls")
        addresses = {}
        for network in networks.stdout.split():
            inspect = self.docker(LOCAL_HOST, "network", "inspect", "--format", "{{json .Containers}}", network)
            for entry in json.loads(inspect.check("docker network inspect").stdout or "{}").values():
                addresses[entry["IPv4Address"].split("/")[0]] = entry["Name"]
        return addresses

    def worker_container(self, name: str, workers: dict[str, Any]) -> WorkerContainer:
        """Give the worker container NAME (a container name, or a worker number of the Compose service)."""
        if name.isdigit():
            numbered = [c["name"] for c in self.containers("worker") if c["number"] == name and c["oneoff"] != "True"]
            if not numbered:
                raise OpsError(f"no worker container number {name} in project {self.project}")
            name = numbered[0]
        by_name = {container: address for address, container in self.network_addresses().items()}
        if name not in by_name:
            known = sorted(self.worker_names(workers).values())
            raise OpsError(f"no container {name!r} on the stack's network; workers: {', '.join(known) or 'none'}")
        # The address its workers advertise, which may not be the container's (a bad --contact-address).
        hosts = {worker["host"] for worker in workers.values() if by_name[name] in (worker["host"], _host(worker.get("nanny")))}
        return WorkerContainer(LOCAL_HOST, name, hosts.pop() if hosts else by_name[name])

    def worker_names(self, workers: dict[str, Any]) -> dict[str, str]:
        """Give a readable name for each worker address: its container."""
        addresses = self.network_addresses()
        return {
            address: addresses.get(worker["host"]) or addresses.get(_host(worker.get("nanny"))) or worker["name"]
            for address, worker in workers.items()
        }

    def log_containers(self, host: str) -> list[str]:
        return [c["name"] for c in self.containers()]


@dataclass
class Fleet:
    """The hosts of an Ansible inventory, read with `ansible-inventory --list`, reached with Fabric."""

    inventory: Path
    connections: dict[str, Connection] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"the hosts of {self.inventory}"

    @cached_property
    def listing(self) -> dict[str, Any]:
        command = [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(self.inventory), "--list"]
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}
        done = _run(command, timeout=120, env=env).check(f"ansible-inventory -i {self.inventory}")
        return json.loads(done.stdout)

    def group(self, name: str) -> list[str]:
        """Give the hosts of group NAME and of its children, in inventory order."""
        entry = self.listing.get(name, {})
        hosts = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            hosts += [host for host in self.group(child) if host not in hosts]
        return hosts

    def var(self, host: str, name: str) -> Any:
        """Give a variable as the roles would see it: the inventory's value, else the role default.

        Defaults that refer to other variables (`{{ skfleet_data_dir }}/runs`) are resolved;
        ones that need a host's facts cannot be, and must then be set in the inventory.
        """
        hostvars = self.listing.get("_meta", {}).get("hostvars", {}).get(host, {})
        value = hostvars.get(name, _role_defaults().get(name))
        if value is None:
            raise OpsError(f"{name} is neither set in {self.inventory} nor a role default")
        for _ in range(10):
            if not isinstance(value, str) or "{{" not in value:
                return value
            value = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda match: str(self.var(host, match.group(1))), value)
            if "{{" in value:
                raise OpsError(f"{name} depends on facts ({value}); set it for {host} in {self.inventory}")
        return value

    def connection(self, host: str) -> Connection:
        if host not in self.connections:
            hostvars = self.listing.get("_meta", {}).get("hostvars", {}).get(host, {})
            key = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
            self.connections[host] = Connection(
                hostvars.get("ansible_host", host),
                user=hostvars.get("ansible_user"),
                port=int(hostvars.get("ansible_port", 22)),
                connect_timeout=15,
                connect_kwargs={"key_filename": [key]} if key else {},
            )
        return self.connections[host]

    def sudo(self, host: str) -> str:
        user = self.connection(host).user
        return "" if user == "root" else "sudo -n "

    def shell(self, host: str, command: str, timeout: float = 120, hide: bool = True, pty: bool = False) -> Done:
        """Run a shell command on HOST as its SSH user."""
        try:
            result = self.connection(host).run(command, hide=hide, warn=True, timeout=timeout, pty=pty, in_stream=False)
        except Exception as error:  # paramiko and socket errors have no common base worth naming
            raise OpsError(f"cannot run a command on {host} over SSH: {error}") from None
        return Done(result.exited, result.stdout, result.stderr)

    def docker(self, host: str, *args: str, timeout: float = 120) -> Done:
        return self.shell(host, self.sudo(host) + shlex.join(["docker", *args]), timeout=timeout)

    def scheduler_host(self) -> str:
        hosts = self.group("dask_scheduler")
        if not hosts:
            raise OpsError(f"group dask_scheduler of {self.inventory} has no host")
        return hosts[0]

    def scheduler_container(self) -> tuple[str, str]:
        host = self.scheduler_host()
        return host, self.var(host, "skfleet_scheduler_container")

    def scheduler_python(self, script: str, *args: str, timeout: float = 120) -> Done:
        host, container = self.scheduler_container()
        return self.docker(host, "exec", container, "python", "-c", script, *args, timeout=timeout)

    def hosts(self) -> list[str]:
        ordered: list[str] = []
        for group in ("dask_scheduler", "trainer", "dask_workers", "dask_workers_retired"):
            ordered += [host for host in self.group(group) if host not in ordered]
        return ordered

    def expected_workers(self) -> int:
        return sum(int(self.var(host, "dask_worker_nworkers")) for host in self.group("dask_workers"))

    def worker_container(self, name: str, workers: dict[str, Any]) -> WorkerContainer:
        """Give the worker container of inventory host NAME, with the address its workers advertise."""
        if name not in self.hosts():
            raise OpsError(f"no host {name!r} in {self.inventory}; worker hosts: {', '.join(self.group('dask_workers'))}")
        names = self.worker_names(workers)
        addresses = {workers[address]["host"] for address, host in names.items() if host == name}
        if not addresses:
            raise OpsError(f"the scheduler lists no worker of {name}: it is already gone (scripts/ops.sh status)")
        return WorkerContainer(name, self.var(name, "dask_worker_container_name"), addresses.pop())

    def worker_names(self, workers: dict[str, Any]) -> dict[str, str]:
        """Give each worker address its inventory host: Dask names workers after it (`host` or `host-0`, `host-1`)."""
        hosts = set(self.hosts())
        names = {}
        for address, worker in workers.items():
            name = worker["name"]
            base = name.rsplit("-", 1)[0] if name not in hosts and name.rsplit("-", 1)[-1].isdigit() else name
            names[address] = base if base in hosts else name
        return names

    def log_containers(self, host: str) -> list[str]:
        listing = self.docker(host, "ps", "--all", "--filter", "name=^skfleet-", "--format", "{{.Names}}")
        return listing.check(f"docker ps on {host}").stdout.split()

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


def _run(command: list[str], capture: bool = True, timeout: float = 120, env: dict[str, str] | None = None) -> Done:
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=capture, text=True, timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        raise OpsError(f"{command[0]} is not installed (scripts/install-docker.sh, scripts/dev-env.sh)") from None
    except subprocess.TimeoutExpired:
        raise OpsError(f"`{shlex.join(command[:4])} ...` did not finish within {timeout:.0f} s") from None
    return Done(result.returncode, result.stdout or "", result.stderr or "")


def _host(address: str | None) -> str | None:
    """Give the host part of a Dask address (tcp://10.0.0.5:8790 -> 10.0.0.5)."""
    return urlsplit(address).hostname if address else None


_DEFAULTS: dict[str, Any] = {}


def _role_defaults() -> dict[str, Any]:
    """Give every role's defaults (ansible/roles/*/defaults/main.yml), the one place they are written."""
    if not _DEFAULTS:
        for path in sorted(ROLES.glob("*/defaults/main.yml")):
            _DEFAULTS.update(yaml.safe_load(path.read_text()) or {})
    return _DEFAULTS
