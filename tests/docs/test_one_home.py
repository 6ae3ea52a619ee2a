"""Facts written in more than one place say the same: where a copy must exist, it is tested equal to its home."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skfleet import dask_config

ROOT = Path(__file__).resolve().parents[2]


def env_file() -> dict[str, str]:
    """Give the root .env's settings (the Compose stack's knobs, each documented in the README)."""
    lines = (ROOT / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_composes_fallbacks_are_the_env_files_values() -> None:
    # `${VAR:-fallback}` is what Compose uses without the .env file (compose/ run on its own): the same value.
    settings = env_file()
    text = "".join(path.read_text() for path in (ROOT / "compose").glob("*.yaml"))
    fallbacks = re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", text)
    assert len(fallbacks) > 10
    differing = {
        name: (fallback, settings[name]) for name, fallback in fallbacks if settings.get(name) and settings[name] != fallback
    }
    assert differing == {}


def test_the_trainers_workers_timeout_has_one_value() -> None:
    # Home: skfleet.yaml (Dask config skfleet.trainer.workers-timeout). .env's knob and Compose's fallback say
    # the same; the Ansible role passes none unless told (null), so the trainer's own applies on VMs.
    home = dask_config.defaults()["skfleet"]["trainer"]["workers-timeout"]
    assert int(env_file()["SKFLEET_WORKERS_TIMEOUT"]) == home
    role = yaml.safe_load((ROOT / "ansible" / "roles" / "trainer" / "defaults" / "main.yml").read_text())
    assert role["trainer_workers_timeout"] is None


def test_the_images_base_has_one_default() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    (argument,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert argument == env_file()["BASE_IMAGE"]


def test_ansible_and_ops_count_all_workers_alike(tmp_path: Path) -> None:
    # "Every worker": the trainer role waits for as many as ops.sh expects, each resolved by its own tool
    # (Ansible's templating for the role's default, ops' reading of the inventory), on an inventory whose
    # hosts run 3, 2 and the default number of worker processes.
    from skfleet_ops.fleet import Fleet

    inventory = tmp_path / "hosts.yml"
    workers = {"w1": {"dask_worker_nworkers": 3}, "w2": {"dask_worker_nworkers": "2"}, "w3": {}}
    inventory.write_text(
        yaml.safe_dump({"all": {"children": {"dask_scheduler": {"hosts": {"s1": {}}}, "dask_workers": {"hosts": workers}}}})
    )
    answer = tmp_path / "trainer_workers"
    playbook = tmp_path / "resolve.yml"
    defaults = ROOT / "ansible" / "roles" / "trainer" / "defaults" / "main.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [
                        {"ansible.builtin.include_vars": {"file": str(defaults)}},
                        {"ansible.builtin.copy": {"content": "{{ trainer_workers }}", "dest": str(answer), "mode": "0600"}},
                    ],
                }
            ]
        )
    )
    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}
    done = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    worker_role = yaml.safe_load((ROOT / "ansible" / "roles" / "dask_worker" / "defaults" / "main.yml").read_text())
    assert worker_role["dask_worker_nworkers"] == 1  # the fallback the trainer role's default assumes
    assert int(answer.read_text()) == Fleet(inventory).expected_workers() == 3 + 2 + 1


def test_the_readmes_defaults_are_the_env_files_values() -> None:
    # The README's table of knobs states each default: the .env value (empty ones say "empty").
    settings = env_file()
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    stated = {}
    for row in rows:
        name_cell, default_cell = (cell.strip() for cell in row.split("|")[1:3])
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", name_cell)
        if len(names) == 1 and names[0] in settings:
            literal = re.match(r"`([^`]*)`", default_cell)
            stated[names[0]] = literal.group(1) if literal else default_cell
    assert stated.keys() == settings.keys()  # a row each (tests/docs/test_docs.py: and documented at all)
    assert {name: (value, settings[name]) for name, value in stated.items() if value != (settings[name] or "empty")} == {}


def test_the_benchmarks_targets_are_the_ones_the_docs_state() -> None:
    from skfleet.bench import targets

    text = (ROOT / "docs" / "benchmarks.md").read_text()
    section = text[text.index("## Against the targets") :]
    assert f"≤ {targets.SHARED_TARGET:g} × GridSearchCV + loky" in section
    assert f"parallel efficiency ≥ {targets.EFFICIENCY_TARGET:.2f}" in section
    assert f"bytes moved ≤ {targets.BYTES_MOVED_TARGET:g} × dataset × workers" in section
    halving = f"halving ≥ {targets.HALVING_SPEEDUP_TARGET:g} × less wall, best CV within {targets.HALVING_SCORE_GAP_TARGET:g}"
    assert halving in section


def test_ops_reads_inventory_variables_as_ansible_renders_them(tmp_path: Path) -> None:
    # Fleet.var: the inventory's value, else the role default, rendered by Ansible's Templar: Jinja filters
    # and `groups` included; a default that needs a host's facts is refused, naming what to set.
    from skfleet_ops.fleet import Fleet
    from skfleet_ops.target import OpsError

    inventory = tmp_path / "hosts.yml"
    workers = {"w1": {"dask_worker_nworkers": 3}, "w2": {}}
    groups = {"dask_scheduler": {"hosts": {"s1": {"skfleet_data_dir": "/data/skfleet"}}}, "dask_workers": {"hosts": workers}}
    inventory.write_text(yaml.safe_dump({"all": {"children": groups}}))
    fleet = Fleet(inventory)
    assert int(fleet.var("s1", "trainer_workers")) == fleet.expected_workers() == 4
    defaults = yaml.safe_load((ROOT / "ansible" / "roles" / "trainer" / "defaults" / "main.yml").read_text())
    assert "{{" in defaults["trainer_output_dir"]  # a default made of another variable
    assert fleet.var("s1", "trainer_output_dir").startswith("/data/skfleet")  # ... the inventory's, here
    with pytest.raises(OpsError, match=r"dask_worker_nthreads can't be worked out outside a play .*set it for w1 in"):
        fleet.var("w1", "dask_worker_nthreads")
    with pytest.raises(OpsError, match="no_such_variable is neither set"):
        fleet.var("w1", "no_such_variable")
