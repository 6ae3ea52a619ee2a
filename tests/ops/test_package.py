"""skfleet-ops is a declared package: its console script runs the tasks on the checkout it finds, from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERBS = ["status", "logs", "restart-worker", "retire-worker", "scale", "tunnel", "train"]


def run_ops(*args: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "skfleet-ops"
    env = {**{key: value for key, value in os.environ.items() if key != "SKFLEET_ROOT"}, **environment}
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_console_script_lists_the_tasks() -> None:
    shown = run_ops("--help", cwd=Path("/"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: skfleet-ops")
    for verb in VERBS:
        assert f"    {verb}" in shown.stdout, verb


def test_it_finds_the_checkout_or_is_told_where_it_is(tmp_path: Path) -> None:
    probe = "from skfleet_ops.target import ROOT; print(ROOT)"
    python = [sys.executable, "-c", probe]
    here = subprocess.run(python, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(here.stdout.strip()) == ROOT  # the checkout it is installed from (pip install -e)
    elsewhere = tmp_path / "another-checkout"
    (elsewhere / "ansible").mkdir(parents=True)
    told = subprocess.run(python, cwd="/", env={**os.environ, "SKFLEET_ROOT": str(elsewhere)}, capture_output=True, text=True)
    assert Path(told.stdout.strip()) == elsewhere.resolve(), told.stderr
    # An inventory that does not exist: one line, exit 2, before anything is reached.
    missing = run_ops("-i", str(tmp_path / "absent.yml"), "status", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr == f"error: inventory {tmp_path / 'absent.yml'} does not exist\n"


def test_the_ops_package_loads_no_cluster_code() -> None:
    # ops acts on the stack and the VMs through Docker, SSH and the scheduler container's own Python
    # (probe.py runs there): this machine needs neither distributed nor the trainer's search.
    probe = "import sys, skfleet_ops.tasks, skfleet_ops.local, skfleet_ops.fleet; "
    probe += "print(sorted({'distributed', 'skfleet.cluster', 'skfleet.search', 'sklearn'} & set(sys.modules)))"
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == "[]"
