"""What keeps a search on the cluster honest: the checkpointing backend, two watchdogs, and what a lost fit means.

skfleet.search runs the searches inside these guards:

- ClusterBackend: every fit through skfleet's joblib backend, each finished fit checkpointed and
  a fit the checkpoint holds answered from it (skfleet/checkpoint.py);
- PausedWatchdog: ends a search whose every worker stays paused at its memory limit;
- SilentScheduler: ends a search whose scheduler stops answering (frozen, paused, cut off);
- DroppedWorkers: says which worker left mid-search, and why;
- fit_again_after_lost_data, lost_fits_error, memory_limit: a search whose data went with a
  dropped worker fitted again, and any other lost fit explained (the scheduler, memory, a
  worker that kept dying), with the workers' memory limit in words.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pandas as pd
from dask.utils import format_bytes
from distributed import Client
from distributed.scheduler import KilledWorker
from sklearn.base import BaseEstimator

from skfleet.backend import SkfleetBackend
from skfleet.checkpoint import FitCheckpoint
from skfleet.cluster import identity
from skfleet.errors import ClusterError, first_line
from skfleet.interrupts import interruptible
from skfleet.poller import Poller
from skfleet.progress import ProgressBar

# Times a search is fitted again after a dropped worker took data its fits needed.
LOST_DATA_RETRIES = 3
# How Dask words the cancellation of a task whose data was lost (not a lost scheduler's "scheduler-connection-lost").
LOST_DATA_REASONS = ("lost dependencies", "already forgotten")


CLUSTER_BACKEND = "skfleet-dask"
# The paused-workers watchdog's deadline for the scheduler's answer to one poll (seconds).
POLL_TIMEOUT_S = 30
MEMORY_FIX = (
    "raise the workers' memory limit (SKFLEET_WORKER_MEMORY_LIMIT on the local stack, dask_worker_memory_limit "
    "on VMs), or make the fits smaller (--sample-rows, lower max_depth or n_estimators)"
)

log = logging.getLogger(__name__)


class ClusterBackend(SkfleetBackend):
    """The users' backend (skfleet/backend.py: every fit on the cluster, nested work in its task), with checkpoints.

    The trainer checked versions as it connected. With a checkpoint, each finished fit is stored as
    its result reaches the client, and a fit the checkpoint already holds is answered from it
    instead of being sent to the cluster.
    """

    def __init__(
        self,
        *args: Any,
        checkpoint: FitCheckpoint | None = None,
        progress: ProgressBar | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, check_versions=False, **kwargs)
        self.checkpoint = checkpoint
        self.progress = progress

    def submit(self, func, callback=None):
        """Send a batch of joblib tasks to the cluster, less the fits the checkpoint holds."""
        checkpoint, progress = self.checkpoint, self.progress
        if checkpoint is None and progress is None:
            return super().submit(func, callback)
        keys: list[str | None] = [None] * len(func.items)
        results: list[Any] = [None] * len(func.items)
        if checkpoint:
            keys = [checkpoint.key(function, args, kwargs) for function, args, kwargs in func.items]
            results = [checkpoint.get(key, kwargs) for key, (_, _, kwargs) in zip(keys, func.items, strict=True)]
        missing = [index for index, result in enumerate(results) if result is None]

        def finished(out):
            # A finished batch is a list of results; anything else is joblib's wrapped exception.
            try:
                if isinstance(out, list):
                    for index, result in zip(missing, out, strict=True):
                        if checkpoint:
                            checkpoint.put(keys[index], result)
                        results[index] = result
                    out = results
                    if progress:
                        # Fits, not tasks: a shared forest's task answers several; a refit is none.
                        progress.advance(sum(_fits_in(result) for result in results))
            except Exception as error:  # joblib raises it; without a callback it would wait forever
                out = error
            callback(out)

        if not missing:
            # joblib waits for the callback, from the event loop's thread as for a real batch.
            done = concurrent.futures.Future()
            done.get = done.result  # joblib's AsyncResult API, as the parent's futures
            done.set_result(results)
            self.client.loop.add_callback(finished, [])  # no result to add: every one is known
            return done
        remaining = func if len(missing) == len(keys) else SimpleNamespace(items=[func.items[index] for index in missing])
        return super().submit(remaining, finished)


def _fits_in(result: Any) -> int:
    """Give how many of the search's fits a task's RESULT answers: a fit (a dict), a shared forest's (a list), or none."""
    if isinstance(result, list):
        return len(result)
    return 1 if isinstance(result, dict) else 0


