"""What a run found, as plain data: Results, which writes and reads results.json; the atomic run folder; the summary.

A pure record: nothing here needs the cluster, the search or the data, so reading a run folder
(`skfleet track`, ops, a notebook) loads none of them. skfleet/record.py makes a Results from a
finished run; skfleet/run_files.py writes the CV table and the model beside results.json;
skfleet/report.py writes the whole run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skfleet.errors import InputError

RESULTS_FILE = "results.json"
CV_RESULTS_FILE = "cv_results.csv"
MODEL_FILE = "model.skops"
# What a run folder holds before its report: the results, the CV table (every candidate), the model.
FILES = [RESULTS_FILE, CV_RESULTS_FILE, MODEL_FILE]


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


@dataclass(frozen=True)
class Results:
    """results.json: what a run found, on which data and cluster, with which settings.

    Its fields are results.json's keys, in order: a stable interface (see the README), read by
    the report, the summary, `--json` and ops. `write` puts it in a run folder, `read` gives it back.
    """

    run_id: str
    best_params: dict[str, Any]
    best_cv_score: float
    scoring: str
    test_accuracy: float
    test_roc_auc: float
    baseline_accuracy: float
    positive_rate: float
    n_train_rows: int
    n_test_rows: int
    n_rows_read: int
    n_dropped_rows: int
    target: str
    target_crosscheck_mismatches: int | None
    fit_seconds: float
    n_candidates: int
    n_fits: int
    # "grid" (one round), or "halving": successive halving's rounds, on more rows each.
    search: str
    rounds: list[dict[str, int]]
    n_fits_resumed: int
    resumed_fit_seconds: float
    # The exhaustive search's shared forests (skfleet.forest_search), or None for halving.
    shared_trees: dict[str, Any] | None
    # Parameters of the best candidate at an edge of the grid: widen the grid that way.
    grid_edges: list[dict[str, Any]]
    scheduler_address: str
    local_cluster: bool
    n_workers: int
    n_threads: int
    versions: dict[str, str]
    dataset: dict[str, str]
    settings: dict[str, Any]
    # Beside results.json: the report page and its figures (skfleet/report.py, skfleet/figures.py).
    report_files: list[str]
    finished_at: str
    # Where the run was logged in MLflow (skfleet.tracking.Logged), or None: not tracked.
    tracking: dict[str, Any] | None = None
    # The majority baseline with the search's scorer (skfleet.evaluate), or None where that scorer can't
    # score a constant answer. Last, with a default: run folders written before it still read.
    baseline_score: float | None = None
    # The model kind searched (skfleet.model.KINDS); run folders written before there were kinds hold a forest.
    model: str = "random-forest"

    def to_json(self) -> dict[str, Any]:
        """Give results.json's contents."""
        return asdict(self)

    def write(self, folder: Path) -> None:
        """Write results.json into FOLDER."""
        (folder / RESULTS_FILE).write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_json(cls, document: Any, source: str = "results.json") -> Results:
        """Give the results a results.json holds; refuses one that lacks a key (SOURCE names it).

        A key added later with a default (tracking) may be missing: older run folders still read.
        """
        if not isinstance(document, dict):
            raise InputError(f"{source}: not a skfleet results.json (a JSON object was expected)")
        required = [field.name for field in fields(cls) if field.default is MISSING]
        missing = [name for name in required if name not in document]
        if missing:
            raise InputError(f"{source}: not a skfleet results.json of this version: no {', '.join(missing)}")
        return cls(**{field.name: document[field.name] for field in fields(cls) if field.name in document})

    @classmethod
    def read(cls, path: Path) -> Results:
        """Give the results of a run folder's results.json (PATH: the file or its folder)."""
        path = path / RESULTS_FILE if path.is_dir() else path
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: cannot read results: {error}") from None
        return cls.from_json(document, str(path))


def summary(results: Results, folder: Path) -> str:
    """Give the short human summary printed at the end of a run: a headline, then labelled lines.

    The labels are padded to the longest one plus two spaces (a scorer's name may be long), so
    that a label and its value are always two spaces or more apart (tests/summary.py reads them).
    """
    params = ", ".join(f"{key.split('__')[-1]}={value}" for key, value in results.best_params.items())
    cluster = "local cluster" if results.local_cluster else results.scheduler_address
    rows = [
        ("model", results.model),
        ("best params", params),
        (f"best CV {results.scoring}", f"{results.best_cv_score:.4f}"),
        ("test accuracy", f"{results.test_accuracy:.4f}  (majority baseline {results.baseline_accuracy:.4f})"),
        ("test ROC AUC", f"{results.test_roc_auc:.4f}"),
    ]
    if results.search == "halving":
        rows.append(("search", halving_text(results)))
    fits = f"{results.n_fits} fits in {results.fit_seconds:.1f} s on {cluster}"
    rows.append(("fit", f"{fits} ({results.n_workers} workers, {results.n_threads} threads)"))
    if results.shared_trees:
        rows.append(("shared trees", results.shared_trees["description"]))
    rows += [("grid edge", edge["description"]) for edge in results.grid_edges]
    if results.n_fits_resumed:
        resumed = (
            f"{results.n_fits_resumed} of {results.n_fits} fits from the checkpoint of an "
            f"interrupted run (saved {results.resumed_fit_seconds:.1f} s of fitting)"
        )
        rows.append(("resumed", resumed))
    if results.tracking:
        tracking = results.tracking
        rows.append(
            ("MLflow run", tracking["url"] or f"{tracking['run_id']} in experiment {tracking['experiment']} at {tracking['uri']}")
        )
    rows.append(("written to", str(folder)))
    width = max(len(label) for label, _ in rows) + 2
    headline = (
        f"run {results.run_id} on {results.dataset['name']} ({results.n_train_rows:,} train / "
        f"{results.n_test_rows:,} test rows, {results.n_dropped_rows:,} dropped without target)"
    )
    return "\n".join([headline, *(f"  {label:<{width}}{value}" for label, value in rows)])


def result_line(results: Results, folder: Path) -> str:
    """Give the run's result for scripts (`--json`) as one line of JSON: results.json's keys, the run folder, the summary.

    The summary's text rides along so that a script shows the run's own words (train.yml does) rather than its own.
    """
    result = {**results.to_json(), "run_folder": str(folder), "summary": summary(results, folder)}
    return json.dumps(result, separators=(",", ":"))


def halving_text(results: Results) -> str:
    """Give successive halving's rounds in words: "factor 5: 25 -> 5 -> 1 candidates on 5,445 -> ... rows"."""
    candidates = " -> ".join(str(step["candidates"]) for step in results.rounds)
    rows = " -> ".join(format(step["rows"], ",") for step in results.rounds)
    return f"successive halving, factor {results.settings['halving_factor']}: {candidates} candidates on {rows} rows"
