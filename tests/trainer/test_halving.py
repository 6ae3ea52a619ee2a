"""Successive halving: `--search halving` on the cluster, its rounds planned as scikit-learn runs them, its report."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from skfleet import data, figures, model, report, search
from skfleet.__main__ import main
from skfleet.config import SearchConfig


@pytest.mark.parametrize(
    ("n_samples", "factor", "depths", "leaves"),
    [(1000, 3, 5, 5), (2040, 5, 5, 5), (500, 4, 7, 1), (100, 2, 3, 3), (40, 5, 5, 5), (13, 3, 2, 2)],
)
def test_planned_rounds_are_the_rounds_scikit_learn_runs(n_samples: int, factor: int, depths: int, leaves: int) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n_samples, 3)), np.arange(n_samples) % 2
    grid = {"max_depth": list(range(1, depths + 1)), "min_samples_leaf": list(range(1, leaves + 1))}
    halving = search.halving_search(DecisionTreeClassifier(random_state=0), grid, SearchConfig(), factor, verbose=False)
    planned = search.planned_rounds(halving, n_samples, n_classes=2)
    halving.set_params(n_jobs=1).fit(X, y)
    assert planned == search.rounds_run(halving, n_samples)
    exhaustive = search.grid_search(DecisionTreeClassifier(), grid, SearchConfig(), verbose=False)
    assert search.planned_rounds(exhaustive, n_samples, n_classes=2) == [(depths * leaves, n_samples)]


def test_the_report_shows_each_candidate_in_the_last_round_it_reached() -> None:
    frame = data.load(None, synthetic_rows=3000, synthetic_seed=5).frame
    features, target = model.feature_matrix(frame)
    grid = {"classifier__n_estimators": [2, 4, 6], "classifier__max_depth": [2, 4, 6]}
    halving = search.halving_search(model.build_pipeline(), grid, SearchConfig(), 3, verbose=False)
    halving.set_params(n_jobs=1).fit(features, target)
    table, best = figures.final_rounds(halving)
    assert list(halving.n_candidates_) == [9, 3, 1]
    assert len(halving.cv_results_["params"]) == 13 and len(table["params"]) == 9
    assert table["params"][best] == halving.best_params_
    # The winner ran in the last round; ranks follow the round reached, then the score.
    assert table["iter"][best] == 2 and table["rank_test_score"][best] == 1
    order = np.argsort(table["rank_test_score"])
    reached = [table["iter"][index] for index in order]
    assert reached == sorted(reached, reverse=True) and sorted(reached) == [0] * 6 + [1] * 2 + [2]
    for index, params in enumerate(table["params"]):
        rows = [row for row, candidate in enumerate(halving.cv_results_["params"]) if candidate == params]
        assert table["mean_test_score"][index] == halving.cv_results_["mean_test_score"][rows[-1]]


@pytest.mark.cluster
def test_halving_on_the_cluster_writes_its_rounds(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    output = tmp_path / "output"
    arguments = ["--synthetic-rows", "3000", "--param", "n_estimators=2,4,6", "--param", "max_depth=2,4,6"]
    code = main([*arguments, "--search", "halving", "--halving-factor", "3", "--workers", "2", "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (folder,) = output.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert results["search"] == "halving" and results["settings"]["halving_factor"] == 3
    assert [step["candidates"] for step in results["rounds"]] == [9, 3, 1]
    rows = [step["rows"] for step in results["rounds"]]
    # x3 the rows each round; the last round on all training rows but the remainder of the division by 9.
    assert rows == [rows[0], 3 * rows[0], 9 * rows[0]] and results["n_train_rows"] - 9 < rows[-1] <= results["n_train_rows"]
    assert results["n_candidates"] == 9 and results["n_fits"] == (9 + 3 + 1) * 3
    assert "successive halving, factor 3: 9 -> 3 -> 1 candidates on" in captured.out
    assert "successive halving, factor 3: 9 -> 3 -> 1 candidates on" in captured.err  # planned, before the fits
    cv_results = pd.read_csv(folder / "cv_results.csv")
    assert list(cv_results["iter"]) == [0] * 9 + [1] * 3 + [2]
    page = html.unescape((folder / report.REPORT_FILE).read_text())
    assert "those that went further rank first" in page and "each candidate's last round" in page


def test_halving_settings_are_checked_before_any_work(tmp_path: Path, capsys) -> None:
    output = tmp_path / "output"
    assert main(["--synthetic-rows", "500", "--halving-factor", "3", "--output", str(output)]) == 2
    assert "error: --halving-factor is a setting of --search halving" in capsys.readouterr().err
    assert main(["--synthetic-rows", "500", "--search", "halving", "--halving-factor", "1", "--output", str(output)]) == 2
    assert "error: --halving-factor must be at least 2, got 1" in capsys.readouterr().err
    assert not output.exists()
