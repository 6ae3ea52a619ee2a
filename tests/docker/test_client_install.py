"""The client install gets exactly the cluster's versions: docker/constraints.txt follows the lock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lock_pins() -> dict[str, str]:
    text = (ROOT / "docker" / "requirements.lock").read_text()
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\", text, re.MULTILINE)}


def constraint_pins() -> dict[str, str]:
    lines = (ROOT / "docker" / "constraints.txt").read_text().splitlines()
    return dict(line.lower().split("==") for line in lines if line and not line.startswith("#"))


def test_constraints_are_the_lock_without_hashes() -> None:
    assert constraint_pins() == lock_pins()
    assert len(lock_pins()) > 30


def test_client_install_resolves_to_the_cluster_versions(tmp_path: Path) -> None:
    # The README's command with the trainer's extra, resolved for real against the package index (a dry run).
    venv = tmp_path / "client"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    report = tmp_path / "report.json"
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--dry-run",
            "--report",
            str(report),
            "-c",
            "docker/constraints.txt",
            ".[trainer]",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    resolved = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    pins = {name.replace("_", "-"): version for name, version in lock_pins().items()}
    for package in ("dask", "distributed", "scikit-learn", "numpy", "pandas", "cloudpickle", "joblib", "skops"):
        assert resolved[package] == pins[package], package
    assert {name for name in resolved if name != "skfleet"} <= set(pins), "client needs a package the lock lacks"
