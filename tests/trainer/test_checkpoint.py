"""Checkpoints of finished fits, on a real Dask cluster: what is reused, what runs again."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster, get_task_stream

from skfleet import data, model, search
from skfleet.__main__ import main
from skfleet.checkpoint import FOLDER, FitCheckpoint
from skfleet.config import SearchConfig
from tests.summary import summary_value

pytestmark = pytest.mark.cluster

GRID = {"classifier__n_estimators": [2, 6], "classifier__max_depth": [3, 6]}
CV_KEYS = ("params", "mean_test_score", "std_test_score", "rank_test_score", "split0_test_score", "split2_test_score")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as connected,
    ):
        yield connected


@pytest.fixture(scope="module")
def training() -> tuple[pd.DataFrame, pd.Series]:
    frame = data.load(None, synthetic_rows=3000, synthetic_seed=5).frame
    train, _ = data.split(frame, test_size=0.3, seed=100)
    return model.feature_matrix(train)


def fitted(
    client: Client,
    training: tuple[pd.DataFrame, pd.Series],
    output: Path,
    grid=GRID,
    random_state: int = 10,
    resume=True,
    shared_trees=False,
) -> tuple[search.SearchOutcome, int]:
    """Give the search's outcome and how many tasks ran on the cluster: fits, or with SHARED_TREES forests."""
    features, target = training
    pipeline = model.build_pipeline(random_state)
    grid_search = search.grid_search(pipeline, grid, SearchConfig(), shared_trees=shared_trees, verbose=False)
    fits = FitCheckpoint(output, features, target, grid_search, resume=resume)
    with get_task_stream(client) as stream:
        outcome = search.run(grid_search, features, target, client, fits)
    # joblib names each task after its batch: [mixed_]batch_of__fit_and_score_N_calls-<uuid>.
    function = "_fit_group" if shared_trees else "_fit_and_score"
    batches = [re.match(rf"(?:mixed_)?batch_of_{function}_(\d+)_calls", task["key"]) for task in stream.data]
    return outcome, sum(int(batch[1]) for batch in batches if batch)


def checkpoint_lines(output: Path) -> list[dict]:
    (path,) = (output / FOLDER).iterdir()
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_cv_results(first: search.SearchOutcome, second: search.SearchOutcome) -> None:
    assert second.search.best_params_ == first.search.best_params_
    for key in CV_KEYS:
        np.testing.assert_array_equal(first.search.cv_results_[key], second.search.cv_results_[key], err_msg=key)


def test_every_finished_fit_is_stored_and_a_rerun_reuses_all(client, training, tmp_path: Path) -> None:
    first, ran = fitted(client, training, tmp_path)
    assert (ran, first.n_fits_resumed) == (12, 0)
    lines = checkpoint_lines(tmp_path)
    assert len(lines) == 12 and len({line["key"] for line in lines}) == 12
    assert {"fit_time", "score_time", "test_scores", "n_test_samples"} <= set(lines[0]["result"])

    second, ran = fitted(client, training, tmp_path)
    assert (ran, second.n_fits_resumed) == (0, 12)  # not one fit sent to the cluster
    expected_seconds = sum(line["result"]["fit_time"] + line["result"]["score_time"] for line in lines)
    assert second.resumed_fit_seconds == pytest.approx(expected_seconds)
    assert_same_cv_results(first, second)


def test_an_overlapping_grid_reuses_only_the_shared_candidates(client, training, tmp_path: Path) -> None:
    fitted(client, training, tmp_path, grid={"classifier__n_estimators": [2], "classifier__max_depth": [3, 6]})
    alone, _ = fitted(client, training, tmp_path / "alone", grid=GRID)
    overlapping, ran = fitted(client, training, tmp_path, grid=GRID)
    assert (ran, overlapping.n_fits_resumed) == (6, 6)
    assert_same_cv_results(alone, overlapping)


def test_other_data_or_another_seed_reuses_nothing(client, training, tmp_path: Path) -> None:
    fitted(client, training, tmp_path)
    features, target = training
    _, ran = fitted(client, (features.iloc[1:], target.iloc[1:]), tmp_path)
    assert ran == 12
    reseeded, ran = fitted(client, training, tmp_path, random_state=11)
    assert (ran, reseeded.n_fits_resumed) == (12, 0)
    assert len(list((tmp_path / FOLDER).iterdir())) == 3  # one file per data and estimator


