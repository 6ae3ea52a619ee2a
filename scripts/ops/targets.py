"""Where the ops tasks act: the local Compose stack, or the hosts of an Ansible inventory (over SSH with Fabric).

Both give the same verbs (the `Target` protocol): run a Python script inside the scheduler
container; list, inspect, stop, start and remove a host's containers and read their logs;
name the worker containers and the hosts. Local does it through the Docker SDK, Fleet with
the `docker` CLI on each host over SSH. The tasks in `tasks.py` are written once against
these verbs.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import docker.errors
import requests
import yaml
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from docker.models.containers import Container
from fabric import Connection
from invoke.exceptions import ThreadException

from skfleet.interrupts import Interrupts


def project_root() -> Path:
    """Give the skfleet checkout the tasks act on: its compose.yaml, ansible/ and docs are theirs.

    SKFLEET_ROOT when set; else the checkout this package is installed from (pip install -e,
    scripts/ops.sh); else the nearest folder at or above the working directory that holds one.
    """
    if os.environ.get("SKFLEET_ROOT"):
        return Path(os.environ["SKFLEET_ROOT"]).resolve()
    source = Path(__file__).resolve().parents[2]  # scripts/ops/ of a checkout
    working = Path.cwd().resolve()
    for folder in (source, working, *working.parents):
        if (folder / "compose.yaml").is_file() and (folder / "ansible" / "site.yml").is_file():
            return folder
    return working


ROOT = project_root()
ROLES = ROOT / "ansible" / "roles"
LOCAL_HOST = "localhost"
# Each call to the local Docker engine's API; a command run in a container has a limit of its own.
ENGINE_TIMEOUT_S = 120
# The log bundle's listing of a host's skfleet containers: `docker ps --format` on a VM, the same columns locally.
LISTING_FORMAT = "{{.Names}}\t{{.Status}}\t{{.Image}}"
# How long `train` keeps following the job's log once the playbook has ended.
LOG_GRACE_S = 30
# How long an interrupted `train` gives the job to stop (SIGTERM) before Docker kills it.
STOP_GRACE_S = 30
# How long an interrupted `train` waits for ansible-playbook to end (SIGTERM) before stopping the job anyway.
PLAY_STOP_S = 30
# What a forwarded connection raises when its client goes away mid-way: that connection's end, not the tunnel's.
CLIENT_DROPPED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

Result = TypeVar("Result")


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
class Dashboard:
    """The scheduler's dashboard as this machine reaches it."""

    url: str
    route: str  # how: published by the local stack, or through which SSH host
    held: bool  # True: an SSH tunnel, open only while the task runs


@dataclass(frozen=True)
class WorkerContainer:
    """A worker's container: on which host, under which name, at which address."""

    host: str
    container: str
    address: str  # the address its Dask processes advertise (the host part of their Dask address)


