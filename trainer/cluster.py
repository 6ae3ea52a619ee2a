"""Connect to the Dask cluster (or start one on this machine), wait for workers, gate versions."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dask.config
from distributed import Client, LocalCluster

from skfleet.errors import ClusterError, VersionMismatchError, first_line

# Packages whose versions must agree between client, scheduler and workers: pickled
# estimators, task graphs and data cross between them. Python compares major.minor
# (pickles and wheels are compatible across micro releases); the rest compare exactly.
CHECKED_PACKAGES = ("python", "dask", "distributed", "scikit-learn", "numpy", "pandas", "cloudpickle", "joblib")

log = logging.getLogger(__name__)


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
            client = stack.enter_context(open_client(address, timeout))
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
    """Give a client of the scheduler at `address` (OPTIONS: Client's, e.g. security), or a ClusterError saying why not."""
    try:
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


# A package the client lacks: nothing of it crosses from the client, so it can't mismatch there.
MISSING = "missing"
CLIENT_FIX = "pip install -c docker/constraints.txt ."
WORKER_FIX = "docker compose up --detach --build --force-recreate scheduler worker  (VMs: ansible-playbook upgrade.yml)"


def package_versions(report: dict[str, Any]) -> dict[str, str]:
    """Give the checked packages' versions from one `get_versions` entry (MISSING where not installed)."""
    packages = report.get("packages", {})
    python = str(packages.get("python", ""))
    versions = {"python": ".".join(python.split(".")[:2])}
    for name in CHECKED_PACKAGES[1:]:
        versions[name] = str(packages.get(name) or MISSING)
    return versions


@dataclass(frozen=True)
class VersionReport:
    """The checked packages' versions on the client, the scheduler and each worker."""

    client: dict[str, str]
    scheduler: dict[str, str]
    workers: dict[str, dict[str, str]]

    def places(self) -> dict[str, dict[str, str]]:
        """Give every place but the client: `scheduler` and `worker ADDRESS`."""
        return {"scheduler": self.scheduler, **{f"worker {address}": versions for address, versions in self.workers.items()}}

    def mismatches(self) -> dict[str, dict[str, str]]:
        """Give, for each package that differs from the client's, where and which version.

        A package the client lacks is no mismatch: a client with only dask, distributed and
        scikit-learn sends nothing of pandas.
        """
        found: dict[str, dict[str, str]] = {}
        places = self.places()
        for package, version in self.client.items():
            if version == MISSING:
                continue
            differing = {where: theirs[package] for where, theirs in places.items() if theirs[package] != version}
            if differing:
                found[package] = differing
        return found

    def problems(self) -> list[tuple[str, list[str]]]:
        """Give each mismatch as one line and the commands that end it: the client follows the scheduler, workers both.

        `doctor` prints them; `check_versions` refuses the cluster with the same words.
        """
        found = []
        for package, differing in self.mismatches().items():
            line = f"{package}: client {self.client[package]} vs {_where(differing)}"
            fixes = []
            if "scheduler" in differing:
                if package == "python":
                    fixes.append(f"fix: run the client on Python {self.scheduler['python']}, then {CLIENT_FIX}")
                else:
                    wanted = f"{package}=={self.scheduler[package]}"
                    fixes.append(f"fix (client): pip install '{wanted}', or all at once: {CLIENT_FIX}")
            if any(where.startswith("worker") and version != self.scheduler[package] for where, version in differing.items()):
                fixes.append(f"fix (workers): {WORKER_FIX}")
            found.append((line, fixes))
        return found


def _where(differing: dict[str, str]) -> str:
    """Give "scheduler 1.9.1, worker tcp://a 1.9.0" or, for many workers, "3 workers 1.9.1 (tcp://a, tcp://b, +1)"."""
    parts = [f"scheduler {differing['scheduler']}"] if "scheduler" in differing else []
    by_version: dict[str, list[str]] = {}
    for where, version in differing.items():
        if where.startswith("worker "):
            by_version.setdefault(version, []).append(where.removeprefix("worker "))
    for version, addresses in by_version.items():
        if len(addresses) == 1:
            parts.append(f"worker {addresses[0]} {version}")
        else:
            shown = ", ".join(addresses[:2]) + (f", +{len(addresses) - 2}" if len(addresses) > 2 else "")
            parts.append(f"{len(addresses)} workers {version} ({shown})")
    return ", ".join(parts)


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
