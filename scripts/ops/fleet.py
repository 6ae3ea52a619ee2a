"""The hosts of an Ansible inventory as an ops target: read with `ansible-inventory`, reached over SSH with Fabric.

Each host's `docker` CLI does what the Docker SDK does locally; the inventory's variables are
rendered by Ansible's own Templar over the roles' defaults; `train` runs train.yml (the trainer
role) and follows the job's log.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from fabric import Connection
from invoke.exceptions import ThreadException

from skfleet_ops.target import ROOT, Dashboard, Done, OpsError, WorkerContainer, run_command, sigterm_as_interrupt

ROLES = ROOT / "ansible" / "roles"
# Every Ansible command ops runs reads the project's settings (pipelining, roles_path), from any folder.
ANSIBLE_ENV = {"ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}
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


def scale_refused() -> OpsError:
    return OpsError("scale works on the local stack; across VMs, edit the inventory and run scale.yml")


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
        env = {**os.environ, **ANSIBLE_ENV}
        done = run_command(command, timeout=120, env=env).check(f"ansible-inventory -i {self.inventory}")
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
        env = {**os.environ, **ANSIBLE_ENV}
        # Not our stdin: Ansible refuses to start on a non-blocking one ("Ansible requires blocking
        # IO on stdin"), as a CI job's or a supervisor's can be, and a play reads nothing from it.
        return subprocess.Popen(command, cwd=ROOT / "ansible", env=env, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


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


@functools.cache
def _role_defaults() -> dict[str, Any]:
    """Give every role's defaults (ansible/roles/*/defaults/main.yml), the one place they are written; read once."""
    defaults: dict[str, Any] = {}
    for path in sorted(ROLES.glob("*/defaults/main.yml")):
        defaults.update(yaml.safe_load(path.read_text()) or {})
    return defaults


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
