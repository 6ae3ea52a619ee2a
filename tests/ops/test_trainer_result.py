"""ops reads the trainer's result line (--json), not its human summary: what a VM `train` fetches comes from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skfleet_ops.targets import OpsError
from skfleet_ops.tasks import trainer_result

ROOT = Path(__file__).resolve().parents[2]


def test_the_result_line_names_the_run_folder_even_in_a_terminals_mixed_output(tmp_path: Path) -> None:
    grid = ["--param", "n_estimators=4", "--param", "max_depth=3", "--cv", "2"]
    command = [sys.executable, "-m", "skfleet", "--synthetic-rows", "800", *grid, "--output", str(tmp_path), "--json"]
    # As over SSH with a terminal: stdout and stderr arrive as one stream.
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    result = trainer_result(done.stdout)
    assert (tmp_path / result["run_id"] / "results.json").is_file()
    assert "written to" in done.stdout  # the summary is still there for the person watching


def test_output_without_a_result_line_fetches_nothing() -> None:
    summary = "run 20260101T000000Z-abcdef on flights.csv\n  written to       /output/20260101T000000Z-abcdef\n"
    with pytest.raises(OpsError, match=r"no result line \(--json\)"):
        trainer_result(summary + '{"not": "a result"}\n')
