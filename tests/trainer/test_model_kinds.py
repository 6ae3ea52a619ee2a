"""The model seam: `--model` (or the Dask config, or the grid file) picks a kind, and the run follows what the kind declares."""

from __future__ import annotations

import json
from pathlib import Path

import dask.config
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import GridSearchCV

from skfleet import data, figures, model, report, results, run_files
from skfleet.__main__ import main
from skfleet.forest_search import ForestGridSearchCV
from tests.trainer.test_cli import assert_clean_failure, run
from tests.trainer.test_forest_search import assert_same_search

BOOSTING = "hist-gradient-boosting"
SMALL_BOOSTING = ["--param", "max_iter=3,6", "--param", "learning_rate=0.1,0.3", "--cv", "2", "--workers", "1"]


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs on a local cluster of its own, whatever the environment holds."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def only_run(output: Path) -> Path:
    (folder,) = [path for path in output.iterdir() if not path.name.startswith(".")]
    return folder


def test_every_kind_declares_a_default_grid_its_classifier_accepts_and_a_size_it_has() -> None:
    assert model.DEFAULT_KIND == "random-forest" == results.Results.__dataclass_fields__["model"].default
    for kind in model.KINDS.values():
        pipeline = model.build_pipeline(10, kind.name)
        assert type(pipeline.named_steps["classifier"]) is type(kind.classifier(0))
        assert set(kind.default_grid) <= set(kind.parameters())
        # Its default grid shares fits: one per fold answers every size of the grid.
        grid = {f"classifier__{name}": values for name, values in kind.default_grid.items()}
        assert ForestGridSearchCV(pipeline, grid).forests_per_fold() is not None
        assert pipeline.named_steps["classifier"].random_state == 10
        assert set(kind.figures) <= {known.id for known in figures.FIGURES if known.model_specific}
        assert set(kind.trusted_types) <= set(run_files.TRUSTED_MODEL_TYPES)
    # The forest's default grid is the original demo's, unchanged; boosting runs without early stopping.
    assert model.RANDOM_FOREST.default_grid == {"n_estimators": [2, 4, 6, 8, 10], "max_depth": [2, 4, 6, 8, 10]}
    assert model.HIST_GRADIENT_BOOSTING.classifier(0).early_stopping is False


def test_hist_gradient_boosting_runs_end_to_end_with_shared_stages(output: Path, local: None, capsys) -> None:
    code, stderr = run(["--synthetic-rows", "1500", "--model", BOOSTING, *SMALL_BOOSTING], output, capsys)
    assert code == 0, stderr
    folder = only_run(output)
    ran = results.Results.read(folder)
    assert ran.model == BOOSTING
    assert set(ran.best_params) == {"classifier__max_iter", "classifier__learning_rate"}
    assert ran.settings["model"] == BOOSTING
    # One boosting fit of max_iter=6 per learning rate and fold answered both max_iter values.
    assert ran.shared_trees["ensemble"] == "boosting" and ran.shared_trees["forest_fits"] == 4
    assert ran.shared_trees["description"] == "8 fits answered by 4 boosting fits (24 of 36 iterations)"
    # The report shows what the kind has: no forest importances, every common figure.
    assert "importances.png" not in ran.report_files and "heatmap.png" in ran.report_files
    assert sorted(path.name for path in folder.iterdir()) == report.run_files(BOOSTING)
    assert report.run_files(BOOSTING) == sorted(set(report.RUN_FILES) - {"importances.png"})
    page = (folder / "report.html").read_text()
    assert 'id="importances"' not in page and 'id="heatmap"' in page and "hist-gradient-boosting" in page
    loaded = run_files.load_model(folder / results.MODEL_FILE)
    assert isinstance(loaded.named_steps["classifier"], HistGradientBoostingClassifier)
    assert loaded.named_steps["classifier"].max_iter == ran.best_params["classifier__max_iter"]


