"""The run report: report.html, one self-contained page, and the figures it embeds, as PNGs beside it.

The page needs no network to view: figures are data: URIs, the style is inline, there is
no JavaScript, and its Content-Security-Policy forbids loading anything else. Figures are
drawn with matplotlib's Agg renderer (no display, no pyplot).
"""

from __future__ import annotations

import atexit
import base64
import html
import io
import json
import logging
import os
import shutil
import struct
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.metrics import confusion_matrix, get_scorer, roc_curve
from sklearn.model_selection import GridSearchCV

from skfleet.config import CLASSIFIER_STEP

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from skfleet.evaluate import Predictions

REPORT_FILE = "report.html"
# Each figure's file, and the id of its <figure> in report.html.
FIGURES = {
    "heatmap": "heatmap.png",
    "fit_times": "fit_times.png",
    "roc": "roc.png",
    "confusion": "confusion.png",
    "importances": "importances.png",
}
# Pixels per inch of the PNGs: about 700 x 500 px for a default figure, sharp enough, small enough to embed.
DPI = 110
# The cv_results table in the page shows this many of the best candidates; cv_results.csv has them all.
TOP_CANDIDATES = 20
# Above this many candidates the fit-time chart drops its per-candidate labels (they would not fit).
LABELLED_CANDIDATES = 60
# Grid parameters of the default grid: preferred as the heat map's axes when others have as many values.
PREFERRED_AXES = (f"{CLASSIFIER_STEP}__n_estimators", f"{CLASSIFIER_STEP}__max_depth")
BASELINE_COLOUR = "#d62728"
BEST_COLOUR = "#ff7f0e"
BAR_COLOUR = "#4c72b0"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Figures:
    """The report's PNGs, by figure id, and their alt texts."""

    png: dict[str, bytes]
    alt: dict[str, str]


def write(folder: Path, results: dict[str, Any], search: GridSearchCV, predictions: Predictions) -> None:
    """Write the figures' PNGs and report.html into the (still hidden) run folder."""
    started = time.perf_counter()
    baseline = majority_baseline_score(results["scoring"], predictions)
    figures = draw(results, search, predictions, baseline)
    for figure_id, name in FIGURES.items():
        (folder / name).write_bytes(figures.png[figure_id])
    drawn_seconds = time.perf_counter() - started
    page = render(results, search, figures, baseline, drawn_seconds)
    (folder / REPORT_FILE).write_text(page, encoding="utf-8")
    log.info("report: %s and %d figures in %.1f s", REPORT_FILE, len(FIGURES), time.perf_counter() - started)


def majority_baseline_score(scoring: str, predictions: Predictions) -> float | None:
    """Give the score the majority baseline (always the training majority class) gets on the test set.

    Scored with the search's own scorer, so it sits on the same scale as the CV scores;
    None where that scorer can't score a constant answer (a single-class test set, say).
    """
    truth = predictions.truth
    no_features = np.zeros((len(truth), 1))
    try:
        with warnings.catch_warnings():
            # A constant answer makes precision-like scorers warn about zero divisions: 0 is the answer.
            warnings.simplefilter("ignore")
            majority = DummyClassifier(strategy="constant", constant=predictions.majority_class).fit(no_features, truth)
            score = float(get_scorer(scoring)(majority, no_features, truth))
    except ValueError:
        return None
    return score if np.isfinite(score) else None


# ---------------------------------------------------------------------------- figures


def draw(results: dict[str, Any], search: GridSearchCV, predictions: Predictions, baseline: float | None) -> Figures:
    """Give every figure of the report as PNG bytes, with its alt text."""
    new_figure = figure_class()
    png: dict[str, bytes] = {}
    alt: dict[str, str] = {}
    cv_results, best_index = final_rounds(search)
    scoring = results["scoring"]
    drawers = {
        "heatmap": lambda figure: _heatmap(figure, cv_results, best_index, scoring, baseline),
        "fit_times": lambda figure: _fit_times(figure, cv_results, best_index, results),
        "roc": lambda figure: _roc(figure, predictions, results),
        "confusion": lambda figure: _confusion(figure, predictions, results),
        "importances": lambda figure: _importances(figure, search.best_estimator_),
    }
    for figure_id, drawer in drawers.items():
        figure = new_figure()
        alt[figure_id] = drawer(figure)
        buffer = io.BytesIO()
        # A tight bounding box keeps long tick labels in the picture, at half the cost of a layout engine.
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
        png[figure_id] = buffer.getvalue()
    return Figures(png=png, alt=alt)


