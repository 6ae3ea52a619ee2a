"""Write the run folder atomically: results.json, the CV table, the model and the report; load a model back."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io

from skfleet import report_html
from skfleet.cluster import ClusterInfo
from skfleet.data import Dataset
from skfleet.errors import InputError
from skfleet.evaluate import Evaluation, Predictions
from skfleet.search import SearchOutcome, grid_edges

MODEL_FILE = "model.skops"
# Everything a run folder holds, sorted: the results, the CV table, the model, the report.
RUN_FILES = sorted(["results.json", "cv_results.csv", MODEL_FILE, *report_html.files()])
# Types the model file holds beyond what skops trusts by default: the forest's tree
# structure (scikit-learn's own), our pipeline and our encoder. Anything else is refused on load.
TRUSTED_MODEL_TYPES = [
    "sklearn.tree._tree.Tree",
    "skfleet.model.InProcessPipeline",
    "skfleet.model.CategoryCodes",
]


def new_run_id(now: datetime | None = None) -> str:
    """Give a sortable, unique run id: UTC timestamp and a short random suffix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def atomic_run_folder(output: Path, run_id: str) -> Iterator[Path]:
    """Give a hidden temporary folder that becomes `output/run_id` only if the block succeeds."""
    output.mkdir(parents=True, exist_ok=True)
    partial = output / f".{run_id}.partial"
    partial.mkdir()
    try:
        yield partial
        os.rename(partial, output / run_id)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def results_document(
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
) -> dict[str, Any]:
    """Give the contents of results.json (keys are a stable interface, see README)."""
    search = outcome.search
    return {
        "run_id": run_id,
        "best_params": _plain(search.best_params_),
        "best_cv_score": float(search.best_score_),
        "scoring": settings["scoring"],
        **asdict(evaluation),
        "n_train_rows": n_train_rows,
        "n_test_rows": n_test_rows,
        "n_rows_read": dataset.n_rows_read,
        "n_dropped_rows": dataset.n_dropped_rows,
        "target": dataset.target,
        "target_crosscheck_mismatches": crosscheck_mismatches,
        "fit_seconds": round(outcome.fit_seconds, 3),
        "n_candidates": outcome.n_candidates,
        "n_fits": outcome.n_fits,
        # One round for the exhaustive search; successive halving's rounds, on more rows each.
        "search": settings.get("search", "grid"),
        "rounds": [{"candidates": candidates, "rows": rows} for candidates, rows in outcome.rounds],
        "n_fits_resumed": outcome.n_fits_resumed,
        "resumed_fit_seconds": round(outcome.resumed_fit_seconds, 3),
        # The exhaustive search's shared forests (skfleet.forest_search), or null for halving.
        "shared_trees": None
        if outcome.shared_trees is None
        else {**asdict(outcome.shared_trees), "description": outcome.shared_trees.describe()},
        # Parameters of the best candidate at an edge of the grid: widen the grid that way.
        "grid_edges": [_plain({**asdict(edge), "description": edge.describe()}) for edge in grid_edges(search)],
        "scheduler_address": cluster.scheduler_address,
        "local_cluster": cluster.local,
        "n_workers": cluster.n_workers,
        "n_threads": cluster.n_threads,
        "versions": cluster.versions,
        "dataset": {"name": dataset.name, "layout": dataset.layout, "checksum": dataset.checksum},
        "settings": _plain(settings),
        # Beside results.json: the report page and its figures (trainer/report_html.py, trainer/figures.py).
        "report_files": report_html.files(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_run(output: Path, run_id: str, results: dict[str, Any], outcome: SearchOutcome, predictions: Predictions) -> Path:
    """Give the run folder holding results.json, cv_results.csv, the model and the report, written atomically."""
    with atomic_run_folder(output, run_id) as folder:
        (folder / "results.json").write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
        cv_results = pd.DataFrame(outcome.search.cv_results_)
        cv_results["params"] = cv_results["params"].map(lambda params: json.dumps(_plain(params), sort_keys=True))
        cv_results.to_csv(folder / "cv_results.csv", index=False)
        skops.io.dump(outcome.search.best_estimator_, folder / MODEL_FILE)
        report_html.write(folder, results, outcome.search, predictions)
    return output / run_id


def load_model(path: Path):
    """Give the fitted pipeline from a run's model.skops; refuses types skfleet never writes.

    skops loads without running code from the file, unlike pickle or joblib.
    """
    untrusted = skops.io.get_untrusted_types(file=path)
    unexpected = sorted(set(untrusted) - set(TRUSTED_MODEL_TYPES))
    if unexpected:
        raise InputError(f"{path}: holds types skfleet does not write: {', '.join(unexpected)}")
    return skops.io.load(path, trusted=untrusted)


def summary(results: dict[str, Any], folder: Path) -> str:
    """Give the short human summary printed at the end of a run."""
    params = ", ".join(f"{key.split('__')[-1]}={value}" for key, value in results["best_params"].items())
    cluster = "local cluster" if results["local_cluster"] else results["scheduler_address"]
    lines = [
        f"run {results['run_id']} on {results['dataset']['name']} ({results['n_train_rows']:,} train / "
        f"{results['n_test_rows']:,} test rows, {results['n_dropped_rows']:,} dropped without target)",
        f"  best params      {params}",
        f"  best CV {results['scoring']:<8} {results['best_cv_score']:.4f}",
        f"  test accuracy    {results['test_accuracy']:.4f}  (majority baseline {results['baseline_accuracy']:.4f})",
        f"  test ROC AUC     {results['test_roc_auc']:.4f}",
        f"  fit              {results['n_fits']} fits in {results['fit_seconds']:.1f} s on {cluster} "
        f"({results['n_workers']} workers, {results['n_threads']} threads)",
        f"  written to       {folder}",
    ]
    if results.get("search") == "halving":
        lines.insert(-2, f"  search           {report_html.halving_text(results)}")
    if results.get("shared_trees"):
        lines.insert(-1, f"  shared trees     {results['shared_trees']['description']}")
    for edge in results.get("grid_edges", []):
        lines.insert(-1, f"  grid edge        {edge['description']}")
    if results["n_fits_resumed"]:
        lines.insert(
            -1,
            f"  resumed          {results['n_fits_resumed']} of {results['n_fits']} fits from the checkpoint of an "
            f"interrupted run (saved {results['resumed_fit_seconds']:.1f} s of fitting)",
        )
    return "\n".join(lines)


def result_line(results: dict[str, Any], folder: Path) -> str:
    """Give the run's result for scripts (`--json`): results.json's keys and the run folder, as one line of JSON."""
    return json.dumps({**results, "run_folder": str(folder)}, separators=(",", ":"))


def _plain(value: Any) -> Any:
    """Give a JSON-ready copy: numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