class Target(Protocol):
    """The verbs every task is written against; Local and Fleet each implement them."""

    @property
    def name(self) -> str: ...

    def scheduler_container(self) -> tuple[str, str]:
        """Give the scheduler container's host and name; raise OpsError when it is not running."""
        ...

    def close(self) -> None:
        """Release what the target holds open (SSH connections), once the task is done."""
        ...

    def scheduler_python(self, script: str, *args: str, timeout: float = 120) -> Done:
        """Give the exit code and output of `python -c SCRIPT ARGS` run in the scheduler container."""
        ...

    def hosts(self) -> list[str]: ...

    def expected_workers(self) -> int: ...

    def worker_container(self, name: str, workers: dict[str, Any]) -> WorkerContainer: ...

    def worker_names(self, workers: dict[str, Any]) -> dict[str, str]: ...

    def missing_workers(self, workers: dict[str, Any]) -> list[str]:
        """Name each worker container (VMs: host) whose workers have not all joined, why if known, and what to run."""
        ...

    def log_containers(self, host: str) -> list[str]:
        """Give the containers of HOST whose logs the log bundle holds."""
        ...

    def container_listing(self, host: str) -> str:
        """Give a line per skfleet container of HOST: name, status, image (tab-separated)."""
        ...

    def container_log(self, host: str, container: str) -> str:
        """Give a container's whole log, each line timestamped by Docker (why not, when it cannot be read)."""
        ...

    def is_running(self, host: str, container: str) -> bool: ...

    def restart_policy(self, host: str, container: str) -> str:
        """Give the name of a container's restart policy ("" when none was set)."""
        ...

    def set_restart_policy(self, host: str, container: str, policy: str) -> None: ...

    def stop(self, host: str, container: str) -> None: ...

    def start(self, host: str, container: str) -> None: ...

    def remove(self, host: str, container: str) -> None:
        """Remove a stopped container."""
        ...

    def retired_hint(self, host: str) -> str:
        """Say how a retired worker of HOST comes back (or stays out)."""
        ...

    def worker_replicas(self, running: bool = False) -> list[str]:
        """Give the worker containers in their order (the Compose service's replicas); OpsError where none scale."""
        ...

    def run_workers(self, n_workers: int) -> None:
        """Start worker containers up to N_WORKERS (the ones running are kept)."""
        ...

    def dashboard(self, state: dict[str, Any], local_port: int) -> AbstractContextManager[Dashboard]:
        """Open the way from 127.0.0.1 to the dashboard of the scheduler STATE describes, for the `with` block."""
        ...

    def tracking(self, local_port: int | None) -> AbstractContextManager[Dashboard | None]:
        """Open the way from 127.0.0.1 (LOCAL_PORT, else the server's own) to the MLflow tracking server's UI; None: none runs."""
        ...

    def train(self, args: list[str], fetch_dir: Path | None) -> int:
        """Run the trainer with ARGS against the cluster, streaming its progress; give its exit code."""
        ...


def scale_refused() -> OpsError:
    return OpsError("scale works on the local stack; across VMs, edit the inventory and run scale.yml")


