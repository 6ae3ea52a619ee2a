"""Experiment tracking with MLflow (skfleet/tracking.py), against MLflow's own folder store: no server needed.

The store is MLflow's, read back through MLflow's client as a user's would be. The tracking server
of the Compose profile `tracking`, over HTTP, is tests/compose/test_tracking.py's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from skfleet import data
from skfleet.model import feature_matrix
from skfleet.results import Results
from skfleet.run_files import load_model
from skfleet.tracking import CANDIDATE_TAG, PARENT_TAG, RUN_TAG, Target, Tracker, target
from tests.summary import summary_value

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MLflow's own, on its folder store

GRID = ["--synthetic-rows", "1500", "--param", "n_estimators=4,8", "--param", "max_depth=3,4,5", "--cv", "2"]
N_CANDIDATES = 6
EXPERIMENT = "skfleet-tests"


def skfleet(*arguments: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m skfleet ARGUMENTS` as a user does, MLflow's folder store allowed."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    environment |= {"MLFLOW_ALLOW_FILE_STORE": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "skfleet", *arguments], capture_output=True, text=True, env=environment, cwd=cwd, timeout=600
    )


def store_uri(folder: Path) -> str:
    return folder.resolve().as_uri()


def runs_of(uri: str) -> tuple[Any, list[Any], list[Any]]:
    """Give the store's client, its parent runs and its candidate runs of the test experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if PARENT_TAG not in run.data.tags]
    children = [run for run in runs if PARENT_TAG in run.data.tags]
    return client, parents, children


@pytest.fixture(autouse=True)
def _folder_store_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its folder store only when told


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, subprocess.CompletedProcess[str]]:
    """A run tracked by MLFLOW_TRACKING_URI (MLflow's own variable): the store's URI, the run folder, the trainer's output."""
    root = tmp_path_factory.mktemp("tracked")
    uri = store_uri(root / "mlruns")
    # Without Git, as in the images: GitPython, which MLflow uses to record the commit, fails to import.
    no_git = {"GIT_PYTHON_GIT_EXECUTABLE": "/nonexistent/git"}
    done = skfleet(
        *GRID, "--output", str(root / "output"), env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT, **no_git}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (root / "output").iterdir()
    return uri, folder, done


def test_a_tracked_run_without_git_prints_none_of_mlflows_git_warnings(tracked) -> None:
    # MLflow warns, twice a run, that it cannot record a commit: there is none to record (an installed package).
    _, _, done = tracked
    assert "Git" not in done.stderr, done.stderr


def test_a_tracked_run_is_a_parent_run_with_a_nested_run_per_candidate(tracked) -> None:
    uri, folder, done = tracked
    results = Results.read(folder)
    _, (parent,), children = runs_of(uri)
    assert parent.info.status == "FINISHED" and parent.info.run_name == results.run_id
    assert parent.data.tags[RUN_TAG] == results.run_id
    params = parent.data.params
    assert json.loads(params["grid.classifier__n_estimators"]) == [4, 8]
    assert json.loads(params["grid.classifier__max_depth"]) == [3, 4, 5]
    assert (params["cv"], params["scoring"], params["search"]) == ("2", "accuracy", "grid")
    for key in ("random_state", "test_size", "split_random_state", "shared_trees"):
        assert json.loads(params[key]) == results.settings[key], key
    assert params["dataset"] == results.dataset["name"] and params["dataset_checksum"] == results.dataset["checksum"]
    assert params["dataset_layout"] == results.dataset["layout"] and int(params["n_train_rows"]) == results.n_train_rows
    assert {key: json.loads(params[f"best_{key}"]) for key in results.best_params} == results.best_params
    metrics = parent.data.metrics
    for key in ("best_cv_score", "test_accuracy", "baseline_accuracy", "test_roc_auc", "fit_seconds", "n_fits", "n_fits_resumed"):
        assert metrics[key] == pytest.approx(float(getattr(results, key))), key
    assert parent.data.tags["skfleet.version.scikit-learn"] == results.versions["scikit-learn"]
    assert parent.data.tags["skfleet.n_workers"] == str(results.n_workers)
    # One nested run per candidate, as MLflow's autologging logs a search: its parameters, scores and rank.
    cv_results = pd.read_csv(folder / "cv_results.csv")
    assert len(children) == N_CANDIDATES == len(cv_results)
    for child in children:
        row = cv_results.iloc[int(child.data.tags[CANDIDATE_TAG])]
        assert child.data.tags[PARENT_TAG] == parent.info.run_id and child.info.status == "FINISHED"
        assert {key: json.loads(value) for key, value in child.data.params.items()} == json.loads(row["params"])
        for key in ("mean_test_score", "std_test_score", "rank_test_score"):
            assert child.data.metrics[key] == pytest.approx(row[key]), key
    # results.json and the summary say where the run went.
    assert results.tracking == {
        "uri": uri,
        "experiment": EXPERIMENT,
        "experiment_id": parent.info.experiment_id,
        "run_id": parent.info.run_id,
        "url": None,  # a folder store has no UI
    }
    assert summary_value(done.stdout, "MLflow run") == f"{parent.info.run_id} in experiment {EXPERIMENT} at {uri}"
    assert parent.info.run_id in (folder / "report.html").read_text()


