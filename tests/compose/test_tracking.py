"""The tracking profile: MLflow's tracking server on loopback, and the trainer logging every run to it.

Checked as a user would: through MLflow's REST API on the published port, and its UI page of the
run rendered by headless Chromium (a screenshot kept in build/tracking-check/).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import render_in_chromium
from tests.mlflow_api import MlflowApi
from tests.stack import ROOT, TRAIN, Stack, free_port, run_id
from tests.vms import docker_client

pytestmark = pytest.mark.docker

SCREENSHOT_DIR = ROOT / "build" / "tracking-check"
SMALL_GRID = ("--synthetic-rows", "3000", "--param", "n_estimators=5,10", "--param", "max_depth=3,4", "--cv", "2")


@dataclasses.dataclass(frozen=True)
class Tracking:
    stack: Stack
    port: int

    @property
    def api(self) -> MlflowApi:
        return MlflowApi(f"http://127.0.0.1:{self.port}")


@pytest.fixture(scope="module")
def tracking(stack: Stack) -> Iterator[Tracking]:
    port = free_port()
    with_tracking = dataclasses.replace(stack, env={**stack.env, "SKFLEET_TRACKING_PORT": str(port)})
    with_tracking.compose("--profile", "tracking", "up", "--detach", "--build", "--wait", "tracking", timeout=1200)
    try:
        yield Tracking(with_tracking, port)
    finally:
        print(with_tracking.compose("logs", "--tail", "100", "tracking", check=False).stdout)
        with_tracking.compose("--profile", "tracking", "rm", "--stop", "--force", "tracking", check=False)


@pytest.fixture(scope="module")
def tracked(tracking: Tracking) -> tuple[Path, dict[str, Any], float]:
    """The default run (the bundled data, 25 candidates) with the profile on: its folder, results.json, seconds."""
    started = time.monotonic()
    result = tracking.stack.train()
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MLflow run" in result.stdout
    assert "View run" not in result.stdout  # MLflow's own line per run: off
    assert "Git" not in result.stderr, result.stderr  # nor its warnings that the image has no Git
    folder = tracking.stack.output_dir / run_id(result)
    return folder, json.loads((folder / "results.json").read_text()), took


def params_of(run: dict[str, Any]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in run["data"].get("params", [])}


def metrics_of(run: dict[str, Any]) -> dict[str, float]:
    return {item["key"]: item["value"] for item in run["data"].get("metrics", [])}


def test_a_run_with_the_profile_on_is_in_mlflow_with_its_candidates_files_and_model(tracking: Tracking, tracked) -> None:
    folder, results, _ = tracked
    (parent,) = tracking.api.parent(results["run_id"])
    info = parent["info"]
    assert info["status"] == "FINISHED" and info["run_name"] == results["run_id"]
    params, metrics = params_of(parent), metrics_of(parent)
    for name, values in results["settings"]["param_grid"].items():
        assert json.loads(params[f"grid.{name}"]) == values, name
    assert params["dataset_checksum"] == results["dataset"]["checksum"] and params["scoring"] == results["scoring"]
    assert metrics["best_cv_score"] == pytest.approx(results["best_cv_score"])
    assert metrics["test_accuracy"] == pytest.approx(results["test_accuracy"])
    children = tracking.api.children(info["run_id"])
    assert len(children) == results["n_candidates"] == 25
    ranks = sorted(metrics_of(child)["rank_test_score"] for child in children)
    assert ranks[0] == 1 and all(child["info"]["status"] == "FINISHED" for child in children)
    assert tracking.api.artifacts(info["run_id"]) == {path.name for path in folder.iterdir()}
    models = tracking.api.get(
        "logged-models/search",
        {"experiment_ids": [info["experiment_id"]], "filter": f"source_run_id = '{info['run_id']}'"},
    )["models"]
    assert [model["info"]["name"] for model in models] == ["model"]
    # Where it went, in results.json and on the report page: the run's page as the host opens it.
    url = f"http://127.0.0.1:{tracking.port}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"
    assert results["tracking"]["url"] == url
    assert f'<a id="mlflow-run" href="{url}">' in (folder / "report.html").read_text()


def test_tracking_costs_seconds_and_changes_no_score(tracking: Tracking, tracked) -> None:
    _, results, first = tracked
    started = time.monotonic()
    result = tracking.stack.train("--no-tracking")  # on the cluster the tracked run warmed
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MLflow run" not in result.stdout
    other = json.loads((tracking.stack.output_dir / run_id(result) / "results.json").read_text())
    assert other["tracking"] is None
    assert (other["best_params"], other["best_cv_score"], other["test_accuracy"]) == (
        results["best_params"], results["best_cv_score"], results["test_accuracy"]
    )  # fmt: skip
    print(f"\nthe default run: {first:.1f} s tracked on a cold cluster, {took:.1f} s not tracked on a warm one")


def test_a_server_that_is_down_costs_one_warning_and_track_uploads_the_run_once(tracking: Tracking) -> None:
    stack = tracking.stack
    # The server named explicitly (as a user's own would be), its process down (its host answers, the port is
    # closed; the tracking container's 5000 stays up for the upload): the run is kept all the same.
    down = "http://tracking:5001"
    result = stack.compose(*TRAIN[:-1], "-e", f"MLFLOW_TRACKING_URI={down}", "trainer", *SMALL_GRID, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rid = run_id(result)
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning: MLflow")]
    assert warning.startswith(f"warning: MLflow tracking at {down} failed (")
    assert warning.endswith(f"Upload it later: python -m skfleet track /output/{rid}")
    assert json.loads((stack.output_dir / rid / "results.json").read_text())["tracking"] is None
    for _ in range(2):  # a second upload adds nothing
        uploaded = stack.compose(*TRAIN, "track", f"/output/{rid}", check=False)
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        (parent,) = tracking.api.parent(rid)
        assert parent["info"]["status"] == "FINISHED"
        assert len(tracking.api.children(parent["info"]["run_id"])) == 4
    assert uploaded.stdout.strip().endswith(f"/#/experiments/{parent['info']['experiment_id']}/runs/{parent['info']['run_id']}")


def test_the_server_listens_on_loopback_only_hardened_and_answers_only_its_own_names(tracking: Tracking) -> None:
    stack = tracking.stack
    assert stack.compose("port", "tracking", "5000").stdout.strip() == f"127.0.0.1:{tracking.port}"
    (container_id,) = stack.compose("ps", "--quiet", "tracking").stdout.split()
    attrs = docker_client().containers.get(container_id).attrs
    assert attrs["Config"]["User"] == "10001:10001"
    assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert tracking.api.experiment_id()  # as 127.0.0.1
    # A name it was not given (DNS rebinding: a web page's own name pointed at 127.0.0.1) is refused.
    refused, _ = tracking.api.call("experiments/get-by-name?experiment_name=skfleet", host="attacker.example:5000")
    assert refused in (400, 403)


def test_mlflows_own_ui_shows_the_run_and_its_metrics(tracking: Tracking, tracked, tmp_path: Path) -> None:
    _, results, _ = tracked
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / "mlflow-run.png"
    screenshot.unlink(missing_ok=True)
    url = results["tracking"]["url"]
    budget = "--virtual-time-budget=20000"  # MLflow's UI is a React app: let it fetch and render
    render_in_chromium(url, budget, f"--screenshot={screenshot}", "--window-size=1440,1600", profile=tmp_path / "shot")
    print(f"\nMLflow's page of the run, rendered by Chromium: {screenshot}")
    assert screenshot.stat().st_size > 20_000
    dom = render_in_chromium(url, budget, "--dump-dom", profile=tmp_path / "dom").stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    assert results["run_id"] in text, text[-3000:]
    assert "best_cv_score" in text and f"{results['best_cv_score']:.4f}"[:5] in text, text[-3000:]
