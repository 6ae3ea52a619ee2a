"""joblib.parallel_backend("skfleet") on a real Dask cluster: where the work runs, same results, versions gated."""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from typing import Any

import dask.config
import distributed.versions
import joblib
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream
from distributed.comm import CommClosedError
from distributed.security import Security
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, cross_validate

import skfleet
from skfleet.backend import SkfleetBackend
from skfleet.cluster import identity
from skfleet.errors import ClusterError, VersionMismatchError
from skfleet.forest_search import ForestGridSearchCV
from tests.trainer.test_forest_search import assert_same_search

pytestmark = pytest.mark.cluster

GRID = {"n_estimators": [5, 10, 20], "max_depth": [4, None]}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    # As docker/dask.yaml sets for skfleet's schedulers: without it the active memory manager's
    # ReduceReplicas drops the copies the backend makes, every 2 s, and who holds what is a race.
    with (
        dask.config.set({"distributed.scheduler.active-memory-manager.start": False}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
    ):
        yield cluster


@pytest.fixture
def client(local_cluster: LocalCluster) -> Iterator[Client]:
    with Client(local_cluster) as client:
        yield client


def task_functions(tasks: list[dict]) -> dict[str, int]:
    """Give how many calls of each function the tasks ran: "batch_of__fit_and_score_3_calls" is 3 of _fit_and_score."""
    calls: dict[str, int] = {}
    for task in tasks:
        found = re.match(r"(?:mixed_)?batch_of_(\w+?)_(\d+)_calls", str(task["key"]))
        name, count = (found[1], int(found[2])) if found else (str(task["key"]).split("-")[0], 1)
        calls[name] = calls.get(name, 0) + count
    return calls


def test_a_forest_search_makes_one_task_per_fit_never_per_tree_with_the_local_scores(client: Client) -> None:
    X, y = load_digits(return_X_y=True)
    forest = RandomForestClassifier(random_state=0, n_jobs=-1)
    with get_task_stream(client) as stream, joblib.parallel_backend("skfleet"):
        ours = GridSearchCV(forest, GRID, cv=3, n_jobs=-1).fit(X, y)
    # The forest's trees, in the fits and in the refit, never became tasks of their own.
    assert task_functions(stream.data) == {"_fit_and_score": 18}
    assert all(task["worker"].startswith("tcp://") for task in stream.data)
    assert_same_search(ours, GridSearchCV(forest, GRID, cv=3).fit(X, y), X)
    assert client.direct_to_workers is True  # skfleet's Dask setting, read as the client was made


def test_the_shared_trees_search_makes_one_task_per_forest(client: Client) -> None:
    X, y = load_digits(return_X_y=True)
    forest = RandomForestClassifier(random_state=0)
    with get_task_stream(client) as stream, joblib.parallel_backend("skfleet"):
        ours = ForestGridSearchCV(forest, GRID, cv=3, n_jobs=-1).fit(X, y)
    # 6 forests on 2 threads stay whole; the refit's forest is fitted in 2 exact chunks, joined in a third task.
    assert task_functions(stream.data) == {"_fit_group": 6, "_fit_chunk": 2, "_join_refit": 1}
    assert ours.shared_trees_.refit_tasks == 2
    assert ours.shared_trees_.describe() == "18 fits answered by 6 forest fits (120 of 210 trees)"
    assert_same_search(ours, GridSearchCV(forest, GRID, cv=3).fit(X, y), X)


def test_joblibs_own_dask_backend_still_makes_tree_tasks(client: Client) -> None:
    # The contrast the backend exists for (joblib#1013): if this ever fails, joblib fixed it.
    X, y = make_classification(n_samples=200, random_state=0)
    with get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        GridSearchCV(RandomForestClassifier(n_estimators=4, random_state=0), {"max_depth": [2, 3]}, cv=2).fit(X, y)
    assert task_functions(stream.data).get("_parallel_build_trees", 0) > 0


def copies_of_my_data(data: np.ndarray, _: int) -> int:
    """On a worker: give how many workers hold the scattered array this task was given."""
    from distributed import get_client, get_worker

    (key,) = [key for key, value in get_worker().data.items() if value is data]
    return len(get_client().who_has()[key])


def test_large_arguments_are_on_every_worker_before_any_task_runs(client: Client) -> None:
    # joblib's own backend scatters them to one worker: dropped before the others fetched them,
    # that worker would take the only copy (the data, a fold's indices) and cancel every fit.
    data = np.arange(100_000)
    with joblib.parallel_backend("skfleet"):
        copies = joblib.Parallel(n_jobs=-1)(joblib.delayed(copies_of_my_data)(data, i) for i in range(6))
    assert copies == [2] * 6


def total_plus(data: np.ndarray, i: int) -> int:
    return int(data.sum()) + i


def break_copies(how: str, dask_worker: Any) -> None:
    """On a worker: take no more data sent to it (its `update_data`), as a worker going away does: refuse, or never answer."""

    async def refuse(**_: object) -> None:
        raise CommClosedError("in test: the worker went while the data was sent to it")

    async def never_answer(**_: object) -> None:
        await asyncio.Event().wait()

    dask_worker._skfleet_update_data = dask_worker.handlers["update_data"]
    dask_worker.handlers["update_data"] = {"refuses": refuse, "never answers": never_answer}[how]


def mend_copies(dask_worker: Any) -> None:
    dask_worker.handlers["update_data"] = dask_worker._skfleet_update_data


@pytest.mark.timeout(120)  # the scheduler's replicate retried a worker that left mid-copy for ever, and the search waited
@pytest.mark.parametrize("how", ["refuses", "never answers"])
def test_a_worker_that_takes_no_copy_holds_nothing_up_and_the_others_run_the_fits(client: Client, how: str) -> None:
    first = sorted(identity(client)["workers"])[0]
    client.run(break_copies, how, workers=[first])
    try:
        data = np.arange(100_000)
        # The fits wait a connect timeout for the copy that never lands, then go on without it.
        with dask.config.set({"distributed.comm.timeouts.connect": "3s"}), joblib.parallel_backend("skfleet"):
            found = joblib.Parallel(n_jobs=-1)(joblib.delayed(total_plus)(data, i) for i in range(6))
    finally:
        client.run(mend_copies, workers=[first])
    assert found == [total_plus(data, i) for i in range(6)]


def test_a_batch_still_being_sent_when_the_search_ends_is_cancelled_quietly(local_cluster: LocalCluster) -> None:
    # The trainer's error closed the client while joblib still sent a batch (CI's OOM test printed
    # the AttributeError's traceback under the one-line error); cancelled, tornado prints nothing.
    client = Client(local_cluster)
    backend = SkfleetBackend(client=client, check_versions=False)
    backend.start_call()
    client.close()
    batch = types.SimpleNamespace(items=[(total_plus, (np.arange(100_000), 1), {})])
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(backend._to_func_args(batch))


def test_nothing_runs_in_the_client_even_with_n_jobs_1_on_one_worker_thread() -> None:
    X, y = make_classification(n_samples=200, random_state=0)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as one:
        # A client made as if before `import skfleet`: distributed's own setting, None ("through the scheduler").
        with dask.config.set({"distributed.client.direct-to-workers": None}):
            client = Client(one)
        with client, get_task_stream(client) as stream, joblib.parallel_backend("skfleet"):
            found = cross_validate(RandomForestClassifier(n_estimators=5, random_state=0), X, y, cv=4, n_jobs=1)
            assert client.direct_to_workers is None  # its own setting back after each call
    # joblib runs an n_jobs=1 call in the calling process; on the cluster each fold was a task.
    assert task_functions(stream.data) == {"_fit_and_score": 4}
    expected = cross_validate(RandomForestClassifier(n_estimators=5, random_state=0), X, y, cv=4)
    np.testing.assert_array_equal(found["test_score"], expected["test_score"])


def test_a_worker_with_another_scikit_learn_is_refused_as_the_backend_starts(local_cluster: LocalCluster) -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as drifted:
        with Client(drifted) as client:
            client.run(_pretend_version, "scikit-learn", "1.8.0")
            with pytest.raises(VersionMismatchError) as error, joblib.parallel_backend("skfleet"):
                pytest.fail("the backend started")
        import sklearn

        message = str(error.value)
        assert f"scikit-learn: client {sklearn.__version__} vs worker tcp://" in message and " 1.8.0." in message
        with pytest.raises(VersionMismatchError, match="scikit-learn: client"):
            skfleet.connect(drifted.scheduler_address, timeout=10)
    with skfleet.connect(local_cluster.scheduler_address, timeout=10, workers=2) as client:
        assert len(identity(client)["workers"]) == 2


def test_connect_says_why_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ClusterError, match="pass an address or set DASK_SCHEDULER_ADDRESS"):
        skfleet.connect()
    before = {id(found) for found in gc.get_objects() if isinstance(found, Client)}
    with pytest.raises(ClusterError, match=re.escape("cannot reach the Dask scheduler at tcp://127.0.0.1:1")):
        skfleet.connect("tcp://127.0.0.1:1", timeout=1)
    # The Client whose start failed is gone now: collected later, it could hang the next Client's start for good.
    assert [found for found in gc.get_objects() if isinstance(found, Client) and id(found) not in before] == []


