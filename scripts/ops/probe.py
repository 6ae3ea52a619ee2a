"""What the scheduler knows of its cluster, as one JSON document on stdout.

Runs inside the scheduler container (only `distributed` is needed), where the client's TLS
settings and the address come from the environment:

    docker exec skfleet-scheduler python -c "$(cat probe.py)" [ADDRESS] [PACKAGE ...]

ADDRESS "" or none: DASK_SCHEDULER_ADDRESS. Each worker is also dialled from here, so a
worker that advertises an address nobody can reach shows up as unreachable, within DIAL_TIMEOUT_S;
versions are then asked of the workers that answered only (the scheduler would wait out its
connect timeout, 30 s, on each of the others). On failure the document is {"error": "..."} and
the exit code 1.
"""

import asyncio
import json
import os
import socket
import sys
import time
from urllib.parse import urlsplit

from distributed import Client
from distributed.comm import connect
from distributed.security import Security
from distributed.versions import get_versions

CONNECT_TIMEOUT_S = 10
DIAL_TIMEOUT_S = 3


async def dial(address, connection_args):
    """Give None when ADDRESS answers a connection, else why not."""
    try:
        comm = await connect(address, timeout=DIAL_TIMEOUT_S, **connection_args)
    except (OSError, TimeoutError) as error:
        return str(error).splitlines()[0][:200] or type(error).__name__
    await comm.close()
    return None


def dashboard_host(scheduler_address, port):
    """Give where the dashboard listens, as this host reaches it: 127.0.0.1 (the default on VMs), else the scheduler's address."""
    for host in ("127.0.0.1", urlsplit(scheduler_address).hostname) if port else ():
        try:
            socket.create_connection((host, port), timeout=DIAL_TIMEOUT_S).close()
        except OSError:
            continue
        return host
    return None


async def handshake(address):
    """Connect and complete Dask's handshake within CONNECT_TIMEOUT_S (+1), then close (skfleet.cluster.handshake says why)."""
    connecting = connect(address, timeout=CONNECT_TIMEOUT_S, **Security().get_connection_args("client"))
    try:
        comm = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S + 1)
    except TimeoutError:
        raise TimeoutError(f"{address} did not complete Dask's handshake within {CONNECT_TIMEOUT_S} s") from None
    comm.abort()


def probe(address, packages):
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:  # Client() would start a cluster of its own
        raise ValueError("no scheduler address given and DASK_SCHEDULER_ADDRESS is not set")
    asyncio.run(handshake(address))  # Client's start would wait for a silent scheduler for good
    with Client(address, timeout=CONNECT_TIMEOUT_S) as client:
        connection_args = client.security.get_connection_args("client")
        # Asked now, not client.scheduler_info(): its cache's periodic refresh carries no workers
        # (skfleet.cluster.identity says more; this script runs with distributed alone).
        info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=CONNECT_TIMEOUT_S)
        workers = {}
        for worker_address, worker in info["workers"].items():
            metrics = worker.get("metrics", {})
            workers[worker_address] = {
                "name": str(worker.get("name")),
                "host": worker.get("host"),
                "nanny": worker.get("nanny"),
                "status": worker.get("status"),
                "nthreads": worker.get("nthreads"),
                "memory_limit": worker.get("memory_limit"),
                "memory": metrics.get("memory"),
                "task_counts": metrics.get("task_counts", {}),
                "unreachable": client.sync(dial, worker_address, connection_args),
            }
        reachable = [worker_address for worker_address, worker in workers.items() if worker["unreachable"] is None]
        scheduler_versions = client.run_on_scheduler(get_versions, packages)
        worker_versions = client.run(get_versions, packages, workers=reachable, on_error="return") if reachable else {}
        return {
            "address": info["address"],
            "uptime_s": time.time() - info.get("started", time.time()),
            "dashboard_port": info.get("services", {}).get("dashboard"),
            "dashboard_host": dashboard_host(info["address"], info.get("services", {}).get("dashboard")),
            "workers": workers,
            "tasks_processing": sum(len(keys) for keys in client.processing().values()),
            "versions": {
                "scheduler": scheduler_versions["packages"],
                "workers": {
                    worker: entry["packages"] for worker, entry in worker_versions.items() if not isinstance(entry, Exception)
                },
            },
        }


def main(argv):
    address, packages = (argv[0] if argv else ""), argv[1:]
    try:
        document = probe(address, packages)
    except (OSError, TimeoutError, ValueError) as error:
        print(json.dumps({"error": f"cannot reach the scheduler: {str(error).splitlines()[0]}"}))
        return 1
    print(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
