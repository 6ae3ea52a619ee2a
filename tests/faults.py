"""Faults that don't crash, injected into a container from the host: a Compose worker, or a whole VM stand-in.

- frozen: `docker pause` (the cgroup freezer), as a hung VM or a stalled hypervisor: every
  process in it stops, the worker's nanny too, so Dask cannot restart the worker;
- silent network: every packet in or out of the container's network namespace but loopback's
  dropped (iptables, from the host), as a broken switch port or a firewall that drops.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable

import yaml
from dask.utils import parse_timedelta

from tests.stack import ROOT
from tests.vms import docker_client

TTL_S = parse_timedelta(yaml.safe_load((ROOT / "docker" / "dask.yaml").read_text())["distributed"]["scheduler"]["worker-ttl"])
# Dask's bound for dropping a silent worker: the heartbeat deadline, checked every worker-ttl,
# then 30 s for its nanny to restart it (docker/dask.yaml).
DROP_BOUND_S = 2 * TTL_S + 30
# Healed, a worker has rejoined once it stayed this long: the scheduler's request to restart it, sent
# while it was silent, can reach its nanny as the network heals and restart the worker that just joined.
REJOIN_STEADY_S = 10


def freeze(container: str) -> None:
    docker_client().containers.get(container).pause()


def thaw(container: str) -> None:
    with contextlib.suppress(Exception):  # not paused any more: nothing to do
        docker_client().containers.get(container).unpause()


def silence(container: str) -> None:
    _iptables(container, "-I")


def unsilence(container: str) -> None:
    _iptables(container, "-D")


def _iptables(container: str, action: str) -> None:
    """Add (-I) or delete (-D) the rules that drop every packet but loopback's in CONTAINER's network namespace."""
    pid = str(docker_client().containers.get(container).attrs["State"]["Pid"])
    for chain, interface in (("INPUT", "-i"), ("OUTPUT", "-o")):
        command = ["nsenter", "--target", pid, "--net", "iptables", "-w", action, chain, "!", interface, "lo", "-j", "DROP"]
        subprocess.run(command, check=action == "-I", capture_output=True, timeout=30)


# Each fault: how to inject it into a container, and how to heal it.
FAULTS: dict[str, tuple[Callable[[str], None], Callable[[str], None]]] = {
    "frozen": (freeze, thaw),
    "silent network": (silence, unsilence),
}