def test_no_resume_starts_afresh(client, training, tmp_path: Path) -> None:
    fitted(client, training, tmp_path)
    again, ran = fitted(client, training, tmp_path, resume=False)
    assert (ran, again.n_fits_resumed) == (12, 0)
    assert len(checkpoint_lines(tmp_path)) == 12


def test_a_line_cut_short_by_a_crash_is_skipped(client, training, tmp_path: Path) -> None:
    fitted(client, training, tmp_path)
    (path,) = (tmp_path / FOLDER).iterdir()
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, -1) + 30])  # the last line ends mid-way
    resumed, ran = fitted(client, training, tmp_path)
    assert (ran, resumed.n_fits_resumed) == (1, 11)


def test_an_unwritable_checkpoint_only_costs_the_resume(client, training, tmp_path: Path, caplog) -> None:
    (tmp_path / FOLDER).write_text("a file where the folder should be")
    outcome, ran = fitted(client, training, tmp_path)
    assert (ran, outcome.n_fits) == (12, 12)
    assert "not checkpointing finished fits any more" in caplog.text


def test_shared_forests_are_stored_per_forest_and_a_rerun_reuses_all(client, training, tmp_path: Path) -> None:
    first, ran = fitted(client, training, tmp_path, shared_trees=True)
    assert (ran, first.n_fits_resumed) == (6, 0)  # 2 max_depth groups x 3 folds, each answering 2 n_estimators
    lines = checkpoint_lines(tmp_path)
    assert len(lines) == 6 and all(len(line["result"]) == 2 for line in lines)
    second, ran = fitted(client, training, tmp_path, shared_trees=True)
    assert (ran, second.n_fits_resumed) == (0, 12)
    expected_seconds = sum(fit["fit_time"] + fit["score_time"] for line in lines for fit in line["result"])
    assert second.resumed_fit_seconds == pytest.approx(expected_seconds)
    assert_same_cv_results(first, second)
    per_candidate, _ = fitted(client, training, tmp_path / "per-candidate")
    assert_same_cv_results(per_candidate, second)


def test_a_grid_with_more_values_of_other_parameters_reuses_the_shared_forests(client, training, tmp_path: Path) -> None:
    fitted(client, training, tmp_path, grid={**GRID, "classifier__max_depth": [3]}, shared_trees=True)
    widened, ran = fitted(client, training, tmp_path, shared_trees=True)
    assert (ran, widened.n_fits_resumed) == (3, 6)


def test_a_finished_run_removes_its_checkpoint_and_reports_the_resume(client, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", client.scheduler.address)
    output = tmp_path / "output"
    argv = ["--synthetic-rows", "2000", "--param", "n_estimators=2,4", "--param", "max_depth=3", "--output", str(output)]
    argv += ["--workers", "2", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    first_run = set(output.iterdir())
    assert [path.name for path in first_run if path.name.startswith(".")] == []

    # What an interrupted run leaves: the forest of one fold, which answered both candidates there.
    features, target = model.feature_matrix(data.split(data.load(None, synthetic_rows=2000).frame, test_size=0.3, seed=100)[0])
    grid = {"classifier__n_estimators": [2, 4], "classifier__max_depth": [3]}
    fitted(client, (features, target), output, grid=grid, shared_trees=True)
    (path,) = (output / FOLDER).iterdir()
    path.write_text(path.read_text().splitlines(keepends=True)[0])
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    (latest,) = set(output.iterdir()) - first_run
    results = json.loads((latest / "results.json").read_text())
    assert results["n_fits_resumed"] == 2 and results["resumed_fit_seconds"] > 0
    assert results["shared_trees"]["description"] == "6 fits answered by 3 forest fits (12 of 18 trees)"
    assert summary_value(stdout, "resumed").startswith("2 of 6 fits from the checkpoint of an interrupted run (saved ")
    assert not (output / FOLDER).exists()
