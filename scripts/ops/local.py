"""The local Compose stack as an ops target: `docker compose` from the repository root (honouring .env), the Docker SDK."""

from __future__ import annotations

import json
import queue
import shlex
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import docker.errors
import requests
from docker.models.containers import Container

from skfleet_ops.target import Dashboard, Done, OpsError, WorkerContainer, run_command

LOCAL_HOST = "localhost"
# Each call to the local Docker engine's API; a command run in a container has a limit of its own.
ENGINE_TIMEOUT_S = 120

Result = TypeVar("Result")


class Local:
    """The Compose stack of this checkout: `docker compose` from the repository root (honouring .env), the Docker SDK."""

    name = "the local Compose stack"

    def close(self) -> None:
        """Nothing to release: each call to the engine stands alone."""

    def compose(self, *args: str, capture: bool = True, timeout: float = 600) -> Done:
        # The SDK has no Compose: the CLI plugin it is.
        return run_command(["docker", "compose", *args], capture=capture, timeout=timeout)

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
