"""Your own scikit-learn code on a cluster against local loky, side by side: the numbers of docs/cluster-pays.md.

Run from a client install (only scikit-learn, dask, distributed and skfleet are needed) with a
cluster at --scheduler; scripts/bench-own-code.sh starts the stack and runs it. Two parts, each
in interleaved rounds (A B C ..., A B C ...), every search checked for the loky search's split
scores:

1. digits: the README's forest search on scikit-learn's digits, 20 candidates x 3 folds.
   GridSearchCV with n_jobs=-1 as a plain script runs it (loky, this machine's cores); on the
   cluster under joblib's "dask" backend (what users had); under "skfleet"; and
   ForestGridSearchCV under "skfleet".
2. per-fit time: the same 36 fits with forests of 1 to 64 trees, loky against "skfleet": what
   the cluster adds to a search, against how long its fits take.
3. overheads: a task's round trip, and the time to send data of 1.5 to 150 MiB to a worker.

    python scripts/bench_own_code.py --scheduler tcp://127.0.0.1:8786 [--rounds 3] [--part digits|sweep|overhead|all]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
from distributed import Client, get_task_stream
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV

import skfleet
from skfleet.cluster import identity
from skfleet.forest_search import ForestGridSearchCV

DIGITS_GRID = {"n_estimators": [25, 50, 100, 200], "max_depth": [4, 8, 12, 16, None]}
SWEEP_GRID = {"max_depth": [6, 10, None], "min_samples_leaf": [1, 2, 4, 8]}
SWEEP_TREES = (1, 4, 16, 64)


def timed_search(search: GridSearchCV, X: Any, y: Any, client: Client | None, backend: str | None) -> dict[str, Any]:  # noqa: N803
    """Fit SEARCH under joblib's BACKEND (None: as a plain script does, loky); give its wall time, split scores, tasks."""
    chosen = joblib.parallel_backend(backend) if backend else contextlib.nullcontext()
    with get_task_stream(client) if client else contextlib.nullcontext() as stream, chosen:
        started = time.perf_counter()
        search.fit(X, y)
        wall = time.perf_counter() - started
    calls: dict[str, int] = {}
    for task in stream.data if stream else []:
        found = re.match(r"(?:mixed_)?batch_of_(\w+?)_(\d+)_calls", str(task["key"]))
        name, count = (found[1], int(found[2])) if found else (str(task["key"]).split("-")[0], 1)
        calls[name] = calls.get(name, 0) + count
    splits = [search.cv_results_[f"split{i}_test_score"] for i in range(search.n_splits_)]
    return {
        "wall": wall,
        "splits": np.asarray(splits),
        "tasks": len(stream.data) if stream else 0,
        "tree_tasks": sum(count for name, count in calls.items() if "build_trees" in name),
        "fit_time": float(np.mean(search.cv_results_["mean_fit_time"])),
    }


