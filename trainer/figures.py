"""The run report's figures: one registry of id, file, caption and drawer; each drawn as a PNG.

Adding a figure is one function here: decorate a drawing function with `@drawer(id, file, caption)`;
the run folder, results.json's `report_files` and report.html follow the registry, in order. A
figure only some model kinds can draw (the forest's importances) is registered `model_specific`,
and drawn for the kinds that name it (skfleet.model.ModelKind.figures).
Figures are drawn with matplotlib's Agg renderer (no display, no pyplot).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_curve

from skfleet.config import CLASSIFIER_STEP
from skfleet.model import DEFAULT_KIND, kind

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from skfleet.evaluate import Predictions
    from skfleet.results import Results

# Pixels per inch of the PNGs: about 700 x 500 px for a default figure, sharp enough, small enough to embed.
DPI = 110
# Above this many candidates the fit-time chart drops its per-candidate labels (they would not fit).
LABELLED_CANDIDATES = 60
BASELINE_COLOUR = "#d62728"
BEST_COLOUR = "#ff7f0e"
BAR_COLOUR = "#4c72b0"


@dataclass(frozen=True)
class Inputs:
    """What a drawer may look at: the run's results, the search's final rounds and the test-set predictions."""

    results: Results
    cv_results: dict[str, Any]
    best_index: int
    predictions: Predictions
    estimator: Any

    @property
    def scoring(self) -> str:
        return self.results.scoring

    @property
    def baseline(self) -> float | None:
        """The majority baseline's score with the search's scorer (results.json's baseline_score)."""
        return self.results.baseline_score


Drawer = Callable[["Figure", Inputs], str]


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: the id of its <figure> in report.html, its PNG's file, its caption, its drawer.

    The drawer draws on a fresh matplotlib Figure and gives the alt text, the numbers it shows in words.
    A model-specific figure is drawn only for the model kinds that name it.
    """

    id: str
    file: str
    caption: str
    draw: Drawer
    model_specific: bool = False


# The registry, in the page's order: filled by @drawer below.
FIGURES: list[ReportFigure] = []


def drawer(figure_id: str, file: str, caption: str, *, model_specific: bool = False) -> Callable[[Drawer], Drawer]:
    """Register a drawer as a figure of the report (MODEL_SPECIFIC: for the model kinds that name it only)."""

    def register(drawer: Drawer) -> Drawer:
        if any(known.id == figure_id or known.file == file for known in FIGURES):
            raise ValueError(f"a report figure is already registered as {figure_id!r} or {file!r}")
        FIGURES.append(ReportFigure(figure_id, file, caption, drawer, model_specific))
        return drawer

    return register


def files(model: str = DEFAULT_KIND) -> list[str]:
    """Give the PNG files of the figures a MODEL kind's run has, in the page's order."""
    return [known.file for known in drawable(model)]


def drawable(model: str) -> list[ReportFigure]:
    """Give the registered figures a MODEL kind's run has: every common one, and the specific ones it names."""
    return [known for known in FIGURES if not known.model_specific or known.id in kind(model).figures]


def preferred_axes(model: str) -> tuple[str, ...]:
    """Give the MODEL kind's default grid parameters: preferred as the heat map's axes when others have as many values."""
    return tuple(f"{CLASSIFIER_STEP}__{name}" for name in kind(model).default_grid)


@dataclass(frozen=True)
class Drawn:
    """A figure drawn: its registry entry, its PNG and its alt text."""

    figure: ReportFigure
    png: bytes
    alt: str


def draw_all(given: Inputs) -> list[Drawn]:
    """Draw every registered figure the run's model kind can draw, in order."""
    new_figure = figure_class()
    drawn = []
    for known in drawable(given.results.model):
        canvas = new_figure()
        alt = known.draw(canvas, given)
        buffer = io.BytesIO()
        # A tight bounding box keeps long tick labels in the picture, at half the cost of a layout engine.
        canvas.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
        drawn.append(Drawn(known, buffer.getvalue(), alt))
    return drawn


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


@drawer("heatmap", "heatmap.png", "Mean cross-validated score of each candidate")
def heatmap(figure: Figure, given: Inputs) -> str:
    """Draw mean CV score over the grid's two widest parameters (a bar chart for a 1-D grid); give the alt text."""
    cv_results, best_index, scoring, baseline = given.cv_results, given.best_index, given.scoring, given.baseline
    params: list[dict[str, Any]] = list(cv_results["params"])
    scores = np.asarray(cv_results["mean_test_score"], dtype=float)
    spreads = np.asarray(cv_results["std_test_score"], dtype=float)
    axes_names = heatmap_axes(params, given.results.model)
    best = params[best_index]
    fixed = {name: value for name, value in best.items() if name not in axes_names}
    in_slice = [index for index, candidate in enumerate(params) if _matches(candidate, fixed)]
    fixed_text = ", ".join(f"{short(name)}={label(value)}" for name, value in fixed.items() if _varies(params, name))
    slice_note = f" (others at the best candidate's {fixed_text})" if fixed_text else ""
    slice_note += _rounds_note(cv_results)
    baseline_text = f"majority baseline {baseline:.4f}" if baseline is not None else "no majority baseline for this scorer"
    ax = figure.subplots()
    if len(axes_names) < 2:
        name = axes_names[0] if axes_names else None
        labels = [label(params[index].get(name)) if name else candidate_label(params[index], []) for index in in_slice]
        positions = np.arange(len(in_slice))
        colours = [BEST_COLOUR if index == best_index else BAR_COLOUR for index in in_slice]
        ax.bar(positions, scores[in_slice], yerr=spreads[in_slice], color=colours, capsize=4)
        ax.set_xticks(positions, labels)
        ax.set_xlabel(short(name) if name else "candidate")
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
        ax.set_title(f"Mean CV {scoring} per {short(name) if name else 'candidate'}{slice_note}", fontsize=10)
        return (
            f"Bar chart of mean cross-validated {scoring} per {short(name) if name else 'candidate'}{slice_note}; "
            f"best {scores[best_index]:.4f} at {candidate_label(best, axes_names)}; {baseline_text}."
        )
    x_name, y_name = axes_names
    x_values = _distinct(params[index].get(x_name) for index in in_slice)
    y_values = _distinct(params[index].get(y_name) for index in in_slice)
    grid = np.full((len(y_values), len(x_values)), np.nan)
    for index in in_slice:
        row = y_values.index(label(params[index].get(y_name)))
        column = x_values.index(label(params[index].get(x_name)))
        grid[row, column] = scores[index]
    figure.set_size_inches(max(5.0, 1.0 + 0.9 * len(x_values)) + 1.5, max(3.5, 1.2 + 0.6 * len(y_values)))
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    colour_map = colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(grid, cmap=colour_map, aspect="auto")
    ax.set_xticks(range(len(x_values)), x_values)
    ax.set_yticks(range(len(y_values)), y_values)
    ax.set_xlabel(short(x_name))
    ax.set_ylabel(short(y_name))
    low, high = np.nanmin(grid), np.nanmax(grid)
    if grid.size <= 200:
        for (row, column), value in np.ndenumerate(grid):
            if np.isfinite(value):
                dark = high == low or (value - low) / (high - low) < 0.6
                ax.text(column, row, f"{value:.4f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    best_row = y_values.index(label(best.get(y_name)))
    best_column = x_values.index(label(best.get(x_name)))
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
        f"Heat map of mean cross-validated {scoring} over {short(x_name)} and {short(y_name)}{slice_note}; "
        f"best {scores[best_index]:.4f} at {candidate_label(best, axes_names)}; {baseline_text}{where}."
    )


def heatmap_axes(params: Sequence[dict[str, Any]], model: str = DEFAULT_KIND) -> list[str]:
    """Give the heat map's axes: the (up to) two grid parameters with the most values.

    Ties go to the MODEL kind's default grid's (a forest's n_estimators and max_depth), then to the grid's order.
    """
    names = list(dict.fromkeys(name for candidate in params for name in candidate))
    varying = [name for name in names if _varies(params, name)]
    preferred = preferred_axes(model)

    def width(name: str) -> tuple[int, int, int]:
        preference = preferred.index(name) if name in preferred else len(preferred)
        return (-len(_distinct(candidate.get(name) for candidate in params)), preference, names.index(name))

    return sorted(varying, key=width)[:2]


@drawer("fit_times", "fit_times.png", "Fit time per candidate")
def fit_times(figure: Figure, given: Inputs) -> str:
    """Draw the mean fit time per fold of each candidate; give the alt text."""
    cv_results, best_index, results = given.cv_results, given.best_index, given.results
    params: list[dict[str, Any]] = list(cv_results["params"])
    seconds = np.asarray(cv_results["mean_fit_time"], dtype=float)
    spreads = np.asarray(cv_results["std_fit_time"], dtype=float)
    varying = [name for name in dict.fromkeys(name for candidate in params for name in candidate) if _varies(params, name)]
    colours = [BEST_COLOUR if index == best_index else BAR_COLOUR for index in range(len(params))]
    ax = figure.subplots()
    if len(params) <= LABELLED_CANDIDATES:
        figure.set_size_inches(7.0, max(2.5, 1.3 + 0.28 * len(params)))
        positions = np.arange(len(params))
        ax.barh(positions, seconds, xerr=spreads, color=colours, capsize=3)
        ax.set_yticks(positions, [candidate_label(candidate, varying) for candidate in params], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("mean fit time per fold (s, ± std)")
    else:
        figure.set_size_inches(9.0, 4.0)
        ax.bar(np.arange(1, len(params) + 1), seconds, color=colours, width=1.0)
        ax.set_xlabel("candidate (cv_results.csv order)")
        ax.set_ylabel("mean fit time per fold (s)")
    resumed = f" ({results.n_fits_resumed} resumed from a checkpoint)" if results.n_fits_resumed else ""
    ax.set_title(
        f"{results.n_fits} fits{resumed} in {results.fit_seconds:.1f} s{_rounds_note(cv_results)}\n"
        f"on {results.n_workers} workers ({results.n_threads} threads); the best candidate in orange",
        fontsize=10,
    )
    slowest = int(np.argmax(seconds))
    return (
        f"Bar chart of the mean fit time per fold of each of {len(params)} candidates; slowest "
        f"{seconds[slowest]:.2f} s at {candidate_label(params[slowest], varying)}; the best candidate "
        f"{seconds[best_index]:.2f} s."
    )


@drawer("roc", "roc.png", "ROC curve on the test set")
def roc(figure: Figure, given: Inputs) -> str:
    """Draw the test-set ROC curve with its AUC and the chance diagonal; give the alt text."""
    predictions, results = given.predictions, given.results
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
    auc = results.test_roc_auc
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


@drawer("confusion", "confusion.png", "Confusion matrix on the test set")
def confusion(figure: Figure, given: Inputs) -> str:
    """Draw the test-set confusion matrix, counts and shares of all rows; give the alt text."""
    predictions, results = given.predictions, given.results
    figure.set_size_inches(5.5, 4.5)
    ax = figure.subplots()
    counts = confusion_matrix(predictions.truth, predictions.predicted, labels=[0, 1])
    names = [f"not {results.target}", results.target]
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
        f"Test accuracy {results.test_accuracy:.4f}; majority baseline\n"
        f"(always '{names[predictions.majority_class]}') {results.baseline_accuracy:.4f}",
        fontsize=10,
    )
    (true_negative, false_positive), (false_negative, true_positive) = counts
    return (
        f"Confusion matrix on the test set: {true_negative:,} true negatives, {false_positive:,} false positives, "
        f"{false_negative:,} false negatives, {true_positive:,} true positives; test accuracy "
        f"{results.test_accuracy:.4f} against the majority baseline's {results.baseline_accuracy:.4f}."
    )


@drawer("importances", "importances.png", "Feature importances of the best forest", model_specific=True)
def importances(figure: Figure, given: Inputs) -> str:
    """Draw the best forest's impurity-based feature importances, named as the pipeline names them; give the alt text."""
    estimator = given.estimator
    forest = estimator[-1]
    names = [str(name) for name in estimator[:-1].get_feature_names_out()]
    shares = np.asarray(forest.feature_importances_, dtype=float)
    order = np.argsort(shares)[::-1]
    figure.set_size_inches(6.5, max(2.5, 1.2 + 0.3 * len(names)))
    ax = figure.subplots()
    positions = np.arange(len(order))
    ax.barh(positions, shares[order], color=BAR_COLOUR)
    ax.set_yticks(positions, [names[index] for index in order])
    ax.invert_yaxis()
    ax.set_xlabel("mean decrease in impurity (sums to 1)")
    ax.set_title(f"Feature importances of the best forest ({len(forest.estimators_)} trees)", fontsize=10)
    top = ", ".join(f"{names[index]} {shares[index]:.3f}" for index in order[:3])
    return f"Bar chart of the best forest's feature importances over {len(names)} features; the largest: {top}."


def _rounds_note(cv_results: dict[str, Any]) -> str:
    return " (successive halving: each candidate's last round)" if "iter" in cv_results else ""


def _varies(params: Sequence[dict[str, Any]], name: str) -> bool:
    return len(_distinct(candidate.get(name) for candidate in params)) > 1


def _matches(candidate: dict[str, Any], fixed: dict[str, Any]) -> bool:
    return all(label(candidate.get(name)) == label(value) for name, value in fixed.items())


def _distinct(values: Any) -> list[str]:
    """Give the distinct labels of values, in the grid's order."""
    return list(dict.fromkeys(label(value) for value in values))


def label(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:g}"
    return str(value)


def short(name: str) -> str:
    return name.removeprefix(f"{CLASSIFIER_STEP}__")


def candidate_label(candidate: dict[str, Any], names: Sequence[str]) -> str:
    shown = [name for name in names if name in candidate] or list(candidate)
    return ", ".join(f"{short(name)}={label(candidate[name])}" for name in shown) or "the only candidate"