def test_the_run_folder_is_the_runs_artifacts_and_the_model_loads_back_without_pickle(tracked) -> None:
    import mlflow.sklearn

    uri, folder, _ = tracked
    client, (parent,), _ = runs_of(uri)
    artifacts = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {path.name for path in folder.iterdir()}
    (model,) = client.search_logged_models([parent.info.experiment_id], f"source_run_id = '{parent.info.run_id}'")
    assert model.name == "model"
    mlflow.set_tracking_uri(uri)
    try:
        assert mlflow.models.get_model_info(model.model_uri).flavors["sklearn"]["serialization_format"] == "skops"
        logged = mlflow.sklearn.load_model(model.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    # Rows the model never saw, read as the trainer reads its data.
    features, _ = feature_matrix(data.load(None, synthetic_rows=200, synthetic_seed=7).frame)
    expected = load_model(folder / "model.skops").predict_proba(features)
    assert np.array_equal(logged.predict_proba(features), expected)


def test_track_uploads_a_run_once_and_completes_a_cut_short_upload(tracked, tmp_path: Path) -> None:
    _, folder, _ = tracked
    uri = store_uri(tmp_path / "other-store")
    results = Results.read(folder)
    # An upload cut short: the parent run made (as the trainer makes it before writing the folder), a
    # candidate's run left running.
    tracker = Tracker(Target(uri, EXPERIMENT))
    logged = tracker.logged(tracker.open(results))
    tracker.client.create_run(tracker.experiment_id, tags={PARENT_TAG: logged.run_id, CANDIDATE_TAG: "0"})
    for _ in range(2):
        done = skfleet("track", str(folder), "--tracking-uri", uri, "--experiment", EXPERIMENT)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == f"run {results.run_id} is MLflow run {logged.run_id} in experiment '{EXPERIMENT}': {uri}"
        _, (parent,), children = runs_of(uri)
        assert parent.info.run_id == logged.run_id and parent.info.status == "FINISHED"
        assert sorted(int(child.data.tags[CANDIDATE_TAG]) for child in children) == list(range(N_CANDIDATES))
        assert all(child.info.status == "FINISHED" for child in children)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_cannot_be_reached_costs_one_warning_and_the_run_is_kept(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    done = skfleet(*GRID, "--output", str(tmp_path / "output"), "--quiet", env={"MLFLOW_TRACKING_URI": uri})
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "output").iterdir()
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: MLflow")]
    assert warnings == [line for line in done.stderr.splitlines() if line.strip()], done.stderr  # one line, nothing else
    (warning,) = warnings
    assert warning.startswith(f"warning: MLflow tracking at {uri} failed (")
    assert warning.endswith(f"the run folder is complete. Upload it later: python -m skfleet track {folder}")
    assert Results.read(folder).tracking is None
    assert {path.name for path in folder.iterdir()} >= {"results.json", "cv_results.csv", "model.skops", "report.html"}
    print(f"a run against an unreachable tracking server: {took:.1f} s in all")
    # Later, the server up (here: a store), the run uploads once.
    store = store_uri(tmp_path / "mlruns")
    assert skfleet("track", str(folder), "--tracking-uri", store, "--experiment", EXPERIMENT).returncode == 0
    assert len(runs_of(store)[1]) == 1


def test_no_tracking_wins_over_the_settings(tmp_path: Path) -> None:
    uri = store_uri(tmp_path / "mlruns")
    done = skfleet(*GRID, "--output", str(tmp_path / "output"), "--quiet", "--no-tracking", env={"MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "mlruns").exists()
    (folder,) = (tmp_path / "output").iterdir()
    assert Results.read(folder).tracking is None


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["{tmp}"], "error: {tmp}: not a run folder (no results.json)"),
        (["{tmp}/none", "--tracking-uri", "http://127.0.0.1:9"], "error: {tmp}/none: not a run folder (no results.json)"),
    ],
)
def test_track_refuses_what_is_not_a_run_folder(tmp_path: Path, arguments: list[str], expected: str) -> None:
    done = skfleet("track", *(argument.format(tmp=tmp_path) for argument in arguments))
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, expected.format(tmp=tmp_path), "")


