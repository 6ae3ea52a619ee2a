"""`python -m skfleet doctor`: can this client use that cluster? Versions side by side, resources, TLS.

Exit codes: 0 all well; 3 the cluster can't be reached; 4 a version mismatch (with the fix).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from dask.utils import format_bytes

from skfleet import cluster, versions
from skfleet.errors import ClusterError, VersionMismatchError
from skfleet.text import table


def parser() -> argparse.ArgumentParser:
    """Give the argument parser of `doctor`."""
    cli = argparse.ArgumentParser(
        prog="python -m skfleet doctor",
        description="Check that this client and the Dask cluster agree on versions, and show the cluster's resources.",
    )
    cli.add_argument("--scheduler", metavar="ADDRESS", help="scheduler address (default: DASK_SCHEDULER_ADDRESS)")
    cli.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="how long to try to connect (default 10)")
    return cli


def version_table(report: versions.VersionReport) -> str:
    """Give client, scheduler and workers side by side; workers that agree share a column."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for address, theirs in report.workers.items():
        groups.setdefault(tuple(theirs.values()), []).append(address)
    columns = [("client", report.client), ("scheduler", report.scheduler)]
    for addresses in groups.values():
        title = (
            f"workers ({len(addresses)})"
            if len(groups) == 1
            else f"worker {addresses[0]}" + (f" (+{len(addresses) - 1})" if len(addresses) > 1 else "")
        )
        columns.append((title, report.workers[addresses[0]]))
    rows = [["package", *(title for title, _ in columns), "check"]]
    mismatched = report.mismatches()
    for package in versions.CHECKED_PACKAGES:
        rows.append([package, *(versions[package] for _, versions in columns), "MISMATCH" if package in mismatched else "ok"])
    return table(rows)


def worker_table(info: dict[str, Any]) -> str:
    """Give each worker's threads and memory limit."""
    rows = [["worker", "threads", "memory limit"]]
    for address, worker in sorted(info.get("workers", {}).items()):
        limit = worker.get("memory_limit")
        rows.append([address, str(worker.get("nthreads", "?")), format_bytes(limit) if limit else "none"])
    return table(rows)


def fixes(report: versions.VersionReport) -> list[str]:
    """Give each mismatch and, indented, the commands that end it: the words the version gate refuses with."""
    return [text for line, commands in report.problems() for text in (line, *(f"  {command}" for command in commands))]


def run(argv: Sequence[str]) -> int:
    """Print the report; give 0, 3 or 4."""
    args = parser().parse_args(argv)
    address = args.scheduler or cluster.scheduler_address()
    if address is None:
        raise ClusterError("no cluster to check: pass --scheduler ADDRESS or set DASK_SCHEDULER_ADDRESS")
    with cluster.open_client(address, args.timeout) as client:
        # The workers first, then their versions: a worker joining in between is in the version table, not
        # counted without its versions.
        info = cluster.identity(client)
        report = cluster.versions_of(client)
    workers = info["workers"]
    threads = sum(worker.get("nthreads", 0) for worker in workers.values())
    memory = sum(worker.get("memory_limit") or 0 for worker in workers.values())
    tls = "yes" if str(info.get("address", address)).startswith("tls://") else "no"
    print(f"scheduler  {info.get('address', address)}   TLS: {tls}")
    print(f"cluster    {len(workers)} workers, {threads} threads, {format_bytes(memory)} memory limit in all\n")
    print(version_table(report))
    print()
    print(worker_table(info))
    problems = fixes(report)
    if problems:
        print("\nversion mismatch:\n" + "\n".join(problems))
        raise VersionMismatchError(f"version mismatch on {', '.join(report.mismatches())}; see the fixes above")
    if not workers:
        print("\nno workers yet: the scheduler is up, but nothing can run")
    print("\nall versions match")
    sys.stdout.flush()
    return 0