def final_rounds(search: Any) -> tuple[dict[str, Any], int]:
    """Give the search's cv_results_ with one row per candidate, and the best candidate's row.

    An exhaustive search's table is that already. Successive halving scores a candidate once
    in every round it reaches, on more rows each round: its row is then its last round's, and
    the ranks put the candidates that went further first, then the higher scores.
    """
    cv_results = search.cv_results_
    if "iter" not in cv_results:
        return cv_results, search.best_index_
    last = {json.dumps(params, sort_keys=True, default=str): index for index, params in enumerate(cv_results["params"])}
    rows = sorted(last.values())
    view = {
        key: [values[row] for row in rows] if isinstance(values, list) else np.asarray(values)[rows]
        for key, values in cv_results.items()
    }
    order = sorted(range(len(rows)), key=lambda row: (-view["iter"][row], -view["mean_test_score"][row]))
    ranks = np.empty(len(rows), dtype=int)
    ranks[order] = np.arange(1, len(rows) + 1)
    view["rank_test_score"] = ranks
    return view, rows.index(search.best_index_)


def halving_text(results: dict[str, Any]) -> str:
    """Give successive halving's rounds in words: "factor 5: 25 -> 5 -> 1 candidates on 5,445 -> ... rows"."""
    candidates = " -> ".join(str(step["candidates"]) for step in results["rounds"])
    rows = " -> ".join(format(step["rows"], ",") for step in results["rounds"])
    return f"successive halving, factor {results['settings']['halving_factor']}: {candidates} candidates on {rows} rows"


def figure_class() -> type[Figure]:
    """Give matplotlib's Figure, importing matplotlib so it needs no writable home and no display.

    The trainer's container has a read-only root filesystem and a HOME it may not own:
    matplotlib's config and font cache then go to a fresh folder under the temporary
    directory (removed at exit), instead of a warning and a guess of matplotlib's own.
    A Figure saved without pyplot renders with Agg: no GUI backend is ever chosen.
    """
    if "MPLCONFIGDIR" not in os.environ:
        config = tempfile.mkdtemp(prefix="skfleet-matplotlib-")
        atexit.register(shutil.rmtree, config, ignore_errors=True)
        os.environ["MPLCONFIGDIR"] = config
    from matplotlib.figure import Figure

    return Figure


