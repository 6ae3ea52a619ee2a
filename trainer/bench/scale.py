"""`python -m skfleet bench --scale`: the search on more worker threads than this machine has, modelled from costs measured here.

Measured here, in this process, on one thread (as a worker thread runs a task), for each row
count (`--rows`; the trainer's own split, folds and feature matrix):

- each forest of the grid (its candidates but n_estimators): a chunk task's cost beyond its
  trees (a 1-tree chunk, end to end, less its tree), one tree's cost, and one tree's answers
  for a fold's test rows; on a fold's training rows;
- the refit (the grid's costliest candidate, on all training rows): the same;
- the bytes: the feature matrix and target as sent (pickled), a fold's row indices, each
  forest's trees;
- the rate at which this machine's client copies the matrix to a local worker process.

Then each design is replayed through skfleet/chunks.py's model of the scheduler (the costliest
task first, each to the next free thread) for W worker threads, one per worker:

- whole: one task per forest (it fits and scores the forest), the refit serial on the client:
  the design before exact chunks;
- chunked: the plan's chunks, then the tasks that join and score them, the refit in chunks
  on the cluster (its trees then come back).

Both send the matrix from the client to every worker, one copy after the other at the
measured rate. Printed per W: the job's modelled wall (copies, search, refit), the search's
efficiency (the useful work, what whole tasks cost, over W x its makespan), the idle share of
the threads' time in the search, and the bytes moved.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from dask.utils import format_bytes
from distributed import Client, LocalCluster
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid, check_cv
from sklearn.utils.metaestimators import _safe_split

from skfleet import chunks, model
from skfleet.bench import paths
from skfleet.config import SearchConfig
from skfleet.forest_search import _fit_chunk, _groups

THREADS = (2, 4, 8, 16, 32, 100)
SCALE_ROWS = "2000000,10000000"


@dataclass(frozen=True)
class Forest:
    """One forest of the search, measured: its trees, and seconds of a task beyond its trees, a tree, a tree's answers."""

    trees: int
    overhead: float
    tree: float
    answer: float
    answer_overhead: float  # the test rows' encoding, once per forest scored
    tree_bytes: int

    def work(self) -> chunks.Work:
        return chunks.Work(self.trees, self.tree, self.overhead)

    def scored(self) -> float:
        """Give the seconds of scoring the forest on its fold's test rows: every tree's answers."""
        return self.answer_overhead + self.trees * self.answer

    def whole(self) -> float:
        """Give the seconds of one task that fits and scores the forest."""
        return self.overhead + self.trees * self.tree + self.scored()


@dataclass(frozen=True)
class Measured:
    """What one row count costs here: the search's forests, the refit, the bytes and the copy rate."""

    rows: int
    training_rows: int
    folds: int
    forests: list[Forest]  # one per group and fold
    refit: Forest
    data_bytes: int
    fold_bytes: int
    copy_rate: float  # bytes per second, client to a worker


def measure(rows: int, seed: int = 0, grid: dict[str, list[Any]] | None = None) -> Measured:
    """Measure the costs of ROWS synthetic rows' search with GRID (default: the seed grid), as the module says."""
    config = SearchConfig()
    X, y, _ = paths.dataset("synthetic", rows, seed)  # noqa: N806
    pipeline = model.build_pipeline(config.random_state)
    candidates = list(ParameterGrid(grid or config.pipeline_grid(pipeline)))
    size_key = next(key for key in candidates[0] if key.endswith("n_estimators"))
    splits = list(check_cv(config.cv, y, classifier=True).split(X, y))
    train, test = splits[0]
    # Warm: the first fit of a process pays its allocations and lazy imports, as a worker's first task does.
    _forest(pipeline, {**candidates[0], size_key: 1}, size_key, X.iloc[:2000], y.iloc[:2000], None, np.arange(100))
    measured_groups = [
        _forest(pipeline, candidates[members[0]], size_key, X, y, train, test) for members in _groups(candidates, size_key)
    ]
    costliest = max(candidates, key=lambda candidate: _cost_order(candidate, size_key))
    refit = _forest(pipeline, costliest, size_key, X, y, None, test)
    return Measured(
        rows=rows,
        training_rows=len(X),
        folds=len(splits),
        forests=[forest for forest in measured_groups for _ in splits],
        refit=refit,
        data_bytes=len(pickle.dumps((X, y), protocol=5)),
        fold_bytes=int(train.nbytes + test.nbytes),
        copy_rate=_copy_rate(X, y),
    )


def _cost_order(candidate: dict[str, Any], size_key: str) -> tuple[float, int]:
    depth = candidate.get(size_key.replace("n_estimators", "max_depth"))
    return (float("inf") if depth is None else depth, candidate[size_key])


def _forest(
    pipeline: Any,
    candidate: dict[str, Any],
    size_key: str,
    X: pd.DataFrame,  # noqa: N803
    y: pd.Series,
    train: Any,
    test: np.ndarray,
) -> Forest:
    """Measure one forest of CANDIDATE on the rows TRAIN (None: all) of (X, y), answering the rows TEST."""

    def chunk(trees: int) -> Any:
        return _fit_chunk(
            clone(pipeline), X, y, train=train, parameters={**candidate, size_key: trees}, size_key=size_key,
            trees=(0, trees), fit_params=None, error_score="raise",
        )  # fmt: skip

    one, one_s = _timed(lambda: chunk(1))
    two, two_s = _timed(lambda: chunk(2))
    tree = max(two_s - one_s, 1e-6)
    X_test = _safe_split(pipeline, X, y, test)[0]  # noqa: N806
    _, answer_one = _timed(lambda: one.fitted.predict_proba(X_test))
    _, answer_two = _timed(lambda: two.fitted.predict_proba(X_test))
    forest = one.fitted[-1]
    return Forest(
        trees=int(candidate[size_key]),
        overhead=max(one_s - tree, 0.0),
        tree=tree,
        answer=max(answer_two - answer_one, 1e-6),
        answer_overhead=max(2 * answer_one - answer_two, 0.0),
        tree_bytes=len(pickle.dumps(forest.estimators_[0], protocol=5)),
    )


