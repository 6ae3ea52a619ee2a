"""Connect to the Dask cluster (or start one on this machine), wait for workers, gate versions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dask.config
import distributed.comm
from distributed import Client, LocalCluster
from distributed.security import Security

from skfleet.dask_config import register_defaults
from skfleet.errors import ClusterError, VersionMismatchError, first_line
from skfleet.versions import CHECKED_PACKAGES, VersionReport, package_versions

log = logging.getLogger(__name__)

# distributed, imported above, registered its defaults over skfleet's (skfleet/dask_config.py): skfleet's on top again.
register_defaults()


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a run used, as written into results.json."""

    scheduler_address: str
    dashboard_link: str | None
    n_workers: int
    n_threads: int
    local: bool
    versions: dict[str, str] = field(default_factory=dict)


def scheduler_address() -> str | None:
    """Give the scheduler address from Dask's config (`DASK_SCHEDULER_ADDRESS`), if any."""
    address = dask.config.get("scheduler-address", default=None) or os.environ.get("DASK_SCHEDULER_ADDRESS")
    return address or None


@contextlib.contextmanager
def connect(n_workers: int | None, timeout: float) -> Iterator[tuple[Client, ClusterInfo]]:
    """Give a client of the configured cluster, or of a local one, with versions checked.

    With `DASK_SCHEDULER_ADDRESS` set, connects there and waits up to `timeout` seconds
    for `n_workers` (default 1). Without it, starts a LocalCluster of `n_workers`
    single-threaded worker processes (default: one per core).
    """
    address = scheduler_address()
    with contextlib.ExitStack() as stack:
        if address is None:
            n_local = n_workers or os.cpu_count() or 1
            log.info("DASK_SCHEDULER_ADDRESS is not set: running on a local Dask cluster (%d workers x 1 thread)", n_local)
            cluster = stack.enter_context(
                LocalCluster(n_workers=n_local, threads_per_worker=1, processes=True, dashboard_address=":0")
            )
            client = stack.enter_context(Client(cluster))
        else:
            client = open_client(address, timeout)
            stack.callback(close, client)
            wait_for_workers(client, address, n_workers or 1, timeout)
        versions = check_versions(client)
        info = _describe(client, address, versions)
        log.info(
            "versions match on client, scheduler and %d workers: %s",
            info.n_workers,
            ", ".join(f"{package} {version}" for package, version in versions.items()),
        )
        if info.dashboard_link:
            log.info("dashboard: %s", info.dashboard_link)
        yield client, info


def open_client(address: str, timeout: float, **options: Any) -> Client:
    """Give a client of the scheduler at `address` (OPTIONS: Client's, e.g. security), or a ClusterError saying why not.

    The connection and Dask's handshake are bounded by TIMEOUT first (`handshake`): distributed
    bounds the TCP connect alone, and a port that accepts and never answers would hold the
    Client's start for good.
    """
    try:
        handshake(address, timeout, options.get("security"))
        return Client(address, timeout=f"{timeout}s", **options)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        refusal = _refusal(address, error)
        if refusal is None:
            raise
    # distributed (2026.8) leaves a Client whose start failed in a reference cycle, held until
    # here by the error's traceback. Collected at some later moment, its __del__ stops its loop
    # runner, which takes LoopRunner's class-wide lock: when that moment falls inside another
    # Client's start, which holds the lock, the process hangs for good (a retried connect, the
    # next test). Now is a safe moment; the error raised below does not hold the old one.
    gc.collect()
    raise refusal


# How long closing a client may take (Client.close's default is twice the connect timeout).
CLOSE_TIMEOUT_S = 10.0
# How much longer than the connect timeout the whole connection, handshake included, may take.
HANDSHAKE_GRACE_S = 1.0


def close(client: Client) -> None:
    """Close CLIENT within CLOSE_TIMEOUT_S: a frozen scheduler never answers its goodbye, and the run must still end.

    The futures the client still tracked then fail in its loop's callbacks, each logged by tornado
    with a traceback: the run has said what happened in its own words, so they are not shown.
    """
    logging.getLogger("tornado.application").setLevel(logging.CRITICAL)
    try:
        client.close(timeout=CLOSE_TIMEOUT_S)
    except (OSError, TimeoutError) as error:
        log.debug("closing the client of %s: %s", client.scheduler.address, first_line(error))


