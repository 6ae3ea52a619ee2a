"""The ops tasks, written once for the local Compose stack and for the hosts of an inventory."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dask.utils import format_bytes, format_time

from skfleet.text import table
from skfleet.versions import CHECKED_PACKAGES, WORKER_FIX, VersionReport, package_versions
from skfleet_ops.target import ROOT, OpsError, Target, WorkerContainer, sigterm_as_interrupt

PROBE = (Path(__file__).parent / "probe.py").read_text()
RETIRE = ROOT / "ansible" / "roles" / "dask_worker" / "files" / "retire_workers.py"
# Exit codes of `status`: a probe can tell "down" from "running, but on the wrong versions".
HEALTHY, UNHEALTHY, MISMATCH = 0, 1, 4
# A worker above this share of its memory limit is named (Dask pauses it at 80 %).
MEMORY_WARNING = 0.7
POLL_S = 1.0


def cluster_state(target: Target) -> dict[str, Any]:
    """Give the probe's document (scripts/ops/probe.py, run in the scheduler container), or {"error": ...}."""
    try:
        done = target.scheduler_python(PROBE, "", *CHECKED_PACKAGES[1:])
    except OpsError as error:
        return {"error": str(error)}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"the probe in the scheduler container failed: {(done.stderr.strip() or 'no output')[-300:]}"}


def assess(target: Target, state: dict[str, Any]) -> tuple[int, list[str], list[str]]:
    """Give the exit code, the problems and the warnings of a cluster state."""
    if "error" in state:
        return UNHEALTHY, [state["error"]], []
    problems, warnings = [], []
    workers = state["workers"]
    expected = target.expected_workers()
    if len(workers) < expected:
        problems.append(f"{len(workers)} of {expected} workers joined the scheduler")
        problems += target.missing_workers(workers)
    names = target.worker_names(workers)
    for address, worker in sorted(workers.items()):
        if worker["unreachable"]:
            problems.append(
                f"{names[address]} advertises {address}, which the scheduler cannot reach ({worker['unreachable']}): "
                "see docs/runbooks/unreachable-worker.md"
            )
        if worker["status"] != "running":
            problems.append(f"{names[address]} is {worker['status']} (paused: at its memory limit; see docs/runbooks/oom.md)")
        elif worker["memory_limit"] and worker["memory"] > MEMORY_WARNING * worker["memory_limit"]:
            share = worker["memory"] / worker["memory_limit"]
            warnings.append(f"{names[address]} uses {share:.0%} of its memory limit")
    report = versions(state)
    if report.mismatches():
        return MISMATCH, problems + version_problems(report, names), warnings
    return (UNHEALTHY if problems else HEALTHY), problems, warnings


def versions(state: dict[str, Any]) -> VersionReport:
    """Give the versions as the trainer's gate compares them, with the scheduler in the client's place."""
    scheduler = package_versions({"packages": state["versions"]["scheduler"]})
    workers = {address: package_versions({"packages": packages}) for address, packages in state["versions"]["workers"].items()}
    return VersionReport(client=scheduler, scheduler=scheduler, workers=workers)


def version_problems(report: VersionReport, names: dict[str, str]) -> list[str]:
    lines = []
    for package, differing in report.mismatches().items():
        for where, version in sorted(differing.items()):
            address = where.removeprefix("worker ")
            lines.append(
                f"version mismatch: {package} {version} on {names.get(address, address)} ({address}) "
                f"vs {report.scheduler[package]} on the scheduler"
            )
    if lines:
        lines.append(f"fix: {WORKER_FIX}; or retire the odd worker (scripts/ops.sh retire-worker NAME)")
    return lines