def test_the_model_comes_from_the_dask_config_and_a_grid_file_and_the_option_wins(
    tmp_path: Path, output: Path, local: None, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(dask.config.config["skfleet"]["trainer"], "model", BOOSTING)  # as DASK_SKFLEET__TRAINER__MODEL does
    with pytest.raises(SystemExit) as ended:
        main(["train", "--help"])
    assert ended.value.code == 0
    assert "(default hist-gradient-boosting, or the grid file's; DASK_SKFLEET__TRAINER__MODEL)" in " ".join(
        capsys.readouterr().out.split()
    )
    grid = ["--param", "max_iter=2", "--param", "max_depth=2", "--cv", "2", "--workers", "1"]
    assert run(["--synthetic-rows", "600", *grid], output, capsys)[0] == 0
    assert results.Results.read(only_run(output)).model == BOOSTING
    # A grid file's model wins over the Dask config's; the option over both.
    forest = tmp_path / "forest.yaml"
    forest.write_text("model: random-forest\nparam_grid:\n  n_estimators: [2]\n")
    assert run(["--synthetic-rows", "600", "--grid", str(forest), "--cv", "2", "--workers", "1"], output / "file", capsys)[0] == 0
    assert results.Results.read(only_run(output / "file")).model == "random-forest"
    code, stderr = run(["--synthetic-rows", "600", "--grid", str(forest), "--model", BOOSTING], output / "option", capsys)
    # The file's grid is the forest's: the boosting model has no n_estimators, and says which it has.
    assert_clean_failure(
        code,
        stderr,
        output / "option",
        2,
        f"{forest}: unknown parameter 'n_estimators'",
        "HistGradientBoostingClassifier's parameters",
        "max_iter",
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            {"env": "gradient-boosting"},
            "Dask config skfleet.trainer.model (DASK_SKFLEET__TRAINER__MODEL): unknown model 'gradient-boosting'",
        ),
        ({"file": "model: xgboost\n"}, "model: unknown model 'xgboost'; the models are random-forest, hist-gradient-boosting"),
        ({"option": "forest"}, "argument --model: invalid choice: 'forest'"),
    ],
)
def test_an_unknown_model_is_refused_with_the_models_named(
    tmp_path: Path, output: Path, monkeypatch: pytest.MonkeyPatch, capsys, setting: dict[str, str], expected: str
) -> None:
    arguments = ["--synthetic-rows", "300"]
    if "env" in setting:
        monkeypatch.setitem(dask.config.config["skfleet"]["trainer"], "model", setting["env"])
    if "file" in setting:
        grid = tmp_path / "grid.yaml"
        grid.write_text(setting["file"])
        arguments += ["--grid", str(grid)]
    if "option" in setting:
        arguments += ["--model", setting["option"]]
    code, stderr = run(arguments, output, capsys)
    assert_clean_failure(code, stderr, output, 2, expected)


def test_a_results_json_written_before_there_were_kinds_reads_as_a_forest(
    tmp_path: Path, output: Path, local: None, capsys
) -> None:
    grid = ["--param", "n_estimators=2", "--param", "max_depth=2", "--cv", "2", "--workers", "1"]
    assert run(["--synthetic-rows", "600", *grid], output, capsys)[0] == 0
    path = only_run(output) / results.RESULTS_FILE
    document = json.loads(path.read_text())
    assert document["model"] == "random-forest"
    del document["model"]
    path.write_text(json.dumps(document))
    assert results.Results.read(path.parent).model == "random-forest"


def test_the_trainer_boosting_pipeline_on_flights_equals_grid_search(asa_csv: Path) -> None:
    X, y = model.feature_matrix(data.load(asa_csv).frame)
    pipeline = model.build_pipeline(random_state=10, model=BOOSTING)
    grid = {"classifier__max_iter": [4, 8, 16], "classifier__max_depth": [2, None]}
    ours = ForestGridSearchCV(pipeline, grid, cv=3).fit(X, y)
    theirs = GridSearchCV(pipeline, grid, cv=3).fit(X, y)
    assert ours.shared_trees_.fallback is None and ours.shared_trees_.forest_fits == 6
    assert_same_search(ours, theirs, X)