def test_track_without_a_tracking_uri_says_how_to_give_one(tracked) -> None:
    _, folder, _ = tracked
    done = skfleet("track", str(folder))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: no tracking server: give --tracking-uri, or set MLFLOW_TRACKING_URI or Dask config skfleet.tracking.uri"
    )


def test_a_results_json_written_before_tracking_still_reads(tracked) -> None:
    _, folder, _ = tracked
    document = json.loads((folder / "results.json").read_text())
    del document["tracking"]
    assert Results.from_json(document).tracking is None


def test_where_runs_go_the_option_then_mlflows_variable_then_dask_config_then_a_service_that_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dask.config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    service = {"skfleet.tracking.service": "http://localhost:5000", "skfleet.tracking.service-ui": "http://127.0.0.1:5001"}
    assert target() is None
    with dask.config.set({"skfleet.tracking.service": "http://no-such-host.invalid:5000"}):
        assert target() is None  # the profile is off: its server's name does not resolve
    with dask.config.set(service):
        assert target() == Target("http://localhost:5000", "skfleet", "http://127.0.0.1:5001")
        with dask.config.set({"skfleet.tracking.uri": "http://config:5000", "skfleet.tracking.experiment": "nightly"}):
            assert target() == Target("http://config:5000", "nightly", None)  # the service's UI is not this server's
            monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://variable:5000")
            monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
            assert target() == Target("http://variable:5000", "mine", None)
            assert target("http://option:5000", "flights") == Target("http://option:5000", "flights", None)


def test_a_halving_search_logs_a_nested_run_per_candidate_and_round(tmp_path: Path) -> None:
    uri = store_uri(tmp_path / "mlruns")
    grid = ["--synthetic-rows", "3000", "--param", "n_estimators=4,8", "--param", "max_depth=3,4,5", "--cv", "2"]
    done = skfleet(*grid, "--search", "halving", "--halving-factor", "3", "--output", str(tmp_path / "output"), "--quiet",
                   env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "output").iterdir()
    results = Results.read(folder)
    _, (parent,), children = runs_of(uri)
    assert parent.data.params["search"] == "halving" and json.loads(parent.data.params["halving_factor"]) == 3
    assert len(children) == sum(step["candidates"] for step in results.rounds) == len(pd.read_csv(folder / "cv_results.csv"))
    rounds = sorted({(int(child.data.params["round"]), int(child.data.params["n_resources"])) for child in children})
    assert [rows for _, rows in rounds] == [step["rows"] for step in results.rounds]
