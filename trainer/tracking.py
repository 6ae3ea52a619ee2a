"""Experiment tracking with MLflow: each finished run, its candidates and its files, in a tracking server.

A run is logged in the shape of MLflow's own scikit-learn autologging of a search: a parent run
(parameters, metrics and tags from results.json; every file of the run folder as an artifact;
the best model as an MLflow model saved with skops, never a pickle), and one nested run per
row of cv_results.csv (the candidate's parameters, its mean and std CV score, its rank).

Where to: --tracking-uri, else MLFLOW_TRACKING_URI (MLflow's own variable), else Dask config
skfleet.tracking.uri (trainer/skfleet.yaml); none of them set: no tracking. The experiment:
--experiment, else MLFLOW_EXPERIMENT_NAME, else skfleet.tracking.experiment.

Tracking never fails a run (RunTracking): a server that can't be reached or refuses gets one
warning line, the run folder is written as it is without tracking, and `python -m skfleet track
RUN_FOLDER` uploads it later. Every upload is idempotent: the MLflow run is found again by its
tag skfleet.run_id, and only what it lacks is added.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dask.config

from skfleet.errors import InputError, TrackingError, first_line
from skfleet.results import CV_RESULTS_FILE, MODEL_FILE, RESULTS_FILE, Results

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

TRACKING_KEY = "skfleet.tracking"
RUN_TAG = "skfleet.run_id"
CANDIDATE_TAG = "skfleet.candidate"
PARENT_TAG = "mlflow.parentRunId"
MODEL_NAME = "model"
# MLflow's HTTP client tries 8 times over minutes, each request waiting up to 120 s, before it gives
# up on a server that is down: a run would sit that long on a tracker. Bounded here (about 5 s when
# nothing listens); the user's own values of these variables win. MLflow's usage telemetry, sent to
# MLflow's servers, is off: skfleet sends nothing outside the user's own network. MLflow's "View run"
# line per finished run is off too: it would print one per candidate, on the stdout that `--json`
# keeps for its one result line.
MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# MLflow records the Git commit of the script that logs a model, and warns when Git can't be used.
# The trainer runs from an installed package (an image without Git): there is no commit to record, and
# its three warnings on every tracked run (commit, branch, repository URL) would teach users to ignore
# warnings. Only those are dropped.
GIT_LOGGER = "mlflow.utils.git_utils"
GIT_WARNING = "Failed to import Git"


class _NoGitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(GIT_WARNING)


NO_GIT_WARNING = _NoGitWarning()
# What a run id (results.json's run_id) may hold: it is written into MLflow's search filters.
RUN_ID = re.compile(r"[\w.:-]{1,200}")
# results.json's numbers logged as the run's metrics.
METRICS = (
    "best_cv_score",
    "test_accuracy",
    "baseline_accuracy",
    "test_roc_auc",
    "positive_rate",
    "fit_seconds",
    "n_candidates",
    "n_fits",
    "n_fits_resumed",
    "resumed_fit_seconds",
)
# cv_results.csv's columns logged as each candidate's metrics (those the search wrote).
CANDIDATE_METRICS = ("mean_test_score", "std_test_score", "rank_test_score", "mean_fit_time", "mean_score_time")
# Packages the logged model needs to load, pinned to this install's versions.
MODEL_REQUIREMENTS = ("scikit-learn", "skops", "numpy", "pandas", "scipy")


@dataclass(frozen=True)
class Target:
    """Where runs go: a tracking URI and an experiment name; UI, where given, is the address people open."""

    uri: str
    experiment: str
    ui: str | None = None


def target(uri: str | None = None, experiment: str | None = None) -> Target | None:
    """Give where runs are tracked, or None: no tracking.

    The option, else MLflow's variable, else Dask config skfleet.tracking.uri; else the server
    skfleet.tracking.service names, when its host resolves (the Compose profile `tracking` on).
    """
    ui = dask.config.get(f"{TRACKING_KEY}.ui", None)
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or dask.config.get(f"{TRACKING_KEY}.uri", None)
    if not uri:
        uri, ui = dask.config.get(f"{TRACKING_KEY}.service", None), dask.config.get(f"{TRACKING_KEY}.service-ui", None)
        if not uri or not _resolves(str(uri)):
            return None
    experiment = (
        experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or dask.config.get(f"{TRACKING_KEY}.experiment", "skfleet")
    )
    return Target(str(uri), str(experiment), str(ui) if ui else None)


def _resolves(url: str) -> bool:
    """Say whether URL's host has an address here (a Compose service that runs, in its network)."""
    try:
        return bool(socket.getaddrinfo(urlsplit(url).hostname or "", None))
    except (OSError, UnicodeError):
        return False


