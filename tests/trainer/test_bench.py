"""python -m skfleet.bench on a small dataset: every path it names runs, and the table says what it measured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skfleet import bench
from skfleet.__main__ import main

pytestmark = pytest.mark.cluster


def test_bench_runs_the_paths_interleaved_and_prints_them_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    paths = ["serial", "loky", "dask", "dask-unshared", "halving"]
    arguments = ["--rows", "3000", "--paths", ",".join(paths), "--repeat", "2", "--json", str(report), "--plot", str(plot)]
    assert bench.main(arguments) == 0
    out, err = capsys.readouterr()
    # Interleaved: A B C A B C.
    order = [line.split()[2] for line in err.splitlines() if line.strip().startswith("round")]
    assert order == paths * 2
    rows = [line for line in out.splitlines() if line.split()[:1] in [[path] for path in paths]]
    table = {line.split()[0]: line for line in reversed(rows)}  # the table's row, not the verdict lines after it
    assert set(table) == set(paths)
    # 25 candidates x 3 folds: one task per fit, or one per forest of 5 n_estimators, and the refit's forest in
    # exact chunks on the cluster (as many as its workers' threads shorten it) and the task that joins them.
    measurements = json.loads(report.read_text())
    ((_, runs),) = measurements.items()
    refit = runs["dask"][-1]["refit_tasks"]
    assert refit >= 3 and runs["dask-unshared"][-1]["refit_tasks"] == 0
    assert " 75 " in table["dask-unshared"] and f" {15 + refit} " in table["dask"]
    assert "cv_results_ split scores identical across serial, loky, dask, dask-unshared: yes" in out
    assert f"dask: 75 fits answered by 15 forest fits (150 of 450 trees), in 15 Dask tasks; the refit in {refit} more" in out
    assert re.search(r"^dask wall / loky \(GridSearchCV\) wall = \d\.\d+ \(target <= 0\.5: (met|MISSED)\)$", out, re.M)
    assert "dask-unshared parallel efficiency = " in out and "halving: " in out
    # Where the efficiency went: its three factors multiply back to it.
    (factors,) = [re.findall(r"\d+\.\d+", line) for line in out.splitlines() if line.startswith("  dask-unshared: efficiency ")]
    efficiency, overhead, slowdown, busy = map(float, factors)
    assert efficiency == pytest.approx(overhead / slowdown * busy, abs=0.011)
    assert [len(runs[path]) for path in paths] == [2] * len(paths)
    assert runs["dask"][0]["bytes_moved"] > 0 and runs["dask"][0]["peak_worker_rss"] > 0
    assert all(run["fit_s"] > 0 and run["refit_s"] > 0 for path in runs.values() for run in path)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_compose_path_needs_a_scheduler(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(SystemExit) as exited:
        bench.main(["--paths", "serial,compose"])
    assert exited.value.code == 2
    assert "the compose path needs --scheduler ADDRESS (or DASK_SCHEDULER_ADDRESS)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--paths", "serial", "--scheduler", "tcp://127.0.0.1:8786"])
    assert "add compose to --paths" in capsys.readouterr().err


def test_the_trainer_runs_the_bench_as_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rows", "2000", "--paths", "serial", "--repeat", "1", "--halving-factor", "3"]) == 0
    out = capsys.readouterr().out
    assert "1,360 training rows" in out and out.count("\nserial ") == 1


def test_bench_has_the_trainers_dask_settings_without_the_cli() -> None:
    # skfleet's own import registers them (trainer/skfleet.yaml); the benchmark needs no CLI for its side effect.
    probe = "import sys, dask.config, skfleet.bench; print('skfleet.cli' in sys.modules, "
    probe += "dask.config.get('distributed.client.direct-to-workers'))"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    printed = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    assert printed.stdout.split() == ["False", "True"]
