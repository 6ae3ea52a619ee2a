"""Run the search with cross-validation on the Dask cluster through joblib: exhaustive, or successive halving.

The searches run inside skfleet/guards.py's guards: the checkpointing backend, the paused-workers
and dropped-workers watchdogs, a fit again when a dropped worker took the data, and the words for
a fit that was lost.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import joblib
import pandas as pd
from distributed import Client
from distributed.scheduler import KilledWorker
from sklearn.experimental import enable_halving_search_cv  # noqa: F401 (makes HalvingGridSearchCV importable)
from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, ParameterGrid
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skfleet.checkpoint import FitCheckpoint
from skfleet.config import HALVING_FACTOR, SearchConfig
from skfleet.errors import ClusterError, InputError, first_line
from skfleet.forest_search import ForestGridSearchCV, SharedTrees
from skfleet.guards import (
    CLUSTER_BACKEND,
    ClusterBackend,
    DroppedWorkers,
    PausedWatchdog,
    SilentScheduler,
    fit_again_after_lost_data,
    lost_fits_error,
    memory_limit,
)
from skfleet.model import check_no_leak, local_threads
from skfleet.progress import live_bar

# joblib prints "Done k out of n | elapsed | remaining" about this many times a search.
PROGRESS_LINES = 10

log = logging.getLogger(__name__)


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
    scheduler_timeout: float = 0,
) -> SearchOutcome:
    """Give the search (exhaustive or halving) fitted on (X, y) with every fit running on `client`'s cluster.

    With a checkpoint, fits it holds are reused and new ones are added as they finish.
    PAUSED_TIMEOUT > 0 ends a search whose workers all stay paused at their memory limit that long;
    SCHEDULER_TIMEOUT > 0 one whose scheduler has not answered that long (exit 3, the checkpoint kept).
    """
    check_no_leak(X.columns)
    n_candidates = len(ParameterGrid(search.param_grid))
    planned = planned_rounds(search, len(X), y.nunique())
    n_fits = sum(candidates for candidates, _ in planned) * search.cv
    shared = shared_trees_plan(search)
    ensemble = search.ensemble() if shared else None
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
            f", answered by {shared} {ensemble.name} fits (the largest {ensemble.size} of each group; "
            "--no-shared-trees fits each)"
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
            PausedWatchdog(client, paused_timeout) as paused,
            SilentScheduler(client, scheduler_timeout) as silent,
            DroppedWorkers(client),
            backend,
            joblib.parallel_config(verbose=lines),
            # The refit, after the last fit, runs here while the cluster idles: on every local core.
            local_threads(joblib.cpu_count()),
        ):
            try:
                fit_again_after_lost_data(search, X, y, client, checkpoint)
            except KeyboardInterrupt:
                for watchdog in (paused, silent):
                    watchdog.stop()
                reason = paused.reason or silent.reason
                if reason is None:
                    raise
                raise ClusterError(f"the search stopped: {reason}") from None
            finally:
                if bar is not None:
                    bar.close()
    except InvalidParameterError as error:
        raise InputError(f"the grid holds a value the model rejects: {first_line(error)}") from None
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


def shared_trees_plan(search: Search) -> int | None:
    """Give how many models (forests, boosting models) a ForestGridSearchCV will fit, or None: each candidate alone."""
    if not isinstance(search, ForestGridSearchCV):
        return None
    per_fold = search.forests_per_fold()
    return None if per_fold is None else per_fold * search.cv