@dataclass(frozen=True)
class Logged:
    """Where a run was logged: results.json's `tracking`."""

    uri: str
    experiment: str
    experiment_id: str
    run_id: str
    # The run's page in the MLflow UI, for an http(s) server; None for a folder store.
    url: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_url(where: Target, experiment_id: str, run_id: str) -> str | None:
    """Give the MLflow UI's page of a run, or None when the tracking URI is not a server's."""
    base = where.ui or where.uri
    if urlsplit(base).scheme not in ("http", "https"):
        return None
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class Tracker:
    """One tracking server and experiment, through MLflow's client: nothing global of MLflow's is touched but for the model."""

    def __init__(self, where: Target) -> None:
        for name, value in MLFLOW_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow import MlflowClient  # here: importing MLflow reads the variables above

        logging.getLogger(GIT_LOGGER).addFilter(NO_GIT_WARNING)  # added once, however many trackers

        self.where = where
        self.client: MlflowClient = MlflowClient(where.uri)
        self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.where.experiment
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException:  # created meanwhile by another run: use it
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise TrackingError(
                f"experiment {name!r} is deleted on {self.where.uri}: restore it, or choose another (--experiment)"
            )
        return found.experiment_id

    def find(self, run_id: str) -> Run | None:
        """Give the MLflow run of skfleet run RUN_ID, or None."""
        if not RUN_ID.fullmatch(run_id):
            raise InputError(f"run id {run_id!r}: not a skfleet run id")
        runs = self.client.search_runs([self.experiment_id], f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1)
        return runs[0] if runs else None

    def open(self, results: Results) -> Run:
        """Give the MLflow run of RESULTS' run, created (running, empty) when there is none yet."""
        run = self.find(results.run_id)
        if run is None:
            start, _ = _times(results)
            run = self.client.create_run(
                self.experiment_id, start_time=start, tags={RUN_TAG: results.run_id}, run_name=results.run_id
            )
        return run

    def logged(self, run: Run) -> Logged:
        """Give where RUN is: results.json's `tracking`."""
        where, run_id = self.where, run.info.run_id
        return Logged(where.uri, where.experiment, self.experiment_id, run_id, run_url(where, self.experiment_id, run_id))

    def upload(self, folder: Path, results: Results, run: Run | None = None) -> Logged:
        """Log run folder FOLDER (its RESULTS) in full; a run that was logged in full is left as it is.

        RUN: the MLflow run `open` gave for it (else it is looked up, or created).
        """
        run = run or self.open(results)
        run_id = run.info.run_id
        if run.info.status == "FINISHED":  # set last, once everything is in
            return self.logged(run)
        start, finished = _times(results)
        try:
            self._log_run(run, results, finished)
            self._log_candidates(run, folder, start, finished)
            self.client.log_artifacts(run_id, str(folder))
            self._log_model(run_id, folder)
        except BaseException:
            with contextlib.suppress(Exception):  # the server may be what failed
                self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED", end_time=finished)
        return self.logged(run)

    def _log_run(self, run: Run, results: Results, finished: int) -> None:
        from mlflow.entities import Metric, Param, RunTag

        params = {key: value for key, value in run_params(results).items() if key not in run.data.params}
        values = {key: getattr(results, key) for key in METRICS if key not in run.data.metrics}
        metrics = [Metric(key, float(value), finished, 0) for key, value in values.items() if value is not None]
        tags = [RunTag(key, value) for key, value in run_tags(results).items()]
        for chunk in _chunks([Param(key, value) for key, value in params.items()], 100):
            self.client.log_batch(run.info.run_id, params=chunk)
        self.client.log_batch(run.info.run_id, metrics=metrics, tags=tags)

    def _log_candidates(self, run: Run, folder: Path, start: int, finished: int) -> None:
        """Log each row of cv_results.csv as a nested run; unfinished ones (an upload cut short) are made again."""
        from mlflow.entities import Metric, Param

        done = set()
        for child in list(self._children(run.info.run_id)):  # all pages, before any is deleted
            if child.info.status == "FINISHED" and CANDIDATE_TAG in child.data.tags:
                done.add(int(child.data.tags[CANDIDATE_TAG]))
            else:
                self.client.delete_run(child.info.run_id)
        for index, (params, metrics) in enumerate(candidates(folder)):
            if index in done:
                continue
            tags = {PARENT_TAG: run.info.run_id, CANDIDATE_TAG: str(index)}
            name = ", ".join(f"{key.split('__')[-1]}={value}" for key, value in params.items())
            child = self.client.create_run(self.experiment_id, start_time=start, tags=tags, run_name=name[:250])
            self.client.log_batch(
                child.info.run_id,
                metrics=[Metric(key, value, finished, 0) for key, value in metrics.items()],
                params=[Param(key, value) for key, value in params.items()],
            )
            self.client.set_terminated(child.info.run_id, "FINISHED", end_time=finished)

    def _children(self, run_id: str) -> Iterator[Run]:
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], f"tags.`{PARENT_TAG}` = '{run_id}'", max_results=1000, page_token=token
            )
            yield from page
            token = page.token
            if not token:
                return

    def _log_model(self, run_id: str, folder: Path) -> None:
        """Log the run's model.skops as an MLflow model (skops inside, the skfleet code it needs beside), once."""
        if self.client.search_logged_models([self.experiment_id], f"source_run_id = '{run_id}'", max_results=1):
            return
        import mlflow
        import mlflow.sklearn

        # Here: skops (and scikit-learn's model classes) load when a model is uploaded, not with the CLI's options.
        from skfleet import run_files

        model = run_files.load_model(folder / MODEL_FILE)
        with _global_tracking_uri(self.where.uri), mlflow.start_run(run_id=run_id):
            mlflow.sklearn.log_model(
                model,
                name=MODEL_NAME,
                serialization_format="skops",
                skops_trusted_types=run_files.TRUSTED_MODEL_TYPES,
                # The pipeline holds skfleet's own classes: the model carries their code.
                code_paths=[str(Path(__file__).parent)],
                pip_requirements=[f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS],
            )


