"""The run folder's report: report.html, one self-contained page, and the figures it embeds, as PNGs beside it.

write_run writes the whole run folder, atomically: results.json (skfleet/results.py), the CV table and the
model (skfleet/run_files.py), then the report.

The page needs no network to view: figures are data: URIs, the style is inline, there is
no JavaScript, and its Content-Security-Policy forbids loading anything else. The figures
are skfleet/figures.py's registry; the page is templates/report.html.j2, rendered by jinja2
with autoescape on, so every string from the user's data or settings is escaped.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
from markupsafe import Markup
from sklearn.model_selection import GridSearchCV

from skfleet import figures
from skfleet.figures import final_rounds, label, short
from skfleet.model import DEFAULT_KIND
from skfleet.results import FILES as RESULTS_FILES
from skfleet.results import Results, atomic_run_folder, halving_text
from skfleet.run_files import write_files

if TYPE_CHECKING:
    from skfleet.evaluate import Predictions
    from skfleet.search import SearchOutcome

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
# The cv_results table in the page shows this many of the best candidates; cv_results.csv has them all.
TOP_CANDIDATES = 20
# Nothing but inline style and data: images may load; no script runs and nothing is fetched.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

log = logging.getLogger(__name__)


def files(model: str = DEFAULT_KIND) -> list[str]:
    """Give what the report adds to a run folder of a MODEL kind's run: the page, then each figure's PNG it can draw."""
    return [REPORT_FILE, *figures.files(model)]


def run_files(model: str = DEFAULT_KIND) -> list[str]:
    """Give everything a run folder of a MODEL kind's run holds, sorted: the results, the CV table, the model, the report."""
    return sorted([*RESULTS_FILES, *files(model)])


# A default run's folder (the random forest's).
RUN_FILES = run_files()


def write_run(output: Path, results: Results, outcome: SearchOutcome, predictions: Predictions) -> Path:
    """Give the run folder OUTPUT/run_id: results.json, cv_results.csv, the model and the report, written atomically."""
    with atomic_run_folder(output, results.run_id) as folder:
        results.write(folder)
        write_files(folder, outcome.search)
        write(folder, results, outcome.search, predictions)
    return output / results.run_id


def write(folder: Path, results: Results, search: GridSearchCV, predictions: Predictions) -> None:
    """Write the figures' PNGs and report.html into the (still hidden) run folder."""
    started = time.perf_counter()
    cv_results, best_index = final_rounds(search)
    given = figures.Inputs(results, cv_results, best_index, predictions, search.best_estimator_)
    drawn = figures.draw_all(given)
    for each in drawn:
        (folder / each.figure.file).write_bytes(each.png)
    drawn_seconds = time.perf_counter() - started
    page = render(given, search, drawn, drawn_seconds)
    (folder / REPORT_FILE).write_text(page, encoding="utf-8")
    log.info("report: %s and %d figures in %.1f s", REPORT_FILE, len(drawn), time.perf_counter() - started)


# ---------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class Table:
    """A section of the page holding a two-column table: row names, and values (text, or Markup)."""

    id: str
    heading: str
    rows: list[tuple[str, str]]


@functools.cache
def environment() -> jinja2.Environment:
    """Give the template environment: the package's templates/, autoescape on, undefined names an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("skfleet", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(given: figures.Inputs, search: GridSearchCV, drawn: list[figures.Drawn], drawn_seconds: float) -> str:
    """Give report.html: every user-controlled string escaped, every figure embedded.

    GIVEN is what the figures were drawn from (the final rounds, the baseline); SEARCH's
    cv_results_, every round of it, gives the fitting time.
    """
    results = given.results
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            results=results,
            content_security_policy=CONTENT_SECURITY_POLICY,
            tables=[_summary(results), _cluster(results), _timings(results, search, drawn_seconds)],
            figures=[_embedded(each) for each in drawn],
            candidates=_candidates(given),
            figure_files=figures.files(results.model),
        )
    )


def _summary(results: Results) -> Table:
    dataset = results.dataset
    scoring = results.scoring
    baseline = results.baseline_score
    gain = results.test_accuracy - results.baseline_accuracy
    baseline_row = (
        f"{baseline:.4f} (the majority class's {scoring} on the test set)"
        if baseline is not None
        else f"none: {scoring} can't score a constant answer"
    )
    rows = [
        ("model", results.model),
        ("best parameters", _params(results.best_params)),
        *[("edge of the grid", edge["description"]) for edge in results.grid_edges],
        (f"best CV {scoring}", f"{results.best_cv_score:.4f} (mean over {results.settings['cv']} folds)"),
        (f"majority baseline, {scoring}", baseline_row),
        (
            "test accuracy",
            Markup('{} against the majority baseline\'s {}: <span class="{}">{}</span>').format(
                f"{results.test_accuracy:.4f}",
                f"{results.baseline_accuracy:.4f}",
                "better" if gain > 0 else "worse",
                f"{gain:+.4f}",
            ),
        ),
        ("test ROC AUC", f"{results.test_roc_auc:.4f} (chance: 0.5)"),
        ("positive rate (test)", f"{results.positive_rate:.4f}"),
        (
            "rows",
            f"{results.n_rows_read:,} read, {results.n_dropped_rows:,} dropped without a target, "
            f"{results.n_train_rows:,} train, {results.n_test_rows:,} test",
        ),
        ("dataset", Markup("<code>{}</code> ({} layout)").format(dataset["name"], dataset["layout"])),
        ("checksum", Markup("<code>{}</code>").format(dataset["checksum"])),
        ("settings", Markup("<code>{}</code>").format(json.dumps(results.settings, sort_keys=True))),
    ]
    if results.tracking:
        rows.append(("MLflow run", _tracking_link(results.tracking)))
    return Table("summary", "Summary", rows)


def _tracking_link(tracking: Mapping[str, Any]) -> Markup:
    """Give the run's MLflow run: a link to its page in the MLflow UI, or its id and store when there is no UI."""
    if tracking.get("url"):
        return Markup('<a id="mlflow-run" href="{}">{}</a> (experiment {})').format(
            tracking["url"], tracking["run_id"], tracking["experiment"]
        )
    return Markup("<code>{}</code> in experiment {} at <code>{}</code>").format(
        tracking["run_id"], tracking["experiment"], tracking["uri"]
    )