def render_status(target: Target, state: dict[str, Any], code: int, problems: list[str], warnings: list[str]) -> str:
    if "error" in state:
        return f"target     {target.name}\nUNHEALTHY  {problems[0]}"
    workers = state["workers"]
    names = target.worker_names(workers)
    threads = sum(worker["nthreads"] for worker in workers.values())
    lines = [
        f"target     {target.name}",
        f"scheduler  {state['address']}, up {format_time(state['uptime_s'])}",
        f"workers    {len(workers)} of {target.expected_workers()} joined, {threads} threads, "
        f"{state['tasks_processing']} tasks in flight",
    ]
    if workers:
        rows = [["worker", "name", "status", "threads", "memory", "tasks"]]
        for address, worker in sorted(workers.items(), key=lambda item: names[item[0]]):
            limit = format_bytes(worker["memory_limit"]) if worker["memory_limit"] else "no limit"
            counts = worker["task_counts"]
            tasks = f"{counts.get('executing', 0)} executing, {counts.get('ready', 0)} ready, {counts.get('memory', 0)} held"
            rows.append(
                [
                    address,
                    names[address],
                    worker["status"],
                    str(worker["nthreads"]),
                    f"{format_bytes(worker['memory'])} / {limit}",
                    tasks,
                ]
            )
        lines += ["", table(rows), ""]
    report = versions(state)
    if not report.mismatches():
        lines.append(
            "versions   all match: " + ", ".join(f"{package} {version}" for package, version in report.scheduler.items())
        )
    lines += [f"warning    {warning}" for warning in warnings]
    verdict = {HEALTHY: "healthy", UNHEALTHY: "UNHEALTHY", MISMATCH: "VERSION MISMATCH"}[code]
    lines.append(verdict if not problems else f"{verdict}:\n" + "\n".join(f"  - {problem}" for problem in problems))
    return "\n".join(lines)


def status(target: Target, as_json: bool = False, wait: float = 0) -> int:
    """Print the cluster's health; give 0 healthy, 1 unhealthy, 4 version mismatch.

    With WAIT, poll until healthy for up to WAIT seconds (after a restart), then report.
    """
    deadline = time.monotonic() + wait
    while True:
        state = cluster_state(target)
        code, problems, warnings = assess(target, state)
        if code == HEALTHY or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    if as_json:
        print(
            json.dumps({"healthy": code == HEALTHY, "exit": code, "problems": problems, "warnings": warnings, **state}, indent=2)
        )
    else:
        print(render_status(target, state, code, problems, warnings))
    return code


def logs(target: Target, output_dir: Path) -> int:
    """Collect every skfleet container's log from every host into one timestamped .tar.gz; print its path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    archive = output_dir / f"skfleet-logs-{stamp}.tar.gz"
    output_dir.mkdir(parents=True, exist_ok=True)
    collected = 0
    with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".skfleet-logs-", suffix=".partial", delete=False) as partial:
        try:
            with tarfile.open(fileobj=partial, mode="w:gz") as tar:
                for host in target.hosts():
                    try:
                        containers = target.log_containers(host)
                        listing = target.container_listing(host)
                    except OpsError as error:
                        _add(tar, f"{stamp}/{host}/UNREACHABLE.txt", f"{error}\n")
                        print(f"{host}: {error}", file=sys.stderr)
                        continue
                    _add(tar, f"{stamp}/{host}/containers.txt", listing)
                    for container in containers:
                        log = target.container_log(host, container)
                        # stdout and stderr come apart over SSH; the timestamps put them back in order.
                        lines = sorted(log.splitlines(keepends=True), key=lambda line: line[:35])
                        _add(tar, f"{stamp}/{host}/{container}.log", "".join(lines))
                        collected += 1
                _add(tar, f"{stamp}/status.txt", _status_text(target))
            Path(partial.name).rename(archive)
        except BaseException:
            Path(partial.name).unlink(missing_ok=True)
            raise
    print(f"{collected} container logs from {len(target.hosts())} hosts in {archive}")
    return 0


def _status_text(target: Target) -> str:
    state = cluster_state(target)
    return render_status(target, state, *assess(target, state)) + "\n"


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    member = tarfile.TarInfo(name)
    member.size, member.mtime, member.mode = len(data), int(time.time()), 0o644
    tar.addfile(member, io.BytesIO(data))


def retire(target: Target, scheduler_address: str, worker: WorkerContainer) -> str:
    """Retire the workers at WORKER's address through the scheduler: their data moves to the others first."""
    done = target.scheduler_python(RETIRE.read_text(), scheduler_address, worker.address, timeout=600)
    return done.check(f"retiring the workers of {worker.container}").stdout.strip()


