"""`python -m skfleet doctor` against real (in-process) clusters: all well, drifted, unreachable."""

from __future__ import annotations

import time

import pytest
from distributed import Client, LocalCluster

from skfleet import cluster, versions
from skfleet.__main__ import main
from tests.trainer.test_cluster import _pretend_version

pytestmark = pytest.mark.cluster


def doctor(address: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["doctor", "--scheduler", address, "--timeout", "5"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_all_well(capsys) -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB", dashboard_address=":0") as local:
        code, out, err = doctor(local.scheduler_address, capsys)
    assert code == 0, out + err
    assert "TLS: no" in out
    assert "2 workers, 2 threads, 2.00 GiB memory limit in all" in out
    header = next(line for line in out.splitlines() if line.startswith("package"))
    assert header.split() == ["package", "client", "scheduler", "workers", "(2)", "check"]
    import sklearn

    scikit_learn = next(line for line in out.splitlines() if line.startswith("scikit-learn"))
    assert scikit_learn.split() == ["scikit-learn", *[sklearn.__version__] * 3, "ok"]
    assert "all versions match" in out


def test_drifted_worker_is_named_with_the_fix(capsys) -> None:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as local,
        Client(local) as client,
    ):
        drifted = next(iter(cluster.identity(client)["workers"]))
        client.run(_pretend_version, "joblib", "1.4.0", workers=[drifted])
        code, out, err = doctor(local.scheduler_address, capsys)
    assert code == 4, out + err
    joblib_row = next(line for line in out.splitlines() if line.startswith("joblib"))
    assert joblib_row.split()[-1] == "MISMATCH" and "1.4.0" in joblib_row
    assert f"joblib: client 1.6.0 vs worker {drifted} 1.4.0" in out
    assert "fix (workers): docker compose up --detach --build --force-recreate scheduler worker" in out
    assert err.strip() == "error: version mismatch on joblib; see the fixes above"


def test_unreachable_is_exit_3(capsys) -> None:
    code, _, err = doctor("tcp://127.0.0.1:9", capsys)
    assert code == 3
    assert err.startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")


def test_a_port_that_accepts_and_never_answers_is_exit_3_within_the_timeout(silent_port: str, capsys) -> None:
    started = time.monotonic()
    code = main(["doctor", "--scheduler", silent_port, "--timeout", "1"])
    assert code == 3 and time.monotonic() - started < 10
    assert capsys.readouterr().err.startswith(
        f"error: the Dask scheduler at {silent_port} did not complete Dask's handshake within 1 s"
    )


def test_no_address_is_exit_3(capsys, monkeypatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert main(["doctor"]) == 3
    assert "pass --scheduler ADDRESS or set DASK_SCHEDULER_ADDRESS" in capsys.readouterr().err


def test_a_package_the_client_lacks_is_shown_and_no_mismatch() -> None:
    # A client install has no pandas: nothing of it crosses from the client. The workers lacking one is a mismatch.
    cluster_side = {"python": "3.11", "pandas": "3.1.1", "numpy": "2.4.6"}
    client_side = {"python": "3.11", "pandas": versions.MISSING, "numpy": "2.4.6"}
    report = versions.VersionReport(client=client_side, scheduler=cluster_side, workers={"tcp://a:1": cluster_side})
    assert report.mismatches() == {} and report.problems() == []
    odd = versions.VersionReport(
        client=cluster_side, scheduler=cluster_side, workers={"tcp://a:1": {**cluster_side, "numpy": versions.MISSING}}
    )
    assert odd.problems() == [
        ("numpy: client 2.4.6 vs worker tcp://a:1 missing", [f"fix (workers): {versions.WORKER_FIX}"]),
    ]


def test_many_drifted_workers_are_counted_not_listed() -> None:
    ours = {"python": "3.11", "joblib": "1.6.0"}
    workers = {f"tcp://w{index}:1": {"python": "3.11", "joblib": "1.4.0"} for index in range(5)}
    report = versions.VersionReport(client=ours, scheduler=ours, workers=workers)
    ((line, _),) = report.problems()
    assert line == "joblib: client 1.6.0 vs 5 workers 1.4.0 (tcp://w0:1, tcp://w1:1, +3)"