class Local:
    """The Compose stack of this checkout: `docker compose` from the repository root (honouring .env), the Docker SDK."""

    name = "the local Compose stack"

    def close(self) -> None:
        """Nothing to release: each call to the engine stands alone."""

    def compose(self, *args: str, capture: bool = True, timeout: float = 600) -> Done:
        # The SDK has no Compose: the CLI plugin it is.
        return _run(["docker", "compose", *args], capture=capture, timeout=timeout)

    @cached_property
    def engine(self) -> docker.DockerClient:
        """Give the client of the local Docker engine (DOCKER_HOST and the like honoured), made once."""
        try:
            return docker.from_env(timeout=ENGINE_TIMEOUT_S)
        except docker.errors.DockerException as error:
            raise OpsError(f"cannot reach the Docker engine: {error} (is it running? scripts/install-docker.sh)") from None

    @cached_property
    def project(self) -> str:
        config = self.compose("config", "--format", "json").check("docker compose config")
        return json.loads(config.stdout)["name"]

    def containers(self, service: str | None = None) -> list[dict[str, str]]:
        """Give the project's containers (running or not) as name, service, state, number and one-off flag."""
        # config-hash: set on the containers Compose creates, never on images. Images Compose built carry
        # its project and service labels, and hand them to any container started from them.
        project = {"label": [f"com.docker.compose.project={self.project}", "com.docker.compose.config-hash"]}
        # sparse: the listing's own fields (labels, state), without inspecting each container.
        listing = self._call("docker ps", lambda: self.engine.containers.list(all=True, filters=project, sparse=True))
        found = []
        for container in listing:
            labels = container.attrs.get("Labels") or {}
            entry = {
                "name": _listed_name(container),
                "state": container.attrs.get("State", ""),
                "service": labels.get("com.docker.compose.service", ""),
                "number": labels.get("com.docker.compose.container-number", ""),
                "oneoff": labels.get("com.docker.compose.oneoff", ""),
            }
            if service is None or entry["service"] == service:
                found.append(entry)
        return found

    def scheduler_container(self) -> tuple[str, str]:
        running = [c["name"] for c in self.containers("scheduler") if c["state"] == "running"]
        if not running:
            raise OpsError(f"the scheduler container of project {self.project} is not running: docker compose up --detach")
        return LOCAL_HOST, running[0]

    def scheduler_python(self, script: str, *args: str, timeout: float = 120) -> Done:
        _, name = self.scheduler_container()
        return self._execute(self._container(name), ["python", "-c", script, *args], timeout=timeout)

    def hosts(self) -> list[str]:
        return [LOCAL_HOST]

    def expected_workers(self) -> int:
        """Give the worker processes Compose runs: one per worker container (running or meant to)."""
        return len([c for c in self.containers("worker") if c["oneoff"] != "True"])

    def network_addresses(self) -> dict[str, str]:
        """Give each container on the project's networks by its IP address."""
        project = {"label": f"com.docker.compose.project={self.project}"}
        # greedy: each network inspected, for its containers (the listing leaves them out).
        networks = self._call("docker network inspect", lambda: self.engine.networks.list(filters=project, greedy=True))
        addresses = {}
        for network in networks:
            for entry in (network.attrs.get("Containers") or {}).values():
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

    def missing_workers(self, workers: dict[str, Any]) -> list[str]:
        joined = set(self.worker_names(workers).values())
        missing = []
        for container in self.containers("worker"):
            if container["oneoff"] == "True" or container["name"] in joined:
                continue
            name = container["name"]
            if container["state"] == "running":
                missing.append(f"{name} runs but no worker of it joined: its log says why (docker logs {name})")
            elif container["state"] == "paused":
                missing.append(f"{name} is paused (frozen by docker pause): docker unpause {name}")
            else:
                missing.append(f"{name} is {container['state']}: docker compose up --detach worker (its log: docker logs {name})")
        return missing

    def log_containers(self, host: str) -> list[str]:
        return [c["name"] for c in self.containers()]

    def container_listing(self, host: str) -> str:
        skfleet = {"name": "^skfleet"}
        listing = self._call("docker ps", lambda: self.engine.containers.list(all=True, filters=skfleet, sparse=True))
        return "".join(f"{_listed_name(c)}\t{c.attrs.get('Status', '')}\t{c.attrs.get('Image', '')}\n" for c in listing)

    def container_log(self, host: str, container: str) -> str:
        try:
            found = self._container(container)
            # One stream, stdout and stderr as they came, timestamped as on the VMs (where the two come apart).
            log = self._call(f"docker logs {container}", lambda: found.logs(timestamps=True))
        except OpsError as error:  # gone since it was listed: say so in its place, as `docker logs` would
            return f"{error}\n"
        return log.decode(errors="replace")

    def is_running(self, host: str, container: str) -> bool:
        return bool(self._container(container).attrs["State"]["Running"])

    def restart_policy(self, host: str, container: str) -> str:
        return self._container(container).attrs["HostConfig"]["RestartPolicy"]["Name"]

    def set_restart_policy(self, host: str, container: str, policy: str) -> None:
        found = self._container(container)
        self._call(f"docker update --restart={policy} {container}", lambda: found.update(restart_policy={"Name": policy}))

    def stop(self, host: str, container: str) -> None:
        found = self._container(container)
        # No timeout given: the container's own stop grace period, as `docker stop` (the SDK waits 10 s more than that).
        self._call(f"docker stop {container}", found.stop)

    def start(self, host: str, container: str) -> None:
        found = self._container(container)
        self._call(f"docker start {container}", found.start)

    def remove(self, host: str, container: str) -> None:
        found = self._container(container)
        self._call(f"docker rm {container}", found.remove)

    def retired_hint(self, host: str) -> str:
        return "scripts/ops.sh scale N (or docker compose up) starts workers again"

    def worker_replicas(self, running: bool = False) -> list[str]:
        replicas = [c for c in self.containers("worker") if c["oneoff"] != "True" and (not running or c["state"] == "running")]
        return [c["name"] for c in sorted(replicas, key=lambda c: int(c["number"] or 0))]

    def run_workers(self, n_workers: int) -> None:
        self.compose("up", "--detach", "--wait", "--no-recreate", "--scale", f"worker={n_workers}", "worker").check(
            f"docker compose up --scale worker={n_workers}"
        )

    @contextmanager
    def dashboard(self, state: dict[str, Any], local_port: int) -> Iterator[Dashboard]:
        published = self.compose("port", "scheduler", "8787").check("docker compose port scheduler 8787").stdout.strip()
        yield Dashboard(f"http://{published}/status", "the local stack publishes it on 127.0.0.1; no tunnel needed", False)

    @contextmanager
    def tracking(self, local_port: int | None) -> Iterator[Dashboard | None]:
        published = self.compose("port", "tracking", "5000").stdout.strip()  # nothing: the profile is off
        how = "the local stack's profile tracking publishes it on 127.0.0.1; no tunnel needed"
        yield Dashboard(f"http://{published}/", how, False) if published else None

    def train(self, args: list[str], fetch_dir: Path | None) -> int:
        """`docker compose run` the trainer service: its run folder lands in the stack's output folder."""
        return self.compose("run", "--rm", "trainer", *args, capture=False, timeout=24 * 3600).code

    def _container(self, name: str) -> Container:
        return self._call(f"docker inspect {name}", lambda: self.engine.containers.get(name))

    def _call(self, what: str, call: Callable[[], Result]) -> Result:
        """Give CALL's result; raise OpsError naming WHAT when the engine refuses or cannot be reached."""
        with _engine_errors(what):
            return call()

    def _execute(self, container: Container, command: list[str], timeout: float) -> Done:
        """Give the exit code and output of COMMAND run in CONTAINER; raise OpsError after TIMEOUT seconds.

        exec_run waits for the command's output with no limit (the client's timeout bounds the
        API calls only), so it runs in a thread of its own, left behind when the time is up.
        """
        what = shlex.join(["docker", "exec", container.name, *command[:2]])
        outcome: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def execute() -> None:
            try:
                with _engine_errors(what):
                    outcome.put(container.exec_run(command, demux=True))
            except BaseException as error:  # handed to the caller's thread
                outcome.put(error)

        threading.Thread(target=execute, name="docker-exec", daemon=True).start()
        try:
            result = outcome.get(timeout=timeout)
        except queue.Empty:
            raise OpsError(f"`{what} ...` did not finish within {timeout:.0f} s") from None
        if isinstance(result, BaseException):
            raise result
        exit_code, (stdout, stderr) = result
        return Done(exit_code, (stdout or b"").decode(errors="replace"), (stderr or b"").decode(errors="replace"))