def _cluster(results: Results) -> Table:
    where = "a local cluster started by the trainer" if results.local_cluster else "the configured cluster"
    versions = ", ".join(f"{package} {version}" for package, version in results.versions.items())
    rows = [
        ("scheduler", Markup("<code>{}</code> ({})").format(results.scheduler_address, where)),
        ("workers", f"{results.n_workers}"),
        ("threads", f"{results.n_threads}"),
        ("versions (client, scheduler and workers agree)", versions or "not recorded"),
    ]
    return Table("cluster", "Cluster", rows)


def _timings(results: Results, search: GridSearchCV, drawn_seconds: float) -> Table:
    fit_times = np.asarray(search.cv_results_["mean_fit_time"], dtype=float)
    worker_seconds = float(np.sum(fit_times)) * results.settings["cv"]
    rows = [
        ("search", f"{results.fit_seconds:.1f} s for {results.n_fits} fits ({results.n_candidates} candidates)"),
        ("fitting time summed over fits", f"{worker_seconds:.1f} s, {np.mean(fit_times):.2f} s per fit on average"),
    ]
    if results.search == "halving":
        rows.insert(1, ("rounds", halving_text(results)))
    if results.shared_trees:
        rows.insert(1, ("shared trees", results.shared_trees["description"]))
    if results.n_fits_resumed:
        rows.append(
            (
                "resumed",
                f"{results.n_fits_resumed} of {results.n_fits} fits from the checkpoint of an interrupted run "
                f"(saved {results.resumed_fit_seconds:.1f} s of fitting)",
            )
        )
    rows.append(("this report's figures", f"{drawn_seconds:.1f} s"))
    return Table("timings", "Timings", rows)


def _embedded(drawn: figures.Drawn) -> dict[str, Any]:
    """Give what the page shows of a drawn figure: its registry entry, alt text and the PNG as a data: URI."""
    width, height = _png_size(drawn.png)
    return {
        "id": drawn.figure.id,
        "file": drawn.figure.file,
        "caption": drawn.figure.caption,
        "alt": drawn.alt,
        "source": "data:image/png;base64," + base64.b64encode(drawn.png).decode("ascii"),
        "width": width,
        "height": height,
    }


def _candidates(given: figures.Inputs) -> dict[str, Any]:
    """Give the candidates table: the best TOP_CANDIDATES by rank, their parameters and scores."""
    cv_results, best_index = given.cv_results, given.best_index
    ranks = np.asarray(cv_results["rank_test_score"])
    order = sorted(range(len(ranks)), key=lambda index: (ranks[index], index))[:TOP_CANDIDATES]
    names = list(dict.fromkeys(name for candidate in cv_results["params"] for name in candidate))
    columns = (("mean_test_score", 4), ("std_test_score", 4), ("mean_fit_time", 2), ("mean_score_time", 2))
    rows = [
        {
            "rank": int(ranks[index]),
            "best": index == best_index,
            "params": [label(cv_results["params"][index][name]) if name in cv_results["params"][index] else "" for name in names],
            "numbers": [f"{float(cv_results[column][index]):.{digits}f}" for column, digits in columns],
        }
        for index in order
    ]
    return {
        "shown": f"the best {len(order)} of {len(ranks)}" if len(order) < len(ranks) else f"all {len(ranks)}",
        "halving": "iter" in cv_results,
        "headings": ["rank", *map(short, names), f"mean CV {given.scoring}", "std", "mean fit s", "mean score s"],
        "rows": rows,
    }


def _params(params: Mapping[str, Any]) -> Markup:
    return Markup(", ").join(Markup("<code>{}={}</code>").format(short(name), label(value)) for name, value in params.items())


def _png_size(png: bytes) -> tuple[int, int]:
    """Give a PNG's width and height, read from its IHDR chunk."""
    width, height = struct.unpack(">II", png[16:24])
    return width, height