def _pretend_version(package: str, version: str) -> None:
    real = distributed.versions._version_cached
    distributed.versions._version_cached = lambda name: version if name == package else real(name)


# A client that reports Python PYTHON (and PACKAGES) to the scheduler, which compares them with its own, really.
CLIENT = """
import distributed.versions, sys
real = distributed.versions.get_package_info
def reported(packages):
    found = real(packages)
    found["python"] = {python!r}
    found.update({packages!r})
    return found
distributed.versions.get_package_info = reported
import skfleet
from distributed import Client
with Client({address!r}, timeout=10) as client:
    print("connected", len(client.scheduler_info()["workers"]))
"""


@pytest.mark.parametrize(
    ("python", "packages", "table"),
    [
        ("patch", {}, False),
        ("patch", {"pandas": None}, False),  # a client install without pandas
        ("minor", {}, True),
        ("patch", {"pandas": "2.3.3"}, True),
        ("patch", {"cloudpickle": None}, True),
    ],
)
def test_distributeds_version_table_stays_quiet_for_a_python_patch_level_or_a_lacking_pandas_only(
    local_cluster: LocalCluster, python: str, packages: dict[str, str | None], table: bool
) -> None:
    major, minor, micro = sys.version_info[:3]
    reported = f"{major}.{minor}.{micro + 1}.final.0" if python == "patch" else f"{major}.{minor + 1}.0.final.0"
    script = textwrap.dedent(CLIENT).format(python=reported, packages=packages, address=local_cluster.scheduler_address)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "connected 2"
    assert ("Mismatched versions found" in result.stderr) is table, result.stderr


def test_connect_and_the_backend_on_a_tls_cluster() -> None:
    security = Security.temporary()  # a CA and a certificate for everyone: the cluster refuses a plain client
    X, y = make_classification(n_samples=200, random_state=0)
    with LocalCluster(n_workers=1, threads_per_worker=1, security=security, dashboard_address=":0") as secured:
        assert secured.scheduler_address.startswith("tls://")
        with pytest.raises(ClusterError, match="it speaks TLS and this client has no TLS settings"):
            skfleet.connect(secured.scheduler_address, timeout=3)
        with (
            skfleet.connect(secured.scheduler_address, security=security) as client,
            get_task_stream(client) as stream,
            joblib.parallel_backend("skfleet"),
        ):
            cross_validate(RandomForestClassifier(n_estimators=3, random_state=0), X, y, cv=2)
    assert task_functions(stream.data) == {"_fit_and_score": 2}