@dataclass
class Fleet:
    """The hosts of an Ansible inventory, read with `ansible-inventory --list`, reached with Fabric."""

    inventory: Path
    connections: dict[str, Connection] = field(default_factory=dict)
    templars: dict[str, Templar] = field(default_factory=dict, repr=False)

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
        """Give a variable of HOST as the roles see it, templated by Ansible's own engine.

        The inventory's value (group and host vars, as `ansible-inventory` resolved them), else
        the role default; Jinja in it (`{{ skfleet_data_dir }}/runs`, filters, `groups`) is
        rendered by Ansible's Templar. A value that needs a host's facts cannot be: set it in the inventory.
        """
        if name not in self._hostvars.get(host, {}) and name not in _role_defaults():
            raise OpsError(f"{name} is neither set in {self.inventory} nor a role default")
        templar = self._templar(host)
        try:
            value = templar.template(templar.available_variables[name])
        except AnsibleError as error:
            raise OpsError(
                f"{name} can't be worked out outside a play ({error.message}; a host's facts, say): "
                f"set it for {host} in {self.inventory}"
            ) from None
        return _untagged(value)

    @cached_property
    def _hostvars(self) -> dict[str, dict[str, Any]]:
        """Give each host's inventory variables, as `ansible-inventory` resolved them."""
        return self.listing.get("_meta", {}).get("hostvars", {})

    @cached_property
    def _magic(self) -> dict[str, Any]:
        """Give Ansible's magic variables that need no play, the same for every host (the playbooks live in ansible/)."""
        others = {other: self._hostvars.get(other, {}) for other in self.group("all")}
        # inventory_dir: the folder of the inventory's file (per host in Ansible; one file here, or a folder of them).
        folder = self.inventory if self.inventory.is_dir() else self.inventory.parent
        places = {"playbook_dir": str(ROOT / "ansible"), "inventory_dir": str(folder.resolve())}
        return _trusted({"groups": self.groups(), "hostvars": others, **places})

    def _templar(self, host: str) -> Templar:
        """Give HOST's Templar: the role defaults, then its inventory variables, then the magic ones; one per host."""
        if host not in self.templars:
            variables = {**_trusted({**_role_defaults(), **self._hostvars.get(host, {})}), **self._magic}
            self.templars[host] = Templar(loader=DataLoader(), variables={**variables, "inventory_hostname": host})
        return self.templars[host]

    def groups(self) -> dict[str, list[str]]:
        """Give every group of the inventory with its hosts, children's included, as Ansible's `groups`."""
        return {group: self.group(group) for group in self.listing if group != "_meta"}

    def connection(self, host: str) -> Connection:
        """Give HOST's SSH connection, opened once (on first use) and shared by the task's commands."""
        if host not in self.connections:
            self.connections[host] = self._connect(host)
        return self.connections[host]

    def _connect(self, host: str) -> Connection:
        """Give a new SSH connection to HOST, as Ansible reaches it (ansible_host, _user, _port, the key)."""
        hostvars = self._hostvars.get(host, {})
        key = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
        return Connection(
            hostvars.get("ansible_host", host),
            user=hostvars.get("ansible_user"),
            port=int(hostvars.get("ansible_port", 22)),
            connect_timeout=15,
            connect_kwargs={"key_filename": [key]} if key else {},
        )

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

    def _docker(self, host: str, *args: str, timeout: float = 120) -> Done:
        """Run the `docker` CLI on HOST (over SSH, with sudo unless the SSH user is root)."""
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
        return self._docker(host, "exec", container, "python", "-c", script, *args, timeout=timeout)

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

    def missing_workers(self, workers: dict[str, Any]) -> list[str]:
        joined = list(self.worker_names(workers).values())
        missing = []
        for host in self.group("dask_workers"):
            expected, found = int(self.var(host, "dask_worker_nworkers")), joined.count(host)
            if found >= expected:
                continue
            container = self.var(host, "dask_worker_container_name")
            rerun = f"ansible-playbook -i {self.inventory} site.yml --limit {host}"
            try:
                inspect = self._docker(host, "inspect", "--format", "{{.State.Status}}", container, timeout=30)
            except OpsError as error:
                missing.append(f"{host} is unreachable ({error}): is the VM up? Its worker joins again once it is")
                continue
            state = inspect.stdout.strip()
            if inspect.code != 0:
                missing.append(f"{host} has no container {container}: {rerun}")
            elif state != "running":
                missing.append(f"{host}: {container} is {state}: {rerun} (its log: scripts/ops.sh -i {self.inventory} logs)")
            else:
                missing.append(
                    f"{host}: {container} runs, {found} of its {expected} workers joined: "
                    f"its log says why (scripts/ops.sh -i {self.inventory} logs)"
                )
        return missing

    def log_containers(self, host: str) -> list[str]:
        listing = self._docker(host, "ps", "--all", "--filter", "name=^skfleet-", "--format", "{{.Names}}")
        return listing.check(f"docker ps on {host}").stdout.split()

    def container_listing(self, host: str) -> str:
        return self._docker(host, "ps", "--all", "--filter", "name=^skfleet", "--format", LISTING_FORMAT).stdout

    def container_log(self, host: str, container: str) -> str:
        done = self._docker(host, "logs", "--timestamps", container, timeout=300)
        return done.stdout + done.stderr

    def is_running(self, host: str, container: str) -> bool:
        done = self._docker(host, "inspect", "--format", "{{.State.Running}}", container)
        return done.check(f"docker inspect {container}").stdout.strip() == "true"

    def restart_policy(self, host: str, container: str) -> str:
        done = self._docker(host, "inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", container)
        return done.check(f"docker inspect {container}").stdout.strip()

    def set_restart_policy(self, host: str, container: str, policy: str) -> None:
        self._docker(host, "update", f"--restart={policy}", container).check("docker update")

    def stop(self, host: str, container: str) -> None:
        self._docker(host, "stop", container, timeout=120).check(f"docker stop {container}")

    def start(self, host: str, container: str) -> None:
        self._docker(host, "start", container).check(f"docker start {container}")

    def remove(self, host: str, container: str) -> None:
        self._docker(host, "rm", container).check(f"docker rm {container}")

    def retired_hint(self, host: str) -> str:
        return f"to keep {host} out, move it to group dask_workers_retired (site.yml would start it again)"

    def worker_replicas(self, running: bool = False) -> list[str]:
        raise scale_refused()

    def run_workers(self, n_workers: int) -> None:
        raise scale_refused()

    @contextmanager
    def dashboard(self, state: dict[str, Any], local_port: int) -> Iterator[Dashboard]:
        """Forward 127.0.0.1:LOCAL_PORT through the scheduler host's SSH to where the dashboard listens there.

        That is the host's 127.0.0.1 by default (skfleet_dashboard_sources empty), else its private address.
        """
        remote, port = state.get("dashboard_host"), state["dashboard_port"]
        if remote is None:
            raise OpsError(f"the scheduler's dashboard (port {port}) answers neither on 127.0.0.1 nor on its address")
        host = self.scheduler_host()
        with self._forward(host, local_port, remote, port, "--local-port") as route:
            yield Dashboard(f"http://127.0.0.1:{local_port}/status", route, True)

    @contextmanager
    def tracking(self, local_port: int | None) -> Iterator[Dashboard | None]:
        """Forward 127.0.0.1:LOCAL_PORT through the tracking host's SSH to where its server listens (group tracking)."""
        hosts = self.group("tracking")
        if not hosts:
            yield None
            return
        host = hosts[0]
        container = self.var(host, "mlflow_tracking_container_name")
        listing = self._docker(host, "inspect", "--format", "{{json .Args}}", container)
        if listing.code != 0:
            raise OpsError(f"{host}: the tracking server ({container}) is not there: run site.yml")
        args = json.loads(listing.stdout)
        remote, port = (args[args.index(option) + 1] for option in ("--host", "--port"))
        local_port = local_port or int(port)  # the server's own port: the runs' links point there
        with self._forward(host, local_port, remote, int(port), "--tracking-port") as route:
            secrets = Path(self.var(host, "skfleet_tracking_controller_dir"))
            login = f"log in as {self.var(host, 'mlflow_tracking_admin_user')}, password in {secrets / 'admin.password'}"
            yield Dashboard(f"https://127.0.0.1:{local_port}/", f"{route}; {login}", True)

    @contextmanager
    def _forward(self, host: str, local_port: int, remote: str, port: int, option: str) -> Iterator[str]:
        """Forward 127.0.0.1:LOCAL_PORT through HOST's SSH to REMOTE:PORT for the block; give the route in words."""
        if not _port_free(local_port):
            raise OpsError(f"127.0.0.1:{local_port} is taken (a local stack's dashboard?): pick another with {option}")
        ended: BaseException | None = None  # how the block ended (Ctrl-C, mostly): it goes on once the tunnel is shut
        try:
            with self.connection(host).forward_local(local_port, remote_port=port, remote_host=remote, local_host="127.0.0.1"):
                # Fabric binds the port in a thread of its own: the way is open once it answers.
                if not _listening(local_port, timeout=15):
                    raise OpsError(f"the tunnel did not open 127.0.0.1:{local_port} within 15 s")
                try:
                    yield f"through {host} to {remote}:{port}; Ctrl-C ends it"
                except BaseException as error:
                    ended = error
                    raise
        except OSError as error:
            raise OpsError(f"cannot open the tunnel on 127.0.0.1:{local_port}: {error} (pick another with {option})") from None
        except ThreadException as error:
            # Fabric keeps what each forwarded connection raised and raises it all when the tunnel shuts.
            # A client that resets its connection (a browser closing a tab, TLS left unread) ends
            # only that connection: say so and end as asked. Anything else broke the tunnel itself.
            failures = [wrapper.value for wrapper in error.exceptions]
            if not all(isinstance(failure, CLIENT_DROPPED) for failure in failures):
                broken = next(failure for failure in failures if not isinstance(failure, CLIENT_DROPPED))
                raise OpsError(f"the tunnel through {host} to {remote}:{port} broke: {broken!r}") from None
            print(f"({len(failures)} connection(s) on 127.0.0.1:{local_port} dropped by their client; "
                  "the tunnel served the others)", file=sys.stderr)  # fmt: skip
            if ended is not None:
                raise ended from None

    def train(self, args: list[str], fetch_dir: Path | None) -> int:
        """Run train.yml (the trainer role: the job, then its run folder fetched), streaming the job's log.

        The role runs the job and fetches its folder; Ansible shows a task's output only once it is
        done, so the job's progress (its stderr) is followed here, over SSH, while the play runs.
        """
        host = self.var(self.scheduler_host(), "skfleet_trainer_host")
        container = f"skfleet-trainer-{time.time_ns()}"
        extra = {"trainer_args": args, "trainer_container_name": container}
        if fetch_dir is not None:
            extra["trainer_fetch_dir"] = str(fetch_dir.resolve())
        play = self.playbook("train.yml", "--extra-vars", json.dumps(extra))
        follower = None
        try:
            with sigterm_as_interrupt():
                while play.poll() is None:
                    if follower is None and self._docker(host, "inspect", "--format", "{{.Id}}", container).code == 0:
                        follower = threading.Thread(target=self._follow, args=(host, container), name="trainer-log", daemon=True)
                        follower.start()
                    time.sleep(1)
        except KeyboardInterrupt:
            self._stop_job(play, host, container)
            raise
        if follower is not None:
            follower.join(timeout=LOG_GRACE_S)
        return play.returncode

    def _stop_job(self, play: subprocess.Popen[bytes], host: str, container: str) -> None:
        """Stop the play and the job it started: the job was detached, so it would go on without us.

        The trainer, stopped (SIGTERM), writes no run folder and leaves the cluster as it found it.
        """
        play.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a play slow to end doesn't keep the job running
            play.wait(timeout=PLAY_STOP_S)
        stopped = self._docker(host, "stop", "--time", str(STOP_GRACE_S), container, timeout=STOP_GRACE_S + 60)
        if stopped.code == 0:
            self._docker(host, "rm", container)
            print(f"interrupted: stopped the training job on {host} ({container})", file=sys.stderr)
        elif "No such container" not in stopped.stderr:
            print(f"interrupted; the training job on {host} may still run: docker stop {container} "
                  f"({stopped.stderr.strip()[-200:]})", file=sys.stderr)  # fmt: skip

    def _follow(self, host: str, container: str) -> None:
        """Copy CONTAINER's stderr (the trainer's progress and summary) to ours until it ends, on a connection of its own."""
        # 2>&1 >/dev/null: the job's stderr comes back, its stdout (the --json result line, the role's) does not.
        command = self.sudo(host) + shlex.join(["docker", "logs", "--follow", container]) + " 2>&1 >/dev/null"
        connection = self._connect(host)
        try:
            connection.run(command, warn=True, hide=False, out_stream=sys.stderr, in_stream=False)
        except Exception as error:
            print(f"(the job's log stopped streaming: {error})", file=sys.stderr)
        finally:
            connection.close()

    def playbook(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ansible-playbook NAME on this inventory, from ansible/ with its ansible.cfg; its output is ours."""
        command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory.resolve()), name, *args]
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}
        # Not our stdin: Ansible refuses to start on a non-blocking one ("Ansible requires blocking
        # IO on stdin"), as a CI job's or a supervisor's can be, and a play reads nothing from it.
        return subprocess.Popen(command, cwd=ROOT / "ansible", env=env, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


def sigterm_as_interrupt() -> Interrupts:
    """Let SIGTERM (kill, systemd, a CI's timeout) unwind like Ctrl-C for the time of the block, and either one
    be raised again until it does: the trainer's own handling (skfleet/interrupts.py). Raised once, Python may drop
    it in a gc callback or a `__del__`, and `ops.sh train` then went on to the job's end (CI)."""
    return Interrupts()


def _run(command: list[str], capture: bool = True, timeout: float = 120, env: dict[str, str] | None = None) -> Done:
    try:
        # stdin: nothing; Ansible's commands refuse a non-blocking one (see Fleet.playbook).
        result = subprocess.run(
            command, cwd=ROOT, capture_output=capture, text=True, timeout=timeout, env=env, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise OpsError(f"{command[0]} is not installed (scripts/install-docker.sh, scripts/dev-env.sh)") from None
    except subprocess.TimeoutExpired:
        raise OpsError(f"`{shlex.join(command[:4])} ...` did not finish within {timeout:.0f} s") from None
    return Done(result.returncode, result.stdout or "", result.stderr or "")


@contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Turn the Docker SDK's errors (and a lost connection to the engine) into OpsError naming WHAT."""
    try:
        yield
    except docker.errors.APIError as error:
        raise OpsError(f"{what} failed: {error.explanation or error}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise OpsError(f"{what} failed: cannot reach the Docker engine ({error})") from None


def _listed_name(container: Container) -> str:
    """Give the name of a container of a sparse listing (which holds `Names`, not `Name`)."""
    return container.attrs.get("Names", [""])[0].lstrip("/")


def _host(address: str | None) -> str | None:
    """Give the host part of a Dask address (tcp://10.0.0.5:8790 -> 10.0.0.5)."""
    return urlsplit(address).hostname if address else None


_DEFAULTS: dict[str, Any] = {}


def _trusted(value: Any) -> Any:
    """Give VALUE with its strings marked as templates, as Ansible marks the inventory's and the roles' own."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    return value


def _untagged(value: Any) -> Any:
    """Give a templated value as plain Python types (Ansible's strings carry tags)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _untagged(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_untagged(item) for item in value]
    return value


def _role_defaults() -> dict[str, Any]:
    """Give every role's defaults (ansible/roles/*/defaults/main.yml), the one place they are written."""
    if not _DEFAULTS:
        for path in sorted(ROLES.glob("*/defaults/main.yml")):
            _DEFAULTS.update(yaml.safe_load(path.read_text()) or {})
    return _DEFAULTS


def _port_free(port: int) -> bool:
    """Tell whether nothing listens on 127.0.0.1:PORT (connections closing there don't count, as for Fabric's bind)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False
