"""prometheus-config.yml writes the scrape configuration Prometheus needs, from the inventory alone.

No VMs: every host of a temporary inventory is this machine (ansible_connection=local),
with its cluster address set, as a real inventory may set it.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
# A PLAY RECAP line: "worker-1 : ok=4 changed=0 unreachable=0 ...".
RECAP_LINE = re.compile(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", re.MULTILINE)

SCHEDULER = {"scheduler-1": {"skfleet_private_address": "10.0.0.10"}}
WORKERS = {
    "worker-1": {"skfleet_private_address": "10.0.0.11"},
    # Two processes share the host's one dashboard port: still one target.
    "worker-2": {"skfleet_private_address": "10.0.0.12", "dask_worker_nworkers": 2},
    # A host's own dashboard port is the one its workers serve.
    "worker-3": {"skfleet_private_address": "10.0.0.13", "dask_worker_dashboard_port": 8789},
}
# Being removed (scale.yml): no longer scraped.
RETIRED = {"worker-4": {"skfleet_private_address": "10.0.0.14"}}


@dataclass
class Run:
    """One ansible-playbook run: its exit status and output."""

    returncode: int
    output: str

    def changed_per_host(self) -> dict[str, int]:
        """Give the PLAY RECAP's changed count of every host."""
        return {host: int(changed) for host, changed in RECAP_LINE.findall(self.output)}


# Prometheus's server, let in to the dashboards (they listen on 127.0.0.1 only without it).
PROMETHEUS_SERVER = {"skfleet_dashboard_sources": ["10.0.0.50"], "skfleet_firewall": True}


def write_inventory(folder: Path, **settings: object) -> Path:
    """Give the path of an inventory whose hosts are all this machine, with SETTINGS for all."""
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **settings},
            "children": {
                "dask_scheduler": {"hosts": SCHEDULER},
                "dask_workers": {"hosts": WORKERS},
                "dask_workers_retired": {"hosts": RETIRED},
            },
        }
    }
    path = folder / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def run_playbook(inventory: Path, config: str, check: bool = True) -> Run:
    """Run prometheus-config.yml with skfleet_prometheus_config set to config."""
    completed = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            *("-i", str(inventory), "prometheus-config.yml"),
            *("-e", f"skfleet_prometheus_config={config}"),
        ],
        cwd=ANSIBLE,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    run = Run(completed.returncode, completed.stdout + completed.stderr)
    assert run.returncode == 0 or not check, run.output
    return run


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run, Run]:
    """Give the configuration written, and the first and second runs that wrote it."""
    folder = tmp_path_factory.mktemp("prometheus")
    inventory = write_inventory(folder, **PROMETHEUS_SERVER)
    config = folder / "prometheus.yml"
    first = run_playbook(inventory, str(config))
    second = run_playbook(inventory, str(config))
    return config, first, second


def test_the_configuration_scrapes_the_scheduler_and_every_worker_host(written: tuple[Path, Run, Run]) -> None:
    config, _, _ = written
    prometheus = yaml.safe_load(config.read_text())
    assert prometheus["global"] == {"scrape_interval": "15s"}
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert list(jobs) == ["dask-scheduler", "dask-workers"]
    for job in jobs.values():
        assert job["scheme"] == "http"
        assert job["metrics_path"] == "/metrics"
    assert jobs["dask-scheduler"]["static_configs"] == [{"targets": ["10.0.0.10:8787"], "labels": {"host": "scheduler-1"}}]
    assert jobs["dask-workers"]["static_configs"] == [
        {"targets": ["10.0.0.11:8788"], "labels": {"host": "worker-1"}},
        {"targets": ["10.0.0.12:8788"], "labels": {"host": "worker-2"}},
        {"targets": ["10.0.0.13:8789"], "labels": {"host": "worker-3"}},
    ]
    assert stat.S_IMODE(config.stat().st_mode) == 0o644


def test_the_first_run_writes_it_and_a_second_changes_nothing(written: tuple[Path, Run, Run]) -> None:
    _, first, second = written
    assert first.changed_per_host() == {"scheduler-1": 1, "worker-1": 0, "worker-2": 0, "worker-3": 0}
    assert second.changed_per_host() == {"scheduler-1": 0, "worker-1": 0, "worker-2": 0, "worker-3": 0}


def test_dashboards_closed_to_prometheus_are_refused_with_the_fix(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)  # skfleet_dashboard_sources empty: the dashboards listen on 127.0.0.1
    run = run_playbook(inventory, str(tmp_path / "prometheus.yml"), check=False)
    assert run.returncode != 0
    assert "add the Prometheus server's address to skfleet_dashboard_sources" in run.output, run.output
    assert [path.name for path in tmp_path.iterdir()] == ["hosts.yml"]


def test_open_dashboards_need_the_firewall(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, skfleet_dashboard_sources=["10.0.0.50"])
    run = run_playbook(inventory, str(tmp_path / "prometheus.yml"), check=False)
    assert run.returncode != 0
    assert "set skfleet_firewall: true as well" in run.output, run.output


def test_an_empty_path_writes_nothing(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path)
    run = run_playbook(inventory, "")
    assert set(run.changed_per_host().values()) == {0}
    assert [path.name for path in tmp_path.iterdir()] == ["hosts.yml"]
