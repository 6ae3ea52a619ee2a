"""On a real Dask cluster (an in-process LocalCluster): equal results, the version gate, a full run."""

from __future__ import annotations

import json
import pickle
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dask.config
import numpy as np
import pandas as pd
import pytest
from dask.sizeof import sizeof
from distributed import Client, LocalCluster, get_task_stream
from sklearn.model_selection import GridSearchCV

from skfleet import cluster, data, guards, model, search
from skfleet.__main__ import main
from skfleet.config import SearchConfig
from skfleet.errors import ClusterError, VersionMismatchError
from skfleet.results import Results
from skfleet.run_files import load_model
from skfleet.versions import CHECKED_PACKAGES
from tests.summary import summary, summary_value

pytestmark = pytest.mark.cluster

GRID = {"classifier__n_estimators": [2, 6], "classifier__max_depth": [3, 6]}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local


@pytest.fixture
def client(local_cluster: LocalCluster) -> Iterator[Client]:
    with Client(local_cluster) as connected:
        yield connected


def _training_data() -> tuple[pd.DataFrame, pd.Series]:
    frame = data.load(None, synthetic_rows=3000, synthetic_seed=5).frame
    train, _ = data.split(frame, test_size=0.3, seed=100)
    return model.feature_matrix(train)


# The tasks each search makes: shared trees also refit the best forest on the cluster, in exact chunks joined by a task.
TASKS = {
    True: {"batch_of__fit_group_1_calls", "_fit_chunk", "batch_of__join_refit_1_calls"},
    False: {"batch_of__fit_and_score_1_calls"},
}


@pytest.mark.parametrize("shared_trees", [True, False])
def test_dask_search_equals_local_search(client: Client, shared_trees: bool) -> None:
    features, target = _training_data()
    local = GridSearchCV(model.build_pipeline(), GRID, cv=3, scoring="accuracy")  # scikit-learn's own, in this process
    local.fit(features, target)
    with get_task_stream(client) as task_stream:
        distributed = search.run(
            search.grid_search(model.build_pipeline(), GRID, SearchConfig(), shared_trees=shared_trees, verbose=False),
            features,
            target,
            client,
        )

    assert distributed.n_fits == 12
    assert distributed.search.best_params_ == local.best_params_
    for key in ("mean_test_score", "std_test_score", "rank_test_score", *[f"split{i}_test_score" for i in range(3)]):
        np.testing.assert_array_equal(distributed.search.cv_results_[key], local.cv_results_[key], err_msg=key)
    # The fits ran on the cluster's workers, as whole fits: no nested encoder or tree
    # tasks (joblib#1013), which made every fit wait on sub-tasks queued behind others.
    kinds = {task["key"].split("-")[0] for task in task_stream.data}
    assert kinds == TASKS[shared_trees], kinds
    assert len({task["worker"] for task in task_stream.data}) == 2


def test_a_single_thread_cluster_still_runs_the_fits() -> None:
    # joblib runs a one-slot Parallel in the calling process; the fits must still go to the worker.
    features, target = _training_data()
    grid = {"classifier__n_estimators": [2], "classifier__max_depth": [3, 4]}
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as single,
        Client(single) as client,
        get_task_stream(client) as task_stream,
    ):
        search.run(search.grid_search(model.build_pipeline(), grid, SearchConfig(), verbose=False), features, target, client)
    # One forest per max_depth and fold (a single n_estimators: nothing to share).
    assert len([task for task in task_stream.data if task["key"].startswith("batch_of__fit_group")]) == 6


def test_versions_match_on_an_honest_cluster(client: Client) -> None:
    versions = cluster.check_versions(client)
    assert set(versions) == set(CHECKED_PACKAGES)
    import sklearn

    assert versions["scikit-learn"] == sklearn.__version__


def _pretend_version(package: str, version: str) -> None:
    import distributed.versions

    real = distributed.versions._version_cached
    distributed.versions._version_cached = lambda name: version if name == package else real(name)


def test_version_mismatch_names_package_and_both_versions(tmp_path: Path, capsys, monkeypatch) -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as drifted,
        Client(drifted) as client,
    ):
        client.run(_pretend_version, "scikit-learn", "1.8.0")
        with pytest.raises(VersionMismatchError) as error:
            cluster.check_versions(client)
        import sklearn

        message = str(error.value)
        assert f"scikit-learn: client {sklearn.__version__} vs worker tcp://" in message and " 1.8.0." in message
        # The words doctor prints, fix included: the scheduler has the client's version, so the worker is the odd one.
        assert "fix (workers): docker compose up --detach --build --force-recreate scheduler worker" in message

        # The CLI turns it into exit 4 before any fit, and writes nothing.
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", drifted.scheduler_address)
        output = tmp_path / "output"
        code = main(["--synthetic-rows", "300", "--output", str(output), "--workers-timeout", "10", "--quiet"])
        stderr = capsys.readouterr().err
        assert code == 4, stderr
        assert "version mismatch" in stderr and "scikit-learn" in stderr
        assert not output.exists()


