"""Run the grid search with cross-validation on the Dask cluster through joblib."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any

import joblib
import pandas as pd
from distributed import Client
from distributed.scheduler import KilledWorker
from joblib._dask import DaskDistributedBackend
from sklearn.model_selection import GridSearchCV, ParameterGrid
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from trainer.config import SearchConfig
from trainer.errors import ClusterError, InputError, first_line
from trainer.model import check_no_leak

# joblib prints "Done k out of n | elapsed | remaining" about this many times a search.
PROGRESS_LINES = 10


CLUSTER_BACKEND = "skfleet-dask"

log = logging.getLogger(__name__)


class ClusterBackend(DaskDistributedBackend):
    """joblib's Dask backend, never short-circuited into the calling process.

    joblib runs a Parallel call in-process when its backend reports a single slot: on a
    cluster of one single-threaded worker the whole search would run on the client.
    Reporting at least two keeps every fit on the cluster; the scheduler queues the rest.
    """

    def effective_n_jobs(self, n_jobs):
        return max(2, super().effective_n_jobs(n_jobs))


@dataclass(frozen=True)
class SearchOutcome:
    """The fitted search and how long fitting took."""

    search: GridSearchCV
    fit_seconds: float
    n_candidates: int
    n_fits: int


def grid_search(
    pipeline: Pipeline,
    grid: dict[str, list[Any]],
    config: SearchConfig,
    *,
    verbose: bool = True,
) -> GridSearchCV:
    """Give the unfitted GridSearchCV over `grid` (already addressed to the pipeline)."""
    return GridSearchCV(
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


def run(search: GridSearchCV, X: pd.DataFrame, y: pd.Series, client: Client) -> SearchOutcome:  # noqa: N803
    """Give the search fitted on (X, y) with every fit running on `client`'s cluster."""
    check_no_leak(X.columns)
    n_candidates = len(ParameterGrid(search.param_grid))
    n_fits = n_candidates * search.cv
    log.info("grid search: %d candidates x %d folds = %d fits on %s", n_candidates, search.cv, n_fits, client.scheduler.address)
    started = time.perf_counter()
    try:
        # GridSearchCV does not pass its verbosity to joblib; the config carries it, and
        # joblib then reports "Done k out of n | elapsed | remaining" as fits finish.
        progress = PROGRESS_LINES if search.verbose else 0
        joblib.register_parallel_backend(CLUSTER_BACKEND, ClusterBackend)
        with joblib.parallel_backend(CLUSTER_BACKEND), joblib.parallel_config(verbose=progress):
            search.fit(X, y)
    except InvalidParameterError as error:
        raise InputError(f"the grid holds a value the forest rejects: {first_line(error)}") from None
    except KilledWorker as error:
        raise ClusterError(
            f"a worker died while fitting ({first_line(error)}); a worker that runs out of memory is "
            "restarted and its task retried until it gives up: raise SKFLEET_WORKER_MEMORY_LIMIT "
            "or lower --sample-rows"
        ) from None
    except (OSError, TimeoutError, concurrent.futures.CancelledError) as error:
        raise ClusterError(f"lost the cluster during the search: {type(error).__name__}: {first_line(error)}") from None
    except ValueError as error:
        if "n_splits" in str(error):
            raise InputError(f"cv={search.cv} folds need more rows of each class: {first_line(error)}") from None
        raise
    return SearchOutcome(
        search=search,
        fit_seconds=time.perf_counter() - started,
        n_candidates=n_candidates,
        n_fits=n_fits,
    )
