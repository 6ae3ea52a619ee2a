"""Run the search with cross-validation on the Dask cluster through joblib: exhaustive, or successive halving."""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import logging
import math
import numbers
import sys
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import joblib
import pandas as pd
from dask.utils import format_bytes
from distributed import Client
from distributed.scheduler import KilledWorker
from sklearn.base import clone
from sklearn.experimental import enable_halving_search_cv  # noqa: F401 (makes HalvingGridSearchCV importable)
from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, ParameterGrid
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skfleet.backend import SkfleetBackend
from skfleet.checkpoint import FitCheckpoint
from skfleet.cluster import identity
from skfleet.config import HALVING_FACTOR, SearchConfig
from skfleet.errors import ClusterError, InputError, first_line
from skfleet.forest_search import ForestGridSearchCV, SharedTrees
from skfleet.interrupts import interruptible
from skfleet.model import check_no_leak, local_threads
from skfleet.progress import ProgressBar, live_bar

# joblib prints "Done k out of n | elapsed | remaining" about this many times a search.
PROGRESS_LINES = 10
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
                        # Fits, not tasks: a shared forest's task answers several.
                        progress.advance(sum(len(result) if isinstance(result, list) else 1 for result in results))
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


Search = GridSearchCV | HalvingGridSearchCV


@dataclass(frozen=True)
class SearchOutcome:
    """The fitted search and how long fitting took."""

    search: Search
    fit_seconds: float
    n_candidates: int
    n_fits: int
    # (candidates, training rows) per round: one round for the exhaustive search, several for halving.
    rounds: tuple[tuple[int, int], ...] = ()
    # Fits answered from the checkpoint of an earlier, interrupted run, and their fitting time then.
    n_fits_resumed: int = 0
    resumed_fit_seconds: float = 0.0
    # What the exhaustive search's shared forests saved (ForestGridSearchCV); None for other searches.
    shared_trees: SharedTrees | None = None


class PausedWatchdog:
    """Ends a search that can't go on: every worker paused at its memory limit for PATIENCE seconds.

    Dask pauses a worker at 80% of its memory limit and resumes it when memory falls. Memory
    held outside Dask's data (a fit's arrays, a deserialized frame) does not fall: with every
    worker paused, no task ever starts again and the search would wait forever. The watchdog
    polls the scheduler from a thread and interrupts the search when that lasts, and again every
    RESEND_INTERVALS polls until the search has caught it (`stop`): Python drops a KeyboardInterrupt
    that lands in a gc callback or a `__del__` (skfleet/interrupts.py), and a search whose one
    interrupt was dropped waited for ever.
    """

    RESEND_INTERVALS = 2

    def __init__(self, client: Client, patience: float, interval: float = 1.0) -> None:
        self.client = client
        self.patience = patience
        self.interval = interval
        self.reason: str | None = None
        self._stop = threading.Event()
        self._sending = threading.Lock()  # held while interrupting: none is sent once `stop` returns
        self._thread = threading.Thread(target=self._watch, name="skfleet-paused-watchdog", daemon=True)
        self._interruptible = contextlib.ExitStack()

    def __enter__(self) -> PausedWatchdog:
        if self.patience > 0:
            # Where SIGINT is ignored (a background job), interrupt_main would do nothing.
            self._interruptible.enter_context(interruptible())
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self._thread.is_alive():
            self._thread.join()
        self._interruptible.close()

    def stop(self) -> None:
        """Stop watching, and interrupting: the search has caught the interrupt, or ended."""
        with self._sending:
            self._stop.set()

    def _interrupt(self) -> bool:
        """Interrupt the main thread unless stopped; tell whether it was."""
        with self._sending:
            if self._stop.is_set():
                return False
            _thread.interrupt_main()  # joblib, waiting in the main thread, unwinds as on Ctrl-C
            return True

    def _watch(self) -> None:
        paused_since = None
        while not self._stop.wait(self.interval):
            try:
                # Bounded: a poll that never came back left the search without its watchdog.
                workers = list(identity(self.client, timeout=POLL_TIMEOUT_S)["workers"].values())
            except Exception as error:  # any failure (a lost scheduler is the search's own error): poll again
                log.debug("the paused-workers watchdog could not poll the scheduler: %s", first_line(error))
                continue
            if not workers or any(worker.get("status") != "paused" for worker in workers):
                paused_since = None
                continue
            paused_since = paused_since or time.monotonic()
            if time.monotonic() - paused_since >= self.patience:
                memory = [worker.get("metrics", {}).get("memory", 0) for worker in workers]
                limits = [worker.get("memory_limit") or 0 for worker in workers]
                self.reason = (
                    f"all {len(workers)} workers have been paused for {self.patience:.0f} s at "
                    f"{span(format_bytes(min(memory)), format_bytes(max(memory)))} of their "
                    f"{span(format_bytes(min(limits)), format_bytes(max(limits)))} memory limit: Dask pauses a worker "
                    "at 80% of its limit, and these never went back under it"
                )
                # Again until the search says it has caught one.
                while self._interrupt() and not self._stop.wait(self.interval * self.RESEND_INTERVALS):
                    pass
                return