def rounds_of(paths: dict[str, Callable[[], dict[str, Any]]], rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Run every path once per round, in turn; give each path's runs."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            runs[name].append(run())
    return runs


def report(title: str, runs: dict[str, list[dict[str, Any]]], reference: str) -> None:
    print(f"\n{title}")
    print(f"{'path':<34}{'wall s, median (range)':<26}{'x loky, per round':<24}{'tasks':>7}{'tree tasks':>12}  scores")
    for name, found in runs.items():
        walls = [run["wall"] for run in found]
        ratios = [run["wall"] / ref["wall"] for run, ref in zip(found, runs[reference], strict=True)]
        same = all(np.array_equal(run["splits"], runs[reference][0]["splits"]) for run in found)
        print(
            f"{name:<34}{statistics.median(walls):6.2f} ({min(walls):.2f}-{max(walls):.2f}){'':<8}"
            f"{' '.join(f'{ratio:.2f}' for ratio in ratios):<24}{found[0]['tasks']:>7}{found[0]['tree_tasks']:>12}  "
            f"{'equal' if same else 'DIFFER'}"
        )


def digits(client: Client, rounds: int) -> None:
    X, y = load_digits(return_X_y=True)  # noqa: N806

    def search(kind: type[GridSearchCV]) -> GridSearchCV:
        return kind(RandomForestClassifier(random_state=0), DIGITS_GRID, cv=3, n_jobs=-1)

    paths = {
        "loky, GridSearchCV": lambda: timed_search(search(GridSearchCV), X, y, None, None),
        'cluster "dask", GridSearchCV': lambda: timed_search(search(GridSearchCV), X, y, client, "dask"),
        'cluster "skfleet", GridSearchCV': lambda: timed_search(search(GridSearchCV), X, y, client, "skfleet"),
        'cluster "skfleet", Forest...': lambda: timed_search(search(ForestGridSearchCV), X, y, client, "skfleet"),
    }
    report(f"digits forest search: 20 candidates x 3 folds, {rounds} rounds", rounds_of(paths, rounds), "loky, GridSearchCV")


def sweep(client: Client, rounds: int) -> None:
    X, y = make_classification(n_samples=5_000, n_features=20, n_informative=8, random_state=0)  # noqa: N806
    print(f"\nper-fit time: 12 candidates x 3 folds = 36 fits on 5,000 x 20 rows, {rounds} rounds")
    print(f"{'trees':>5}{'fit s (loky)':>14}{'loky wall':>11}{'cluster wall':>14}{'x loky':>8}{'extra s':>9}  scores")
    for trees in SWEEP_TREES:

        def search(trees: int = trees) -> GridSearchCV:
            return GridSearchCV(RandomForestClassifier(n_estimators=trees, random_state=0), SWEEP_GRID, cv=3, n_jobs=-1)

        runs = rounds_of(
            {
                "loky": lambda search=search: timed_search(search(), X, y, None, None),
                "skfleet": lambda search=search: timed_search(search(), X, y, client, "skfleet"),
            },
            rounds,
        )
        loky = statistics.median(run["wall"] for run in runs["loky"])
        ours = statistics.median(run["wall"] for run in runs["skfleet"])
        fit = statistics.median(run["fit_time"] for run in runs["loky"])
        same = all(np.array_equal(run["splits"], runs["loky"][0]["splits"]) for run in runs["skfleet"])
        scores = "equal" if same else "DIFFER"
        print(f"{trees:>5}{fit:>14.3f}{loky:>11.2f}{ours:>14.2f}{ours / loky:>8.2f}{ours - loky:>9.2f}  {scores}")


def _nothing() -> None:
    return None


def overhead(client: Client, rounds: int) -> None:
    """The two costs a cluster adds to any search: a round trip per task, and sending the data once."""
    print(f"\noverheads, median of {rounds} rounds")
    per_task = []
    for _ in range(rounds):
        with joblib.parallel_backend("skfleet"):
            started = time.perf_counter()
            joblib.Parallel(batch_size=1)(joblib.delayed(_nothing)() for _ in range(400))
            per_task.append((time.perf_counter() - started) / 400)
    print(f"a task's round trip (400 empty tasks, batch_size=1): {statistics.median(per_task) * 1000:.1f} ms")
    for rows in (10_000, 100_000, 1_000_000):
        data = np.random.default_rng(0).random((rows, 20))
        seconds = []
        for _ in range(rounds):
            started = time.perf_counter()
            future = client.scatter(data, direct=True, hash=False)
            seconds.append(time.perf_counter() - started)
            client.cancel(future)
        size = data.nbytes / 2**20
        print(f"sending {rows:>9,} x 20 float64 ({size:6.1f} MiB) to a worker: {statistics.median(seconds):.3f} s")


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--scheduler", required=True, metavar="ADDRESS")
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--part", choices=("digits", "sweep", "overhead", "all"), default="all")
    args = cli.parse_args()
    with skfleet.connect(args.scheduler, timeout=30) as client:
        workers = identity(client)["workers"]
        threads = sum(worker["nthreads"] for worker in workers.values())
        print(f"cluster {args.scheduler}: {len(workers)} workers, {threads} threads; this machine: {joblib.cpu_count()} cores")
        if args.part in ("digits", "all"):
            digits(client, args.rounds)
        if args.part in ("sweep", "all"):
            sweep(client, args.rounds)
        if args.part in ("overhead", "all"):
            overhead(client, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