def test_full_run_writes_the_run_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    output = tmp_path / "output"
    code = main(
        [
            "--synthetic-rows",
            "3000",
            "--param",
            "n_estimators=4,8",
            "--param",
            "max_depth=4,8",
            "--workers",
            "2",
            "--output",
            str(output),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (folder,) = output.iterdir()
    assert sorted(path.name for path in folder.iterdir()) == [
        "confusion.png",
        "cv_results.csv",
        "fit_times.png",
        "heatmap.png",
        "importances.png",
        "model.skops",
        "report.html",
        "results.json",
        "roc.png",
    ]
    results = json.loads((folder / "results.json").read_text())
    for key in (
        "best_params",
        "best_cv_score",
        "test_accuracy",
        "test_roc_auc",
        "baseline_accuracy",
        "n_train_rows",
        "n_test_rows",
        "n_dropped_rows",
        "fit_seconds",
        "n_workers",
        "versions",
        "dataset",
    ):
        assert key in results, key
    assert results["n_workers"] == 2
    assert results["local_cluster"] is True
    assert results["test_accuracy"] > results["baseline_accuracy"] + 0.05
    assert 0.5 < results["test_roc_auc"] <= 1
    assert results["n_train_rows"] + results["n_test_rows"] + results["n_dropped_rows"] == 3000
    assert results["dataset"]["checksum"].startswith("sha256:")
    assert len(pd.read_csv(folder / "cv_results.csv")) == 4
    assert "DASK_SCHEDULER_ADDRESS is not set: running on a local Dask cluster" in captured.err
    # Progress in a log: joblib's tasks done out of total, one per forest, which answers 2 n_estimators.
    assert "grid search: 4 candidates x 3 folds = 12 fits, answered by 6 forest fits" in captured.err
    assert "Done   6 out of   6" in captured.err
    assert summary_value(captured.out, "test accuracy").startswith(f"{results['test_accuracy']:.4f} ")
    assert results["shared_trees"]["description"] == "12 fits answered by 6 forest fits (48 of 72 trees)"
    assert summary_value(captured.out, "shared trees") == "12 fits answered by 6 forest fits (48 of 72 trees)"
    # Two values per parameter: each best value is an edge, with values beyond it the forest accepts.
    assert len(results["grid_edges"]) == 2
    for edge in results["grid_edges"]:
        assert results["best_params"][edge["param"]] == edge["value"] in (4, 8)
        assert edge["description"] in summary(captured.out)["grid edge"]
        assert edge["description"] in (folder / "report.html").read_text()

    assert Results.read(folder).to_json() == results  # typed, and back, key for key

    fitted = load_model(folder / "model.skops")
    frame = data.load(None, synthetic_rows=3000).frame
    features, _ = model.feature_matrix(frame.head(50))
    assert fitted.predict(features).shape == (50,)


def test_sigterm_mid_search_leaves_no_run_folder(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    output = tmp_path / "output"
    env = {key: value for key, value in os.environ.items() if key != "DASK_SCHEDULER_ADDRESS"}
    trainer = subprocess.Popen(
        [sys.executable, "-m", "skfleet", "--synthetic-rows", "60000", "--workers", "1", "--output", str(output)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Wait until fitting has started, then stop it the way `docker stop` does.
    assert trainer.stderr is not None
    for line in trainer.stderr:
        if "totalling 75 fits" in line or "grid search:" in line:
            break
    time.sleep(2)
    trainer.send_signal(signal.SIGTERM)
    remaining = trainer.communicate(timeout=60)[1]
    assert trainer.returncode == 130, remaining
    assert "error: interrupted; no run folder was written" in remaining
    # No run folder and no partial one; the fits that finished may be checkpointed for a rerun.
    assert not output.exists() or [path.name for path in output.iterdir()] in ([], [".checkpoints"])


@pytest.fixture(params=["handled", "ignored"])
def sigint(request: pytest.FixtureRequest) -> Iterator[str]:
    """SIGINT as Python sets it, or ignored as in a script's background job (`cmd &`: CI's tracks)."""
    previous = signal.getsignal(signal.SIGINT)  # pytest's own: SIG_IGN itself where pytest runs in the background
    signal.signal(signal.SIGINT, signal.SIG_IGN if request.param == "ignored" else signal.default_int_handler)
    try:
        yield request.param
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(300)  # where SIGINT was ignored, the watchdog's interrupt did nothing and the search waited for ever
def test_workers_paused_at_their_memory_limit_end_the_search_with_the_fix(tmp_path: Path, sigint: str) -> None:
    """A worker paused for memory never runs another task: the search stops instead of waiting forever."""
    features, target = _training_data()
    # Pause at 1% of a 1 GiB limit: every worker is paused from the start, as when a fit's memory never falls.
    with (
        dask.config.set({"distributed.worker.memory.pause": 0.01}),
        LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB", dashboard_address=":0") as paused,
        Client(paused) as client,
    ):
        started = time.monotonic()
        with pytest.raises(ClusterError) as raised:
            search.run(
                search.grid_search(model.build_pipeline(), GRID, SearchConfig(), verbose=False),
                features,
                target,
                client,
                paused_timeout=3,
            )
        waited = time.monotonic() - started
    message = str(raised.value)
    assert message.startswith("the search stopped: all 2 workers have been paused for 3 s at "), message
    # The runbook quotes the message as the user sees it.
    runbook = " ".join((Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "oom.md").read_text().split())
    assert "the search stopped: all N workers have been paused for 60 s at ... of their ... memory limit" in runbook
    assert "of their 1.00 GiB memory limit: Dask pauses a worker at 80% of its limit" in message
    assert "SKFLEET_WORKER_MEMORY_LIMIT" in message
    assert 3 <= waited < 30, waited
    assert signal.getsignal(signal.SIGINT) is (signal.SIG_IGN if sigint == "ignored" else signal.default_int_handler)


def test_the_paused_watchdog_interrupts_again_until_the_search_has_caught_it() -> None:
    """A KeyboardInterrupt that lands in a gc callback is dropped (skfleet/interrupts.py): one interrupt is not enough."""
    with (
        dask.config.set({"distributed.worker.memory.pause": 0.01}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, memory_limit="1GiB", dashboard_address=":0") as paused,
        Client(paused) as client,
        guards.PausedWatchdog(client, patience=1, interval=0.2) as watchdog,
    ):
        interrupts, deadline = 0, time.monotonic() + 60
        while interrupts < 2:
            try:
                while time.monotonic() < deadline:
                    time.sleep(0.01)
                pytest.fail(f"{interrupts} interrupt(s) within 60 s")
            except KeyboardInterrupt:
                interrupts += 1  # the first one as if dropped: wait on, as the search would
        watchdog.stop()
    assert watchdog.reason is not None and watchdog.reason.startswith("all 2 workers have been paused for 1 s")


def test_the_training_rows_reach_each_worker_once() -> None:
    """The frame (and each fold's indices) goes to every worker once, from the client, before any fit.

    joblib's own Dask backend scatters it to one worker and lets the other fetch it: a worker
    dropped before that took the only copy (tests/compose/test_silent_workers.py).
    """
    features, target = _training_data()
    frame_bytes = len(pickle.dumps(features))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local,
        Client(local) as fresh,
    ):
        # As the trainer does (cluster.connect): the copies go to the workers running when the data is sent.
        fresh.wait_for_workers(2, timeout=60)
        search.run(search.grid_search(model.build_pipeline(), GRID, SearchConfig(), verbose=False), features, target, fresh)
        fetched = fresh.run(
            lambda dask_worker: [
                ([str(key) for key in entry["keys"]], entry["total"]) for entry in dask_worker.transfer_incoming_log
            ]
        )
    # 12 fits on 2 workers: neither fetched the frame from the other; each got it from the client.
    frames = [
        total for entries in fetched.values() for keys, total in entries if any(key.startswith("DataFrame-") for key in keys)
    ]
    assert frames == [], fetched
    moved = sum(total for entries in fetched.values() for _, total in entries)
    assert moved <= 0.5 * frame_bytes, (moved, frame_bytes)


@pytest.mark.parametrize("direct", [True, False])
def test_the_trainer_sends_the_data_to_the_workers_not_through_the_scheduler(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the scheduler every byte crosses the network twice: it receives the data and sends it on."""
    monkeypatch.setenv("DASK_DISTRIBUTED__CLIENT__DIRECT_TO_WORKERS", str(direct).lower())  # False: Dask's default
    dask.config.refresh()
    try:
        # refresh() re-applies the defaults `import skfleet` registered (trainer/skfleet.yaml): the variable, as a user's, wins.
        features, target = _training_data()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
            relayed: list[int] = []
            relay = local.scheduler.handlers["scatter"]

            async def counting_relay(**kwargs):
                relayed.append(sum(sizeof(value) for value in kwargs["data"].values()))
                return await relay(**kwargs)

            local.scheduler.handlers["scatter"] = counting_relay  # the scheduler runs in this process
            with Client(local) as fresh:
                grid_search = search.grid_search(model.build_pipeline(), GRID, SearchConfig(), verbose=False)
                search.run(grid_search, features, target, fresh)
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    assert (relayed == []) is direct, relayed


def test_the_worker_list_is_asked_for_not_read_from_a_cache_that_loses_every_worker(local_cluster: LocalCluster) -> None:
    # The client's periodic refresh rewrites scheduler_info()'s cache with no workers in it: here
    # every 2 ms, so a read of the cache misses them. The dropped-worker watch would then report
    # every worker gone, while none left.
    with dask.config.set({"distributed.client.scheduler-info-interval": "2ms"}), Client(local_cluster) as client:
        seen = {len(cluster.identity(client)["workers"]) for _ in range(200)}
        with guards.DroppedWorkers(client, interval=0.005) as watch:
            time.sleep(2)
    assert seen == {2}
    assert watch.dropped == []