class DroppedWorkers:
    """Says, as it happens, which worker left the cluster during the search, why, and what moved.

    A worker that sends no heartbeat for `distributed.scheduler.worker-ttl` (a frozen host, a
    network that silently drops its packets) is dropped by the scheduler once its nanny has not
    answered either (docker/dask.yaml); one whose connection breaks (a killed process) at once.
    Either way its fits run on the other workers, with the same scores. A thread polls the
    scheduler's worker list and, for a worker gone, reads why from the scheduler's event log.
    (Not a subscription to the "all" topic: some of its events, replicate's, can't be sent.)
    """

    def __init__(self, client: Client, interval: float = 1.0) -> None:
        self.client = client
        self.interval = interval
        self.dropped: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="skfleet-dropped-workers", daemon=True)

    def __enter__(self) -> DroppedWorkers:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        known: dict[str, str] | None = None
        while not self._stop.wait(self.interval):
            try:
                workers = identity(self.client)["workers"]
                for address in sorted(set(known or ()) - set(workers)):
                    self._report(address, known[address])
            except (OSError, TimeoutError, RuntimeError):
                continue  # a lost scheduler is the search's own error
            known = {address: str(worker.get("name", address)) for address, worker in workers.items()}

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


def grid_search(
    pipeline: Pipeline,
    grid: dict[str, list[Any]],
    config: SearchConfig,
    *,
    shared_trees: bool = True,
    verbose: bool = True,
) -> GridSearchCV:
    """Give the unfitted exhaustive search over `grid` (already addressed to the pipeline).

    SHARED_TREES: ForestGridSearchCV, which fits one forest per fold for the candidates that
    differ only in n_estimators and gives GridSearchCV's results exactly; else GridSearchCV,
    one fit per candidate and fold.
    """
    kind = ForestGridSearchCV if shared_trees else GridSearchCV
    return kind(
        pipeline,
        grid,
        cv=config.cv,
        scoring=config.scoring,
        n_jobs=-1,
        # Hand every fit to joblib at once: the scheduler queues them anyway, and joblib
        # then knows the total and reports "Done k out of n | elapsed | remaining".
        pre_dispatch="all",
        refit=True,
        error_score="raise",
        # 1: the "Fitting k folds for each of n candidates" line; more would print per
        # fit on the workers, not here. Progress comes from joblib (see run).
        verbose=int(verbose),
    )


def halving_search(
    pipeline: Pipeline,
    grid: dict[str, list[Any]],
    config: SearchConfig,
    factor: int = HALVING_FACTOR,
    *,
    verbose: bool = True,
) -> HalvingGridSearchCV:
    """Give the unfitted successive-halving search over `grid`, on the same cluster path.

    Round 1 scores every candidate on a sample of the training rows; each later round keeps
    the best 1/FACTOR of them and gives them FACTOR times the rows, the last round all of them
    (`min_resources="exhaust"`). Every round is cross-validated like the exhaustive search.
    """
    return HalvingGridSearchCV(
        pipeline,
        grid,
        factor=factor,
        resource="n_samples",
        min_resources="exhaust",
        cv=config.cv,
        scoring=config.scoring,
        n_jobs=-1,
        refit=True,
        error_score="raise",
        return_train_score=False,  # scikit-learn's default is True: a second scoring of every fit
        random_state=config.random_state,
        verbose=int(verbose),
    )