def _heatmap(figure: Figure, cv_results: dict[str, Any], best_index: int, scoring: str, baseline: float | None) -> str:
    """Draw mean CV score over the grid's two widest parameters (a bar chart for a 1-D grid); give the alt text."""
    params: list[dict[str, Any]] = list(cv_results["params"])
    scores = np.asarray(cv_results["mean_test_score"], dtype=float)
    spreads = np.asarray(cv_results["std_test_score"], dtype=float)
    axes_names = heatmap_axes(params)
    best = params[best_index]
    fixed = {name: value for name, value in best.items() if name not in axes_names}
    in_slice = [index for index, candidate in enumerate(params) if _matches(candidate, fixed)]
    fixed_text = ", ".join(f"{_short(name)}={_label(value)}" for name, value in fixed.items() if _varies(params, name))
    slice_note = f" (others at the best candidate's {fixed_text})" if fixed_text else ""
    slice_note += _rounds_note(cv_results)
    baseline_text = f"majority baseline {baseline:.4f}" if baseline is not None else "no majority baseline for this scorer"
    ax = figure.subplots()
    if len(axes_names) < 2:
        name = axes_names[0] if axes_names else None
        labels = [_label(params[index].get(name)) if name else _candidate_label(params[index], []) for index in in_slice]
        positions = np.arange(len(in_slice))
        colours = [BEST_COLOUR if index == best_index else BAR_COLOUR for index in in_slice]
        ax.bar(positions, scores[in_slice], yerr=spreads[in_slice], color=colours, capsize=4)
        ax.set_xticks(positions, labels)
        ax.set_xlabel(_short(name) if name else "candidate")
        ax.set_ylabel(f"mean CV {scoring} (± std over folds)")
        low = np.nanmin(scores[in_slice] - spreads[in_slice])
        high = np.nanmax(scores[in_slice] + spreads[in_slice])
        if baseline is not None:
            ax.axhline(baseline, color=BASELINE_COLOUR, linestyle="--", label=baseline_text)
            ax.legend(loc="lower right")
            low, high = min(low, baseline), max(high, baseline)
        margin = max((high - low) * 0.15, 0.005)
        ax.set_ylim(low - margin, high + margin)
        for position, index in zip(positions, in_slice, strict=True):
            top = scores[index] + (spreads[index] if np.isfinite(spreads[index]) else 0)
            ax.annotate(
                f"{scores[index]:.4f}", (position, top), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8
            )
        ax.set_title(f"Mean CV {scoring} per {_short(name) if name else 'candidate'}{slice_note}", fontsize=10)
        return (
            f"Bar chart of mean cross-validated {scoring} per {_short(name) if name else 'candidate'}{slice_note}; "
            f"best {scores[best_index]:.4f} at {_candidate_label(best, axes_names)}; {baseline_text}."
        )
    x_name, y_name = axes_names
    x_values = _distinct(params[index].get(x_name) for index in in_slice)
    y_values = _distinct(params[index].get(y_name) for index in in_slice)
    grid = np.full((len(y_values), len(x_values)), np.nan)
    for index in in_slice:
        row = y_values.index(_label(params[index].get(y_name)))
        column = x_values.index(_label(params[index].get(x_name)))
        grid[row, column] = scores[index]
    figure.set_size_inches(max(5.0, 1.0 + 0.9 * len(x_values)) + 1.5, max(3.5, 1.2 + 0.6 * len(y_values)))
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    colour_map = colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(grid, cmap=colour_map, aspect="auto")
    ax.set_xticks(range(len(x_values)), x_values)
    ax.set_yticks(range(len(y_values)), y_values)
    ax.set_xlabel(_short(x_name))
    ax.set_ylabel(_short(y_name))
    low, high = np.nanmin(grid), np.nanmax(grid)
    if grid.size <= 200:
        for (row, column), value in np.ndenumerate(grid):
            if np.isfinite(value):
                dark = high == low or (value - low) / (high - low) < 0.6
                ax.text(column, row, f"{value:.4f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    best_row = y_values.index(_label(best.get(y_name)))
    best_column = x_values.index(_label(best.get(x_name)))
    ax.add_patch(
        Rectangle((best_column - 0.5, best_row - 0.5), 1, 1, fill=False, edgecolor=BEST_COLOUR, linewidth=3, label="best")
    )
    colour_bar = figure.colorbar(image, ax=ax, label=f"mean CV {scoring}")
    where = ""
    if baseline is not None:
        if low <= baseline <= high:
            colour_bar.ax.axhline(baseline, color=BASELINE_COLOUR, linewidth=3)
            where = " (red line on the scale)"
        else:
            where = " (below every candidate)" if baseline < low else " (above every candidate)"
    ax.set_title(f"Mean CV {scoring}{slice_note}\n{baseline_text}{where}; best outlined", fontsize=10)
    return (
        f"Heat map of mean cross-validated {scoring} over {_short(x_name)} and {_short(y_name)}{slice_note}; "
        f"best {scores[best_index]:.4f} at {_candidate_label(best, axes_names)}; {baseline_text}{where}."
    )


def heatmap_axes(params: Sequence[dict[str, Any]]) -> list[str]:
    """Give the heat map's axes: the (up to) two grid parameters with the most values.

    Ties go to n_estimators and max_depth (the default grid's), then to the grid's order.
    """
    names = list(dict.fromkeys(name for candidate in params for name in candidate))
    varying = [name for name in names if _varies(params, name)]

    def width(name: str) -> tuple[int, int, int]:
        preference = PREFERRED_AXES.index(name) if name in PREFERRED_AXES else len(PREFERRED_AXES)
        return (-len(_distinct(candidate.get(name) for candidate in params)), preference, names.index(name))

    return sorted(varying, key=width)[:2]


def _fit_times(figure: Figure, cv_results: dict[str, Any], best_index: int, results: dict[str, Any]) -> str:
    """Draw the mean fit time per fold of each candidate; give the alt text."""
    params: list[dict[str, Any]] = list(cv_results["params"])
    fit_times = np.asarray(cv_results["mean_fit_time"], dtype=float)
    spreads = np.asarray(cv_results["std_fit_time"], dtype=float)
    varying = [name for name in dict.fromkeys(name for candidate in params for name in candidate) if _varies(params, name)]
    colours = [BEST_COLOUR if index == best_index else BAR_COLOUR for index in range(len(params))]
    ax = figure.subplots()
    if len(params) <= LABELLED_CANDIDATES:
        figure.set_size_inches(7.0, max(2.5, 1.3 + 0.28 * len(params)))
        positions = np.arange(len(params))
        ax.barh(positions, fit_times, xerr=spreads, color=colours, capsize=3)
        ax.set_yticks(positions, [_candidate_label(candidate, varying) for candidate in params], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("mean fit time per fold (s, ± std)")
    else:
        figure.set_size_inches(9.0, 4.0)
        ax.bar(np.arange(1, len(params) + 1), fit_times, color=colours, width=1.0)
        ax.set_xlabel("candidate (cv_results.csv order)")
        ax.set_ylabel("mean fit time per fold (s)")
    resumed = f" ({results['n_fits_resumed']} resumed from a checkpoint)" if results["n_fits_resumed"] else ""
    ax.set_title(
        f"{results['n_fits']} fits{resumed} in {results['fit_seconds']:.1f} s{_rounds_note(cv_results)}\n"
        f"on {results['n_workers']} workers ({results['n_threads']} threads); the best candidate in orange",
        fontsize=10,
    )
    slowest = int(np.argmax(fit_times))
    return (
        f"Bar chart of the mean fit time per fold of each of {len(params)} candidates; slowest "
        f"{fit_times[slowest]:.2f} s at {_candidate_label(params[slowest], varying)}; the best candidate "
        f"{fit_times[best_index]:.2f} s."
    )


def _roc(figure: Figure, predictions: Predictions, results: dict[str, Any]) -> str:
    """Draw the test-set ROC curve with its AUC and the chance diagonal; give the alt text."""
    ax = figure.subplots()
    figure.set_size_inches(5.5, 5.0)
    truth = predictions.truth
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance (AUC 0.5)")
    # The majority baseline always answers one class: a corner of the chance diagonal.
    corner = float(predictions.majority_class == 1)
    ax.plot([corner], [corner], "s", color=BASELINE_COLOUR, markersize=9, label="majority baseline")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    n_rows = f"{len(truth):,} test rows"
    if len(np.unique(truth)) < 2:
        ax.text(0.5, 0.6, "undefined: the test set holds a single class", ha="center")
        ax.legend(loc="lower right")
        ax.set_title(f"ROC curve on the test set ({n_rows})", fontsize=10)
        return f"ROC curve on the test set: undefined, the {n_rows} hold a single class."
    false_positive, true_positive, _ = roc_curve(truth, predictions.positive_probability, pos_label=1)
    auc = results["test_roc_auc"]
    ax.plot(false_positive, true_positive, color=BAR_COLOUR, linewidth=2, label=f"best model (AUC {auc:.4f})")
    positives = truth == 1
    operating_point = (np.mean(predictions.predicted[~positives] == 1), np.mean(predictions.predicted[positives] == 1))
    ax.plot(*operating_point, "o", color=BEST_COLOUR, markersize=8, label="best model's predictions (p ≥ 0.5)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"ROC curve on the test set ({n_rows})", fontsize=10)
    return (
        f"ROC curve of the best model on the {n_rows}: AUC {auc:.4f}, against the chance diagonal (AUC 0.5) and the "
        "majority baseline in its corner."
    )


def _confusion(figure: Figure, predictions: Predictions, results: dict[str, Any]) -> str:
    """Draw the test-set confusion matrix, counts and shares of all rows; give the alt text."""
    figure.set_size_inches(5.5, 4.5)
    ax = figure.subplots()
    counts = confusion_matrix(predictions.truth, predictions.predicted, labels=[0, 1])
    names = [f"not {results['target']}", results["target"]]
    image = ax.imshow(counts, cmap="Blues")
    total = max(int(counts.sum()), 1)
    for (row, column), count in np.ndenumerate(counts):
        dark = count > counts.max() * 0.6
        ax.text(
            column,
            row,
            f"{count:,}\n{count / total:.1%}",
            ha="center",
            va="center",
            color="white" if dark else "black",
            fontsize=11,
        )
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    figure.colorbar(image, ax=ax, label="test rows")
    ax.set_title(
        f"Test accuracy {results['test_accuracy']:.4f}; majority baseline\n"
        f"(always '{names[predictions.majority_class]}') {results['baseline_accuracy']:.4f}",
        fontsize=10,
    )
    (true_negative, false_positive), (false_negative, true_positive) = counts
    return (
        f"Confusion matrix on the test set: {true_negative:,} true negatives, {false_positive:,} false positives, "
        f"{false_negative:,} false negatives, {true_positive:,} true positives; test accuracy "
        f"{results['test_accuracy']:.4f} against the majority baseline's {results['baseline_accuracy']:.4f}."
    )


def _importances(figure: Figure, estimator: Any) -> str:
    """Draw the best forest's impurity-based feature importances, named as the pipeline names them; give the alt text."""
    forest = estimator[-1]
    names = [str(name) for name in estimator[:-1].get_feature_names_out()]
    importances = np.asarray(forest.feature_importances_, dtype=float)
    order = np.argsort(importances)[::-1]
    figure.set_size_inches(6.5, max(2.5, 1.2 + 0.3 * len(names)))
    ax = figure.subplots()
    positions = np.arange(len(order))
    ax.barh(positions, importances[order], color=BAR_COLOUR)
    ax.set_yticks(positions, [names[index] for index in order])
    ax.invert_yaxis()
    ax.set_xlabel("mean decrease in impurity (sums to 1)")
    ax.set_title(f"Feature importances of the best forest ({len(forest.estimators_)} trees)", fontsize=10)
    top = ", ".join(f"{names[index]} {importances[index]:.3f}" for index in order[:3])
    return f"Bar chart of the best forest's feature importances over {len(names)} features; the largest: {top}."


def _rounds_note(cv_results: dict[str, Any]) -> str:
    return " (successive halving: each candidate's last round)" if "iter" in cv_results else ""


def _varies(params: Sequence[dict[str, Any]], name: str) -> bool:
    return len(_distinct(candidate.get(name) for candidate in params)) > 1


def _matches(candidate: dict[str, Any], fixed: dict[str, Any]) -> bool:
    return all(_label(candidate.get(name)) == _label(value) for name, value in fixed.items())


def _distinct(values: Any) -> list[str]:
    """Give the distinct labels of values, in the grid's order."""
    return list(dict.fromkeys(_label(value) for value in values))


def _label(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:g}"
    return str(value)


def _short(name: str) -> str:
    return name.removeprefix(f"{CLASSIFIER_STEP}__")


def _candidate_label(candidate: dict[str, Any], names: Sequence[str]) -> str:
    shown = [name for name in names if name in candidate] or list(candidate)
    return ", ".join(f"{_short(name)}={_label(candidate[name])}" for name in shown) or "the only candidate"


# ---------------------------------------------------------------------------- page

STYLE = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 2rem; }
.lead { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fff3e0; }
.better { color: #1b7f3b; font-weight: bold; }
.worse { color: #b00020; font-weight: bold; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 0.85rem; word-break: break-all; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure { margin: 0; border: 1px solid #eee; padding: 0.5rem; max-width: 100%; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85rem; color: #444; max-width: 40rem; margin-top: 0.3rem; }
"""
# Nothing but inline style and data: images may load; no script runs and nothing is fetched.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CAPTIONS = {
    "heatmap": "Mean cross-validated score of each candidate",
    "fit_times": "Fit time per candidate",
    "roc": "ROC curve on the test set",
    "confusion": "Confusion matrix on the test set",
    "importances": "Feature importances of the best forest",
}


def render(results: dict[str, Any], search: GridSearchCV, figures: Figures, baseline: float | None, drawn_seconds: float) -> str:
    """Give report.html: every user-controlled string escaped, every figure embedded."""
    dataset = results["dataset"]
    title = f"skfleet run {results['run_id']}: {dataset['name']}"
    sections = [
        _summary_section(results, baseline),
        _cluster_section(results),
        _timings_section(results, search, drawn_seconds),
        _figures_section(figures),
        _cv_results_section(results, search),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_text(CONTENT_SECURITY_POLICY)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_text(title)}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            f'<header><h1 id="title">skfleet run <code>{_text(results["run_id"])}</code></h1>',
            f'<p class="lead">{_text(dataset["name"])}: predicting <strong>{_text(results["target"])}</strong>; '
            f"finished {_text(results['finished_at'])}</p></header>",
            *sections,
            '<footer><p class="lead">Beside this page in the run folder: results.json, cv_results.csv (every '
            f"candidate), {_text(', '.join(FIGURES.values()))} and the model, model.skops.</p></footer>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _summary_section(results: dict[str, Any], baseline: float | None) -> str:
    dataset = results["dataset"]
    gain = results["test_accuracy"] - results["baseline_accuracy"]
    verdict = "better" if gain > 0 else "worse"
    baseline_row = (
        f"{baseline:.4f} (the majority class's {_text(results['scoring'])} on the test set)"
        if baseline is not None
        else f"none: {_text(results['scoring'])} can't score a constant answer"
    )
    rows = [
        ("best parameters", _params_text(results["best_params"])),
        *[("edge of the grid", _text(edge["description"])) for edge in results.get("grid_edges", [])],
        (f"best CV {results['scoring']}", f"{results['best_cv_score']:.4f} (mean over {results['settings']['cv']} folds)"),
        (f"majority baseline, {results['scoring']}", baseline_row),
        (
            "test accuracy",
            f"{results['test_accuracy']:.4f} against the majority baseline's {results['baseline_accuracy']:.4f}: "
            f'<span class="{verdict}">{gain:+.4f}</span>',
        ),
        ("test ROC AUC", f"{results['test_roc_auc']:.4f} (chance: 0.5)"),
        ("positive rate (test)", f"{results['positive_rate']:.4f}"),
        (
            "rows",
            f"{results['n_rows_read']:,} read, {results['n_dropped_rows']:,} dropped without a target, "
            f"{results['n_train_rows']:,} train, {results['n_test_rows']:,} test",
        ),
        ("dataset", f"<code>{_text(dataset['name'])}</code> ({_text(dataset['layout'])} layout)"),
        ("checksum", f"<code>{_text(dataset['checksum'])}</code>"),
        ("settings", f"<code>{_text(json.dumps(results['settings'], sort_keys=True))}</code>"),
    ]
    return _table_section("summary", "Summary", rows)


def _cluster_section(results: dict[str, Any]) -> str:
    where = "a local cluster started by the trainer" if results["local_cluster"] else "the configured cluster"
    versions = ", ".join(f"{_text(package)} {_text(version)}" for package, version in results["versions"].items())
    rows = [
        ("scheduler", f"<code>{_text(results['scheduler_address'])}</code> ({where})"),
        ("workers", f"{results['n_workers']}"),
        ("threads", f"{results['n_threads']}"),
        ("versions (client, scheduler and workers agree)", versions or "not recorded"),
    ]
    return _table_section("cluster", "Cluster", rows)


def _timings_section(results: dict[str, Any], search: GridSearchCV, drawn_seconds: float) -> str:
    fit_times = np.asarray(search.cv_results_["mean_fit_time"], dtype=float)
    worker_seconds = float(np.sum(fit_times)) * results["settings"]["cv"]
    rows = [
        ("search", f"{results['fit_seconds']:.1f} s for {results['n_fits']} fits ({results['n_candidates']} candidates)"),
        ("fitting time summed over fits", f"{worker_seconds:.1f} s, {np.mean(fit_times):.2f} s per fit on average"),
    ]
    if results.get("search") == "halving":
        rows.insert(1, ("rounds", _text(halving_text(results))))
    if results.get("shared_trees"):
        rows.insert(1, ("shared trees", _text(results["shared_trees"]["description"])))
    if results["n_fits_resumed"]:
        rows.append(
            (
                "resumed",
                f"{results['n_fits_resumed']} of {results['n_fits']} fits from the checkpoint of an interrupted run "
                f"(saved {results['resumed_fit_seconds']:.1f} s of fitting)",
            )
        )
    rows.append(("this report's figures", f"{drawn_seconds:.1f} s"))
    return _table_section("timings", "Timings", rows)


def _figures_section(figures: Figures) -> str:
    items = []
    for figure_id, name in FIGURES.items():
        png = figures.png[figure_id]
        width, height = _png_size(png)
        source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        items.append(
            f'<figure id="{figure_id}"><img src="{source}" alt="{_text(figures.alt[figure_id])}" '
            f'width="{width}" height="{height}"><figcaption><strong>{_text(CAPTIONS[figure_id])}</strong> '
            f"({_text(name)}). {_text(figures.alt[figure_id])}</figcaption></figure>"
        )
    return '<section id="figures"><h2>Figures</h2><div class="figures">' + "\n".join(items) + "</div></section>"


def _cv_results_section(results: dict[str, Any], search: GridSearchCV) -> str:
    cv_results, best_index = final_rounds(search)
    ranks = np.asarray(cv_results["rank_test_score"])
    order = sorted(range(len(ranks)), key=lambda index: (ranks[index], index))[:TOP_CANDIDATES]
    names = list(dict.fromkeys(name for candidate in cv_results["params"] for name in candidate))
    header = "".join(
        f"<th>{_text(heading)}</th>"
        for heading in ["rank", *map(_short, names), f"mean CV {results['scoring']}", "std", "mean fit s", "mean score s"]
    )
    body = []
    for index in order:
        candidate = cv_results["params"][index]
        cells = [f'<td class="number">{ranks[index]}</td>']
        cells += [f"<td>{_text(_label(candidate[name])) if name in candidate else ''}</td>" for name in names]
        cells += [
            f'<td class="number">{float(cv_results[column][index]):.{digits}f}</td>'
            for column, digits in (("mean_test_score", 4), ("std_test_score", 4), ("mean_fit_time", 2), ("mean_score_time", 2))
        ]
        row_class = ' class="best"' if index == best_index else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    shown = f"the best {len(order)} of {len(ranks)}" if len(order) < len(ranks) else f"all {len(ranks)}"
    rounds = (
        " Successive halving: each candidate in the last round it reached; those that went further rank first."
        if "iter" in cv_results
        else ""
    )
    return (
        f'<section id="cv-results"><h2>Candidates</h2><p>{shown} candidates by rank; cv_results.csv has every '
        f"column for each.{rounds}</p><table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def _table_section(section_id: str, heading: str, rows: list[tuple[str, str]]) -> str:
    """Give a section holding a two-column table; row names are escaped here, values already are."""
    body = "".join(f"<tr><th>{_text(name)}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<section id="{section_id}"><h2>{_text(heading)}</h2><table>{body}</table></section>'


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"<code>{_text(_short(name))}={_text(_label(value))}</code>" for name, value in params.items())


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _png_size(png: bytes) -> tuple[int, int]:
    """Give a PNG's width and height, read from its IHDR chunk."""
    width, height = struct.unpack(">II", png[16:24])
    return width, height