def handshake(address: str, timeout: float, security: Security | None = None) -> None:
    """Connect to ADDRESS and complete Dask's handshake within TIMEOUT seconds, then close; else a ClusterError saying so.

    distributed (2026.8, on purpose: dask/distributed#7698) bounds only the TCP connect of
    `Client(address, timeout=...)`; the handshake that follows waits for the scheduler's first
    words with no deadline. A wrong port, a load balancer, a half-started or frozen container, a
    TLS port given a tcp:// address or a firewall that accepts and drops would hold it for good.
    Run on a loop of its own in a thread, so it works under a running event loop (a notebook).
    """
    arguments = (security or Security()).get_connection_args("client")

    async def shake() -> None:
        # connect() bounds its TCP connect by TIMEOUT (a refused port ends there, OSError), then writes
        # this side's handshake and reads the scheduler's: that read is bounded here, a second later.
        connecting = distributed.comm.connect(address, timeout=timeout, **arguments)
        comm = await asyncio.wait_for(connecting, timeout + HANDSHAKE_GRACE_S)
        comm.abort()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="skfleet-handshake") as pool:
        try:
            pool.submit(asyncio.run, shake()).result()
        except TimeoutError:
            raise ClusterError(
                f"the Dask scheduler at {address} did not complete Dask's handshake within {timeout:g} s: "
                "something accepts connections there but does not answer as a scheduler (a wrong port, a TLS port "
                "given a tcp:// address, a load balancer, a frozen or half-started scheduler)"
            ) from None


def _refusal(address: str, error: Exception) -> ClusterError | None:
    """Give the ClusterError that says why Client(ADDRESS) failed with ERROR; None for an error that is ours."""
    if isinstance(error, OSError | TimeoutError):
        return ClusterError(f"cannot reach the Dask scheduler at {address}: {first_line(error)}")
    if isinstance(error, ValueError):
        return ClusterError(f"bad DASK_SCHEDULER_ADDRESS {address!r}: {first_line(error)}")
    if "ssl_context" not in str(error):
        return None
    return ClusterError(
        f"cannot reach the Dask scheduler at {address}: it speaks TLS and this client has no TLS settings. "
        "Give it the cluster's CA and a client certificate and key: Dask config distributed.comm.tls.ca-file, "
        ".client.cert and .client.key (DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ...), or Client's security= "
        "(docs/security.md)"
    )


def identity(client: Client, timeout: float | None = None) -> dict[str, Any]:
    """Give the scheduler's identity (its address, and every worker by address), asked now; TimeoutError after TIMEOUT s.

    Not `client.scheduler_info()`: that returns the client's cache, which its periodic refresh
    (every 2 s) rewrites with no worker in it (distributed 2026.8), so a read that lands right
    after a refresh sees no worker at all: a spurious "every worker left".
    """
    return client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=timeout)


def wait_for_workers(client: Client, address: str, n_workers: int, timeout: float) -> None:
    """Wait up to TIMEOUT seconds for N_WORKERS workers; a ClusterError says how many came."""
    log.info("waiting up to %.0f s for %d worker(s) at %s", timeout, n_workers, address)
    try:
        client.wait_for_workers(n_workers, timeout=timeout)
    except TimeoutError:
        have = len(identity(client)["workers"])
        raise ClusterError(
            f"only {have} of {n_workers} workers joined {address} within {timeout:.0f} s; "
            "check the worker containers' logs, or lower --workers"
        ) from None
    except OSError as error:
        raise ClusterError(f"lost the scheduler at {address} while waiting for workers: {first_line(error)}") from None


def versions_of(client: Client) -> VersionReport:
    """Give the checked packages' versions across the cluster, as the client sees them."""
    try:
        report = client.get_versions(check=False, packages=list(CHECKED_PACKAGES[1:]))
    except (OSError, TimeoutError) as error:
        raise ClusterError(f"lost the scheduler while checking versions: {first_line(error)}") from None
    return VersionReport(
        client=package_versions(report["client"]),
        scheduler=package_versions(report["scheduler"]),
        workers={address: package_versions(entry) for address, entry in report["workers"].items()},
    )


def check_versions(client: Client) -> dict[str, str]:
    """Give the client's versions after checking the scheduler and every worker agree.

    Raises VersionMismatchError naming each package that differs, where, and the fix:
    the words `doctor` prints. Python compares major.minor only, so a patch-level
    difference (3.11.7 here, 3.11.2 in the images) passes.
    """
    report = versions_of(client)
    problems = report.problems()
    if problems:
        raise VersionMismatchError(
            "version mismatch between this client and the cluster: "
            + "; ".join(" ".join([f"{line}.", *(f"{fix}." for fix in fixes)]) for line, fixes in problems)
            + " python -m skfleet doctor shows every version"
        )
    return report.client


def _describe(client: Client, address: str | None, versions: dict[str, str]) -> ClusterInfo:
    info = identity(client)
    workers = info["workers"]
    return ClusterInfo(
        scheduler_address=info.get("address", address or ""),
        dashboard_link=client.dashboard_link,
        n_workers=len(workers),
        n_threads=sum(worker.get("nthreads", 0) for worker in workers.values()),
        local=address is None,
        versions=versions,
    )