def planned_rounds(search: Search, n_samples: int, n_classes: int) -> list[tuple[int, int]]:
    """Give (candidates, training rows) of each round the search will run, before it runs.

    An exhaustive search is one round: every candidate on every row. For halving this is
    scikit-learn's own schedule (HalvingGridSearchCV._run_search, min_resources="exhaust",
    resource="n_samples"); `rounds_run` reads the rounds back from the fitted search.
    """
    n_candidates = len(ParameterGrid(search.param_grid))
    # scikit-learn's smallest first round for a classifier: 2 rows per class and fold.
    smallest = 2 * search.cv * n_classes
    if not isinstance(search, HalvingGridSearchCV) or n_samples < smallest:
        return [(n_candidates, n_samples)]
    factor = search.factor
    required = 1 + math.floor(math.log(n_candidates, factor))
    first = max(smallest, n_samples // factor ** (required - 1))
    possible = 1 + math.floor(math.log(n_samples // first, factor))
    rounds = []
    for index in range(min(possible, required)):
        rounds.append((n_candidates, min(factor**index * first, n_samples)))
        n_candidates = math.ceil(n_candidates / factor)
    return rounds


def rounds_run(search: Search, n_samples: int) -> list[tuple[int, int]]:
    """Give (candidates, training rows) of each round the fitted search ran."""
    if isinstance(search, HalvingGridSearchCV):
        return [(int(n), int(rows)) for n, rows in zip(search.n_candidates_, search.n_resources_, strict=True)]
    return [(len(ParameterGrid(search.param_grid)), n_samples)]


def run(
    search: Search,
    X: pd.DataFrame,  # noqa: N803
    y: pd.Series,
    client: Client,
    checkpoint: FitCheckpoint | None = None,
    paused_timeout: float = 0,
) -> SearchOutcome:
    """Give the search (exhaustive or halving) fitted on (X, y) with every fit running on `client`'s cluster.

    With a checkpoint, fits it holds are reused and new ones are added as they finish.
    PAUSED_TIMEOUT > 0 ends a search whose workers all stay paused at their memory limit that long.
    """
    check_no_leak(X.columns)
    n_candidates = len(ParameterGrid(search.param_grid))
    planned = planned_rounds(search, len(X), y.nunique())
    n_fits = sum(candidates for candidates, _ in planned) * search.cv
    shared = shared_trees_plan(search)
    if isinstance(search, HalvingGridSearchCV):
        log.info(
            "successive halving, factor %d: %s candidates on %s rows, x %d folds = %d fits on %s",
            search.factor,
            " -> ".join(str(candidates) for candidates, _ in planned),
            " -> ".join(f"{rows:,}" for _, rows in planned),
            search.cv,
            n_fits,
            client.scheduler.address,
        )
    else:
        log.info(
            "grid search: %d candidates x %d folds = %d fits%s on %s",
            n_candidates,
            search.cv,
            n_fits,
            f", answered by {shared} forest fits (the largest n_estimators of each group; --no-shared-trees fits each)"
            if shared
            else "",
            client.scheduler.address,
        )
    if checkpoint is not None and checkpoint.available:
        log.info("checkpoint %s holds %d finished fits; matching ones are reused", checkpoint.path, checkpoint.available)
    limit = memory_limit(client)
    started, started_at = time.perf_counter(), time.time()
    try:
        # GridSearchCV does not pass its verbosity to joblib; the config carries it, and
        # joblib then reports "Done k out of n | elapsed | remaining" as fits finish.
        # On a terminal a live bar replaces them.
        bar = live_bar(n_fits, sys.stderr) if search.verbose else None
        lines = PROGRESS_LINES if search.verbose and bar is None else 0
        joblib.register_parallel_backend(CLUSTER_BACKEND, ClusterBackend)
        backend = joblib.parallel_backend(CLUSTER_BACKEND, checkpoint=checkpoint, progress=bar)
        with (
            PausedWatchdog(client, paused_timeout) as watchdog,
            DroppedWorkers(client),
            backend,
            joblib.parallel_config(verbose=lines),
            # The refit, after the last fit, runs here while the cluster idles: on every local core.
            local_threads(joblib.cpu_count()),
        ):
            try:
                fit_again_after_lost_data(search, X, y, client, checkpoint)
            except KeyboardInterrupt:
                watchdog.stop()
                if watchdog.reason is None:
                    raise
                raise ClusterError(f"the search stopped: {watchdog.reason}. Fix: {MEMORY_FIX}") from None
            finally:
                if bar is not None:
                    bar.close()
    except InvalidParameterError as error:
        raise InputError(f"the grid holds a value the forest rejects: {first_line(error)}") from None
    except (KilledWorker, OSError, TimeoutError, concurrent.futures.CancelledError) as error:
        raise lost_fits_error(error, client, since=started_at, memory_limit=limit) from None
    except ValueError as error:
        if "n_splits" in str(error):
            raise InputError(f"cv={search.cv} folds need more rows of each class: {first_line(error)}") from None
        if "min_resources_" in str(error):
            raise InputError(
                f"successive halving's first round needs {2 * search.cv * y.nunique()} training rows "
                f"(2 per class and fold), more than the {len(X)} there are: use more rows or --search grid"
            ) from None
        raise
    rounds = rounds_run(search, len(X))
    return SearchOutcome(
        search=search,
        fit_seconds=time.perf_counter() - started,
        n_candidates=n_candidates,
        n_fits=sum(candidates for candidates, _ in rounds) * search.cv,
        rounds=tuple(rounds),
        n_fits_resumed=checkpoint.reused if checkpoint else 0,
        resumed_fit_seconds=checkpoint.reused_seconds if checkpoint else 0.0,
        shared_trees=getattr(search, "shared_trees_", None),
    )


def fit_again_after_lost_data(
    search: Search,
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


def shared_trees_plan(search: Search) -> int | None:
    """Give how many forests a ForestGridSearchCV will fit, or None when it fits every candidate on its own."""
    if not isinstance(search, ForestGridSearchCV):
        return None
    per_fold = search.forests_per_fold()
    return None if per_fold is None else per_fold * search.cv


@dataclass(frozen=True)
class GridEdge:
    """A parameter of the best candidate at the largest or smallest value the grid tried, with accepted values beyond."""

    param: str
    value: int | float
    side: str  # "largest" or "smallest"
    beyond: tuple[int | float, ...]  # the next values past the edge, in the grid's step, that the estimator accepts

    def describe(self) -> str:
        """Give one line: "max_depth=10 is the largest value tried: the best may lie beyond (try 12, 14, 16)"."""
        name = self.param.split("__")[-1]
        values = ", ".join(f"{value:g}" for value in self.beyond)
        return f"{name}={self.value:g} is the {self.side} value tried: the best may lie beyond (try {values})"


def grid_edges(search: Search, steps: int = 3) -> list[GridEdge]:
    """Give the best candidate's numeric parameters on an edge of the grid with values beyond it the estimator accepts.

    Up to STEPS values past the edge, in the grid's last step, are offered.
    A value the grid holds as None (max_depth=None: unbounded) lies past every number, so the
    largest number is then no edge.
    """
    grids = search.param_grid if isinstance(search.param_grid, list) else [search.param_grid]
    edges = []
    for param, best in search.best_params_.items():
        tried = [value for grid in grids for value in grid.get(param, [])]
        values = sorted({value for value in tried if _is_number(value)})
        if not _is_number(best) or len(values) < 2 or best not in (values[0], values[-1]):
            continue
        if best == values[-1]:
            if None in tried:
                continue
            side, step = "largest", values[-1] - values[-2]
        else:
            side, step = "smallest", values[0] - values[1]
        accepted = _accepted(search.estimator, param, [best + step * index for index in range(1, steps + 1)])
        if not accepted and isinstance(best, numbers.Integral) and abs(step) > 1:
            # The grid's step overshoots a bound (min_samples_leaf=5 in steps of 5): step by one.
            accepted = _accepted(
                search.estimator, param, [best + (1 if step > 0 else -1) * index for index in range(1, steps + 1)]
            )
        if accepted:
            edges.append(GridEdge(param, best, side, accepted))
    return edges


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _accepted(estimator: Any, param: str, values: list[Any]) -> tuple[Any, ...]:
    """Give those of VALUES that ESTIMATOR accepts for PARAM."""
    return tuple(value for value in values if _accepts(estimator, param, value))


def _accepts(estimator: Any, param: str, value: Any) -> bool:
    """Say whether ESTIMATOR's step that owns PARAM accepts VALUE (scikit-learn's parameter constraints)."""
    configured = clone(estimator).set_params(**{param: value})
    owner = configured.get_params()[param.rsplit("__", 1)[0]] if "__" in param else configured
    try:
        owner._validate_params()
    except (InvalidParameterError, ValueError, TypeError):
        return False
    return True


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