def run_params(results: Results) -> dict[str, str]:
    """Give the MLflow parameters of a run: its settings, grid, dataset and rows, and best_<name> per best parameter."""
    settings = {key: value for key, value in results.settings.items() if key != "param_grid"}
    params: dict[str, Any] = {
        **settings,
        "target": results.target,
        "dataset": results.dataset["name"],
        "dataset_layout": results.dataset["layout"],
        "dataset_checksum": results.dataset["checksum"],
        "n_rows_read": results.n_rows_read,
        "n_train_rows": results.n_train_rows,
        "n_test_rows": results.n_test_rows,
        **{f"grid.{name}": values for name, values in results.settings.get("param_grid", {}).items()},
        **{f"best_{name}": value for name, value in results.best_params.items()},
    }
    return {key: _text(value) for key, value in params.items()}


def run_tags(results: Results) -> dict[str, str]:
    """Give the MLflow tags of a run: where it ran, and the versions of client, scheduler and workers."""
    tags = {
        RUN_TAG: results.run_id,
        "skfleet.scheduler_address": results.scheduler_address,
        "skfleet.local_cluster": _text(results.local_cluster),
        "skfleet.n_workers": str(results.n_workers),
        "skfleet.n_threads": str(results.n_threads),
        **{f"skfleet.version.{package}": version for package, version in results.versions.items()},
    }
    return tags


def candidates(folder: Path) -> Iterator[tuple[dict[str, str], dict[str, float]]]:
    """Give each row of FOLDER's cv_results.csv: the candidate's parameters, and its scores and times."""
    import pandas as pd  # here: pandas loads when the candidates are read, not with the CLI's options

    path = folder / CV_RESULTS_FILE
    try:
        table = pd.read_csv(path)
        rows = [(json.loads(row["params"]), row) for _, row in table.iterrows()]
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{path}: cannot read the candidates: {first_line(error)}") from None
    for params, row in rows:
        plain = {key: _text(value) for key, value in params.items()}  # the grid's names, as the parent's grid.NAME
        if "n_resources" in row:  # successive halving: a candidate per round, on more rows each
            plain |= {"round": _text(int(row["iter"])), "n_resources": _text(int(row["n_resources"]))}
        yield plain, {key: float(row[key]) for key in CANDIDATE_METRICS if key in row and pd.notna(row[key])}