def wait_until(condition: Callable[[], bool], what: str, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise OpsError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - started


def joined(target: Target, worker: WorkerContainer) -> bool:
    state = cluster_state(target)
    return any(w["host"] == worker.address and w["status"] == "running" for w in state.get("workers", {}).values())


def stop_gracefully(target: Target, name: str, timeout: float) -> tuple[WorkerContainer, str]:
    """Retire worker NAME with its restart policy lifted, wait for its container to exit; give it and the old policy."""
    state = cluster_state(target)
    if "error" in state:
        raise OpsError(state["error"])
    worker = target.worker_container(name, state["workers"])
    policy_name = target.restart_policy(worker.host, worker.container) or "no"
    target.set_restart_policy(worker.host, worker.container, "no")
    try:
        retired = retire(target, state["address"], worker)
        print(f"{worker.container} on {worker.host}: {retired}")
        if retired == "nothing to retire":  # not (or no longer) a worker of this scheduler: just stop it
            target.stop(worker.host, worker.container)
        wait_until(lambda: not target.is_running(worker.host, worker.container), f"{worker.container} to exit", timeout)
    except BaseException:
        with contextlib.suppress(OpsError):  # the error that brought us here is the one to report
            target.set_restart_policy(worker.host, worker.container, policy_name)
        raise
    return worker, policy_name


def restart_worker(target: Target, name: str, timeout: float = 300) -> int:
    """Retire worker NAME gracefully (its data moves), start its container again, wait until it has rejoined."""
    started = time.monotonic()
    worker, policy = stop_gracefully(target, name, timeout)
    target.start(worker.host, worker.container)
    target.set_restart_policy(worker.host, worker.container, policy)
    wait_until(lambda: joined(target, worker), f"{worker.container} to rejoin the scheduler", timeout)
    print(f"{worker.container} on {worker.host} restarted and rejoined in {time.monotonic() - started:.1f} s")
    return 0


def retire_worker(target: Target, name: str, timeout: float = 300) -> int:
    """Retire worker NAME gracefully (its data moves to the other workers), then remove its container."""
    worker, _ = stop_gracefully(target, name, timeout)
    target.remove(worker.host, worker.container)
    print(f"{worker.container} on {worker.host} retired and removed")
    print(target.retired_hint(worker.host))
    return 0


def scale(target: Target, n_workers: int, timeout: float = 300) -> int:
    """Run N worker containers of the local stack: more are started; extra ones are retired gracefully first."""
    replicas = target.worker_replicas()
    if n_workers < 1:
        raise OpsError(f"scale to {n_workers}: a cluster needs at least 1 worker (stop it with docker compose down)")
    for extra in replicas[n_workers:][::-1]:
        worker, _ = stop_gracefully(target, extra, timeout)
        target.remove(worker.host, worker.container)
    if n_workers > len(replicas):
        target.run_workers(n_workers)
    wait_until(lambda: len(joined_replicas(target)) == n_workers, f"{n_workers} worker containers to join", timeout)
    print(f"{n_workers} worker containers running and joined")
    return 0


def joined_replicas(target: Target) -> set[str]:
    """Give the worker replicas that run and whose worker has joined the scheduler."""
    replicas = set(target.worker_replicas(running=True))
    workers = cluster_state(target).get("workers", {})
    return replicas & set(target.worker_names(workers).values()) if replicas else set()


def tunnel(target: Target, local_port: int, duration: float | None, tracking_port: int | None = None) -> int:
    """Print the dashboard's URL on 127.0.0.1, and the MLflow tracking server's where one runs; where that takes
    SSH tunnels, hold them open until Ctrl-C (or DURATION)."""
    state = cluster_state(target)
    if "error" in state:
        raise OpsError(state["error"])
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as ways:
            dashboard = ways.enter_context(target.dashboard(state, local_port))
            print(f"dashboard: {dashboard.url}  ({dashboard.route})", flush=True)
            tracking = ways.enter_context(target.tracking(tracking_port))
            if tracking is not None:
                print(f"tracking: {tracking.url}  ({tracking.route})", flush=True)
            if not (dashboard.held or (tracking is not None and tracking.held)):
                return 0
            deadline = time.monotonic() + duration if duration else float("inf")
            while time.monotonic() < deadline:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    print("tunnel closed")
    return 0