def _timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def _copy_rate(X: pd.DataFrame, y: pd.Series) -> float:  # noqa: N803
    """Give the bytes per second at which a client here copies (X, y) to a local worker process (the second copy's)."""
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.scatter([X, y], hash=False)  # connections and imports warmed
        size = len(pickle.dumps((X, y), protocol=5))
        _, seconds = _timed(lambda: client.scatter([X, y], hash=False))
    return size / seconds


@dataclass(frozen=True)
class Modelled:
    """One design on W threads: the job's wall, the search's efficiency and idle share, the bytes moved, the tasks."""

    wall: float
    search: float
    efficiency: float
    idle: float
    bytes_moved: int
    tasks: int


def _upload(measured: Measured, threads: int) -> tuple[float, int]:
    """Give the seconds and bytes of the client's copies of the matrix to THREADS workers, the folds' indices with it."""
    seconds = threads * measured.data_bytes / measured.copy_rate
    return seconds, threads * (measured.data_bytes + measured.folds * measured.fold_bytes)


def whole(measured: Measured, threads: int) -> Modelled:
    """Model one task per forest (fit and score), the refit serial on the client."""
    costs = [forest.whole() for forest in measured.forests]
    search = chunks.makespan(costs, threads)
    copies, moved = _upload(measured, threads)
    refit = measured.refit.overhead + measured.refit.trees * measured.refit.tree
    return Modelled(
        copies + search + refit, search, sum(costs) / (threads * search), 1 - sum(costs) / (threads * search), moved, len(costs)
    )


def chunked(measured: Measured, threads: int) -> Modelled:
    """Model exact chunks: the plan's chunk tasks, then the joins (after every chunk: no overlap counted), the refit chunked."""
    useful = sum(forest.whole() for forest in measured.forests)
    works = [forest.work() for forest in measured.forests]
    counts = chunks.plan(works, threads)
    split = chunks.chunk_costs(works, counts)
    joins = [forest.scored() for forest in measured.forests] if any(count > 1 for count in counts) else []
    if not joins:  # nothing split: the forests' own tasks fit and score them, as whole's
        split = [forest.whole() for forest in measured.forests]
    search = chunks.makespan(split, threads) + (chunks.makespan(joins, threads) if joins else 0.0)
    busy = sum(split) + sum(joins)
    refit_counts = chunks.plan([measured.refit.work()], threads)
    refit_costs = chunks.chunk_costs([measured.refit.work()], refit_counts)
    tree_bytes = sum(forest.trees * forest.tree_bytes for forest in measured.forests) if joins else 0
    refit_bytes = measured.refit.trees * measured.refit.tree_bytes
    copies, uploaded = _upload(measured, threads)
    refit = chunks.makespan(refit_costs, threads) + refit_bytes / measured.copy_rate
    moved = uploaded + tree_bytes + refit_bytes
    tasks = len(split) + len(joins) + len(refit_costs) + (1 if refit_counts[0] > 1 else 0)
    return Modelled(copies + search + refit, search, useful / (threads * search), 1 - busy / (threads * search), moved, tasks)


def table(measured: Measured, threads: Sequence[int] = THREADS) -> str:
    """Give the side-by-side table of both designs on each W."""
    trees = sum(forest.trees for forest in measured.forests)
    lines = [
        f"{measured.rows:,} rows ({measured.training_rows:,} training, {measured.folds} folds): "
        f"{len(measured.forests)} forests of {trees} trees; matrix {format_bytes(measured.data_bytes)}, "
        f"copied at {format_bytes(measured.copy_rate)}/s; refit {measured.refit.trees} trees of "
        f"{measured.refit.tree:.2f} s + {measured.refit.overhead:.2f} s",
        f"{'W':>4}  {'whole: wall s':>13} {'eff':>5} {'idle':>5} {'bytes':>10}   "
        f"{'chunked: tasks':>14} {'wall s':>7} {'eff':>5} {'idle':>5} {'bytes':>10}   {'x faster':>8}",
    ]
    for count in threads:
        before, after = whole(measured, count), chunked(measured, count)
        lines.append(
            f"{count:>4}  {before.wall:>13.1f} {before.efficiency:>5.2f} {before.idle:>5.2f} "
            f"{format_bytes(before.bytes_moved):>10}   {after.tasks:>14} {after.wall:>7.1f} {after.efficiency:>5.2f} "
            f"{after.idle:>5.2f} {format_bytes(after.bytes_moved):>10}   {before.wall / after.wall:>8.2f}"
        )
    return "\n".join(lines)


def main(rows: Sequence[int], seed: int = 0, threads: Sequence[int] = THREADS) -> list[Measured]:
    """Measure each row count and print both designs' table; give the measurements."""
    found = []
    for count in rows:
        measured = measure(count, seed)
        print(table(measured, threads), flush=True)
        found.append(measured)
    return found