class Watchdog(Poller):
    """Polls from a thread and, when the search can't go on, says why (`reason`) and interrupts it.

    It interrupts the main thread, where joblib waits, as Ctrl-C would, and again every
    RESEND_INTERVALS polls until the search has caught it (`stop`): Python drops a
    KeyboardInterrupt that lands in a gc callback or a `__del__` (skfleet/interrupts.py), and a
    search whose one interrupt was dropped waited for ever. PATIENCE 0 turns it off.
    """

    RESEND_INTERVALS = 2
    # A poll may wait out its deadline on a silent scheduler, and the search's end must not: once
    # stopped, a watchdog interrupts nothing (`_interrupt`), so a late poll is harmless.
    join_timeout = 1.0

    def __init__(self, client: Client, patience: float, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.client = client
        self.patience = patience
        self.reason: str | None = None
        self._sending = threading.Lock()  # held while interrupting: none is sent once `stop` returns
        self._interruptible = contextlib.ExitStack()

    def __enter__(self) -> Watchdog:
        if self.patience > 0:
            # Where SIGINT is ignored (a background job), interrupt_main would do nothing.
            self._interruptible.enter_context(interruptible())
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        self._interruptible.close()

    def stop(self) -> None:
        """Stop watching, and interrupting: the search has caught the interrupt, or ended."""
        with self._sending:
            super().stop()

    def _interrupt(self) -> bool:
        """Interrupt the main thread unless stopped; tell whether it was."""
        with self._sending:
            if self.wait(0):
                return False
            _thread.interrupt_main()  # joblib, waiting in the main thread, unwinds as on Ctrl-C
            return True

    def end(self, reason: str) -> bool:
        """Give REASON as why the search stopped, and interrupt it until it has caught it; give False (stop polling)."""
        self.reason = reason
        while self._interrupt() and not self.wait(self.interval * self.RESEND_INTERVALS):
            pass
        return False


class PausedWatchdog(Watchdog):
    """Ends a search that can't go on: every worker paused at its memory limit for PATIENCE seconds.

    Dask pauses a worker at 80% of its memory limit and resumes it when memory falls. Memory
    held outside Dask's data (a fit's arrays, a deserialized frame) does not fall: with every
    worker paused, no task ever starts again and the search would wait forever.
    """

    thread_name = "skfleet-paused-watchdog"

    def __init__(self, client: Client, patience: float, interval: float = 1.0) -> None:
        super().__init__(client, patience, interval)
        self._paused_since: float | None = None

    def poll(self) -> bool:
        try:
            # Bounded: a poll that never came back left the search without its watchdog.
            workers = list(identity(self.client, timeout=POLL_TIMEOUT_S)["workers"].values())
        except Exception as error:  # any failure (a lost scheduler is the search's own error): poll again
            log.debug("the paused-workers watchdog could not poll the scheduler: %s", first_line(error))
            return True
        if not workers or any(worker.get("status") != "paused" for worker in workers):
            self._paused_since = None
            return True
        self._paused_since = self._paused_since or time.monotonic()
        if time.monotonic() - self._paused_since < self.patience:
            return True
        memory = [worker.get("metrics", {}).get("memory", 0) for worker in workers]
        limits = [worker.get("memory_limit") or 0 for worker in workers]
        return self.end(
            f"all {len(workers)} workers have been paused for {self.patience:.0f} s at "
            f"{span(format_bytes(min(memory)), format_bytes(max(memory)))} of their "
            f"{span(format_bytes(min(limits)), format_bytes(max(limits)))} memory limit: Dask pauses a worker "
            "at 80% of its limit, and these never went back under it. Fix: " + MEMORY_FIX
        )


class SilentScheduler(Watchdog):
    """Ends a search whose scheduler has not answered for PATIENCE seconds: frozen, paused, or cut off.

    A frozen scheduler (`docker pause`, a suspended VM, a blocked event loop) keeps its
    connections open and says nothing, so the client waits for the fits' results for ever: no
    error ever comes. Each poll asks the scheduler for its identity, bounded by the time left
    of PATIENCE; a killed scheduler closes its connections, and the search's own error says so
    first. A busy scheduler answers within a second (docs/reliability.md).
    """

    thread_name = "skfleet-scheduler-watchdog"

    def __init__(self, client: Client, patience: float, interval: float = 1.0) -> None:
        super().__init__(client, patience, interval)
        self._answered = time.monotonic()

    def start(self) -> None:
        self._answered = time.monotonic()
        super().start()

    def poll(self) -> bool:
        left = self.patience - (time.monotonic() - self._answered)
        try:
            identity(self.client, timeout=max(left, self.interval))
        except Exception as error:  # no answer (a timeout, a closed connection): silent so far
            log.debug("the scheduler did not answer the watchdog: %s", first_line(error))
        else:
            self._answered = time.monotonic()
            return True
        silent = time.monotonic() - self._answered
        if silent < self.patience:
            return True
        return self.end(
            f"the scheduler at {self.client.scheduler.address} has not answered for {silent:.0f} s "
            f"(--scheduler-timeout {self.patience:g}): it is frozen, paused or cut off from this machine. "
            "Fix: check its container or VM (docker ps, docker logs), then run the same command again: "
            "the fits finished so far are reused from the checkpoint"
        )


class DroppedWorkers(Poller):
    """Says, as it happens, which worker left the cluster during the search, why, and what moved.

    A worker that sends no heartbeat for `distributed.scheduler.worker-ttl` (a frozen host, a
    network that silently drops its packets) is dropped by the scheduler once its nanny has not
    answered either (docker/dask.yaml); one whose connection breaks (a killed process) at once.
    Either way its fits run on the other workers, with the same scores. A thread polls the
    scheduler's worker list and, for a worker gone, reads why from the scheduler's event log.
    (Not a subscription to the "all" topic: some of its events, replicate's, can't be sent.)
    """

    thread_name = "skfleet-dropped-workers"
    join_timeout = 1.0  # its poll may wait out POLL_TIMEOUT_S on a silent scheduler; a late one only logs

    def __init__(self, client: Client, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.client = client
        self.dropped: list[str] = []
        self._known: dict[str, str] | None = None  # address: name, as the last poll found them

    def poll(self) -> bool:
        try:
            workers = identity(self.client, timeout=POLL_TIMEOUT_S)["workers"]
            for address in sorted(set(self._known or ()) - set(workers)):
                self._report(address, self._known[address])
        except (OSError, TimeoutError, RuntimeError):
            return True  # a lost scheduler is the search's own error
        self._known = {address: str(worker.get("name", address)) for address, worker in workers.items()}
        return True

    def _report(self, address: str, name: str) -> None:
        removed = [message for _, message in self.client.get_events(address) if message.get("action") == "remove-worker"]
        if removed and removed[-1].get("expected"):
            return  # retired on purpose (ops.sh retire-worker, scale): its data moved first
        silent = [
            message
            for _, message in self.client.get_events("scheduler")
            if message.get("action") == "worker-ttl-timed-out" and address in message.get("workers", ())
        ]
        if silent:
            why = (
                f"it sent no heartbeat for {silent[-1]['ttl']:.0f} s and its nanny did not answer either "
                "(a frozen host, or a network that drops its packets; distributed.scheduler.worker-ttl)"
            )
        else:
            why = "its connection to the scheduler broke (its process died, its host went away, or its network did)"
        moved = len(removed[-1].get("processing-tasks", ())) if removed else 0
        self.dropped.append(address)
        log.warning(
            "worker %s dropped by the scheduler: %s; its %d running tasks move to the other workers, "
            "the scores stay those of an undisturbed run",
            f"{name} ({address})" if name != address else address,
            why,
            moved,
        )


def fit_again_after_lost_data(
    search: BaseEstimator,
    X: pd.DataFrame,  # noqa: N803
    y: pd.Series,
    client: Client,
    checkpoint: FitCheckpoint | None,
) -> None:
    """Fit SEARCH; when fits were cancelled because a dropped worker took data with it, fit it again.

    The data a search scatters sits on every worker (skfleet's backend), but data scattered
    while a worker was already silent, not yet dropped, may sit on that worker alone: dropped,
    it takes that data with it and Dask cancels every fit that needs it. Fitting again scatters
    the data to the workers left; the fits already done come from the checkpoint. Scores don't
    change: every fit is seeded. The checkpoint's count of fits resumed from an earlier run is
    kept as the first try found it.
    """
    first_try: tuple[int, float] | None = None
    for attempt in range(1, LOST_DATA_RETRIES + 2):
        try:
            search.fit(X, y)
            break
        except concurrent.futures.CancelledError as error:
            workers = _live_workers(client)
            lost_data = any(reason in str(error) for reason in LOST_DATA_REASONS)
            if attempt > LOST_DATA_RETRIES or not lost_data or not workers:
                raise
            if checkpoint is not None and first_try is None:
                first_try = (checkpoint.reused, checkpoint.reused_seconds)
            log.warning(
                "fits were cancelled (%s): data went with a dropped worker; the search runs again on the %d workers "
                "left, the fits done so far reused from the checkpoint (try %d of %d)",
                first_line(error),
                workers,
                attempt + 1,
                LOST_DATA_RETRIES + 1,
            )
    if checkpoint is not None and first_try is not None:
        checkpoint.reused, checkpoint.reused_seconds = first_try


def _live_workers(client: Client) -> int:
    try:
        return len(identity(client)["workers"]) if client.status == "running" else 0
    except (OSError, TimeoutError, RuntimeError):
        return 0


def memory_limit(client: Client) -> str:
    """Give the workers' memory limit in words: "4.00 GiB", "1.00 GiB to 4.00 GiB" or "no"."""
    limits = sorted({worker.get("memory_limit") or 0 for worker in identity(client)["workers"].values()})
    if not limits or not limits[-1]:
        return "no"
    return span(format_bytes(limits[0]), format_bytes(limits[-1]))


def span(low: str, high: str) -> str:
    """Give "low to high", or one value when both are the same."""
    return low if low == high else f"{low} to {high}"


def lost_fits_error(error: BaseException, client: Client, *, since: float, memory_limit: str) -> ClusterError:
    """Give the error that explains why fits were lost: the scheduler, memory, or a worker that kept dying."""
    summary = f"{type(error).__name__}: {first_line(error)}"
    lost = ClusterError(f"lost the cluster during the search: {summary}")
    if client.status != "running" or "scheduler-connection-lost" in str(error):
        return lost
    try:
        # The nannies' record of each worker restarted for exceeding its memory limit.
        restarts = [event for stamp, event in client.get_events("worker-restart-memory") if stamp >= since]
    except (OSError, TimeoutError):
        return lost
    if restarts:
        times = "once" if len(restarts) == 1 else f"{len(restarts)} times"
        peak = format_bytes(max(event.get("rss", 0) for event in restarts))
        return ClusterError(
            f"the fits need more memory than a worker has: Dask restarted a worker {times} for going over 95% of its "
            f"{memory_limit} memory limit (at {peak}), and the search could not finish. Fix: {MEMORY_FIX}"
        )
    if isinstance(error, KilledWorker):
        return ClusterError(
            f"a fit killed the worker running it each time it was tried ({summary}); workers have {memory_limit} "
            f"memory limit. If the kernel's OOM killer stopped them, {MEMORY_FIX}"
        )
    return ClusterError(f"lost fits during the search: {summary}")