class RunTracking:
    """The trainer's tracking of one run: never fails the run, says once what failed and how to upload later."""

    def __init__(self, where: Target | None) -> None:
        self.where = where
        self.tracker: Tracker | None = None
        self.run: Run | None = None
        self.failure: str | None = None

    def open(self, results: Results) -> Results:
        """Give RESULTS with where the run will be logged (results.json's `tracking`), its MLflow run created."""
        if self.where is None:
            return results
        try:
            self.tracker = Tracker(self.where)
            self.run = self.tracker.open(results)
            return replace(results, tracking=self.tracker.logged(self.run).to_json())
        except Exception as error:
            self.failure = first_line(error)
            return results

    def finish(self, folder: Path, results: Results) -> None:
        """Upload the written run FOLDER; on failure, one warning line on stderr."""
        if self.where is None:
            return
        if self.tracker is not None and self.failure is None:
            try:
                self.tracker.upload(folder, results, self.run)
                return
            except Exception as error:
                self.failure = first_line(error)
            except KeyboardInterrupt:  # the run folder is complete: interrupting the upload loses nothing
                self.failure = "interrupted"
        print(
            f"warning: MLflow tracking at {self.where.uri} failed ({self.failure}); the run folder is complete. "
            f"Upload it later: python -m skfleet track {folder}",
            file=sys.stderr,
            flush=True,
        )


def add_options(cli: argparse.ArgumentParser, *, trainer: bool) -> None:
    """Add the tracking options to CLI (the trainer's, or `track`'s)."""
    group = cli.add_argument_group("tracking (MLflow)")
    group.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking server (http://HOST:5000) or store; default MLFLOW_TRACKING_URI, then Dask config "
        f"{TRACKING_KEY}.uri" + ("; unset: the run is not tracked" if trainer else ""),
    )
    group.add_argument(
        "--experiment",
        metavar="NAME",
        help=f"MLflow experiment; default MLFLOW_EXPERIMENT_NAME, then Dask config {TRACKING_KEY}.experiment "
        f"({dask.config.get(f'{TRACKING_KEY}.experiment', 'skfleet')})",
    )
    if trainer:
        group.add_argument("--no-tracking", action="store_true", help="don't track this run, whatever the settings")


def main(arguments: Sequence[str]) -> int:
    """`python -m skfleet track RUN_FOLDER`: upload a finished run folder to MLflow, idempotently."""
    cli = argparse.ArgumentParser(
        prog="python -m skfleet track",
        description="Upload a finished run folder to MLflow: the run, a nested run per candidate, its files "
        "and its model. A run already there is completed, never duplicated.",
        epilog="Exit codes: 0 uploaded (or already there), 2 not a run folder or no tracking URI, 3 the server failed.",
    )
    cli.add_argument("folder", type=Path, metavar="RUN_FOLDER", help="a run folder the trainer wrote")
    add_options(cli, trainer=False)
    args = cli.parse_args(list(arguments))
    if not (args.folder / RESULTS_FILE).is_file():
        raise InputError(f"{args.folder}: not a run folder (no results.json)")
    results = Results.read(args.folder)
    where = target(args.tracking_uri, args.experiment)
    if where is None:
        raise InputError(f"no tracking server: give --tracking-uri, or set MLFLOW_TRACKING_URI or Dask config {TRACKING_KEY}.uri")
    try:
        logged = Tracker(where).upload(args.folder, results)
    except (TrackingError, InputError):
        raise
    except Exception as error:
        raise TrackingError(f"MLflow tracking at {where.uri} failed: {first_line(error)}") from None
    print(f"run {results.run_id} is MLflow run {logged.run_id} in experiment {where.experiment!r}: {logged.url or where.uri}")
    return 0


def _times(results: Results) -> tuple[int, int]:
    """Give when the run started and finished, in ms: its runs in MLflow sort by when it ran, not when uploaded."""
    finished = int(datetime.fromisoformat(results.finished_at).timestamp() * 1000)
    return finished - int(results.fit_seconds * 1000), finished


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at URI for the block (its log_model knows no other), then put it back."""
    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None: unset, as it was
