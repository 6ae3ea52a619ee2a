"""A finished run, recorded: the one place where the runtime's objects become results.json's plain values.

The search, its evaluation on the test set, the cluster it ran on and the data it read go in;
a skfleet.results.Results comes out, with nothing in it but numbers, strings, lists and dicts.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from skfleet.advice import grid_edges
from skfleet.model import DEFAULT_KIND
from skfleet.results import Results

if TYPE_CHECKING:
    from skfleet.cluster import ClusterInfo
    from skfleet.data import Dataset
    from skfleet.evaluate import Evaluation
    from skfleet.search import SearchOutcome


def record(
    *,
    run_id: str,
    dataset: Dataset,
    outcome: SearchOutcome,
    evaluation: Evaluation,
    cluster: ClusterInfo,
    n_train_rows: int,
    n_test_rows: int,
    settings: dict[str, Any],
    crosscheck_mismatches: int | None,
    report_files: list[str],
) -> Results:
    """Give the results of a finished search, evaluated on the test set."""
    search = outcome.search
    return Results(
        run_id=run_id,
        best_params=plain(search.best_params_),
        best_cv_score=float(search.best_score_),
        scoring=settings["scoring"],
        **asdict(evaluation),
        n_train_rows=n_train_rows,
        n_test_rows=n_test_rows,
        n_rows_read=dataset.n_rows_read,
        n_dropped_rows=dataset.n_dropped_rows,
        target=dataset.target,
        target_crosscheck_mismatches=crosscheck_mismatches,
        fit_seconds=round(outcome.fit_seconds, 3),
        n_candidates=outcome.n_candidates,
        n_fits=outcome.n_fits,
        search=settings.get("search", "grid"),
        rounds=[{"candidates": candidates, "rows": rows} for candidates, rows in outcome.rounds],
        n_fits_resumed=outcome.n_fits_resumed,
        resumed_fit_seconds=round(outcome.resumed_fit_seconds, 3),
        shared_trees=None
        if outcome.shared_trees is None
        else {**asdict(outcome.shared_trees), "description": outcome.shared_trees.describe()},
        grid_edges=[plain({**asdict(edge), "description": edge.describe()}) for edge in grid_edges(search)],
        scheduler_address=cluster.scheduler_address,
        local_cluster=cluster.local,
        n_workers=cluster.n_workers,
        n_threads=cluster.n_threads,
        versions=cluster.versions,
        dataset={"name": dataset.name, "layout": dataset.layout, "checksum": dataset.checksum},
        settings=plain(settings),
        report_files=list(report_files),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=settings.get("model", DEFAULT_KIND),
    )


def plain(value: Any) -> Any:
    """Give a JSON-ready copy: numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
