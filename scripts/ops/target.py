"""What the ops tasks act on: the `Target` protocol (the verbs both targets give), and what both share.

skfleet_ops.local (the Compose stack of this checkout) and skfleet_ops.fleet (the hosts of an
Ansible inventory) each implement the verbs; the tasks in `tasks.py` are written once against them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


def sigterm_as_interrupt() -> Interrupts:
    """Let SIGTERM (kill, systemd, a CI's timeout) unwind like Ctrl-C for the time of the block, and either one
    be raised again until it does: the trainer's own handling (skfleet/interrupts.py). Raised once, Python may drop
    it in a gc callback or a `__del__`, and `ops.sh train` then went on to the job's end (CI)."""
    return Interrupts()


def run_command(command: list[str], capture: bool = True, timeout: float = 120, env: dict[str, str] | None = None) -> Done:
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
