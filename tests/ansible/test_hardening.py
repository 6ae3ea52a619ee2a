"""One hardened container definition on the VMs (the skfleet role's tasks/container.yml), as Compose has one (x-hardening).

Read from the files, as Ansible and Compose read them: every task of the playbooks and roles
that runs a container goes through the shared task file, and that file holds the hardening
Compose's services get. The file at work is tests/ansible/test_playbooks.py's (the fleet).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack import ROOT

ANSIBLE = ROOT / "ansible"
HARDENED = ANSIBLE / "roles" / "skfleet" / "tasks" / "container.yml"
MODULES = ("community.docker.docker_container", "docker_container")


def tasks(entries: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    """Give every task of ENTRIES, the tasks of blocks (block, rescue, always) and of plays included."""
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        yield entry
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            yield from tasks(entry.get(key))


def container_tasks(ansible: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Give (file, task) for every docker_container task of the playbooks and the roles' task files."""
    for path in sorted([*ansible.glob("*.yml"), *ansible.glob("plays/*.yml"), *ansible.glob("roles/*/tasks/*.yml")]):
        for task in tasks(yaml.safe_load(path.read_text())):
            module = next((task[name] for name in MODULES if name in task), None)
            if module is not None:
                yield path, module


def unhardened(ansible: Path) -> list[str]:
    """Give one line per task that starts a container outside the hardened task file, naming the file and the container."""
    lines = []
    for path, module in container_tasks(ansible):
        if path == ansible / HARDENED.relative_to(ANSIBLE):
            continue
        removes = module.get("state") == "absent"
        # An update in place of a running container's one setting (the retirement's restart policy).
        updates_in_place = module.get("comparisons", {}).get("*") == "ignore" and "image" not in module
        if not (removes or updates_in_place):
            where = path.relative_to(ansible)
            lines.append(f"{where}: {module.get('name')} is not run through roles/skfleet/tasks/container.yml")
    return lines


def test_every_container_the_roles_start_is_the_hardened_one() -> None:
    assert unhardened(ANSIBLE) == []
    # The shared file is used: the services and the trainer's two jobs.
    includes = [
        path.relative_to(ANSIBLE).as_posix()
        for path in sorted(ANSIBLE.glob("roles/*/tasks/*.yml"))
        for task in tasks(yaml.safe_load(path.read_text()))
        if task.get("ansible.builtin.include_role", {}).get("tasks_from") == "container"
    ]
    assert includes == [
        "roles/dask_scheduler/tasks/main.yml",
        "roles/dask_worker/tasks/run.yml",
        "roles/mlflow_tracking/tasks/main.yml",
        "roles/trainer/tasks/doctor.yml",
        "roles/trainer/tasks/train.yml",
    ]


def test_a_container_started_on_its_own_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "ansible"
    (copy / "roles" / "extra" / "tasks").mkdir(parents=True)
    task = {"name": "Run a sidecar", "community.docker.docker_container": {"name": "sidecar", "image": "busybox"}}
    (copy / "roles" / "extra" / "tasks" / "main.yml").write_text(yaml.safe_dump([{"name": "A block", "block": [task]}]))
    assert unhardened(copy) == ["roles/extra/tasks/main.yml: sidecar is not run through roles/skfleet/tasks/container.yml"]


@pytest.mark.parametrize("setting", ["read_only", "cap_drop", "security_opt", "tmpfs"])
def test_the_hardened_task_holds_what_compose_gives_every_service(setting: str) -> None:
    compose = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())["x-hardening"]
    (module,) = [module for path, module in container_tasks(ANSIBLE) if path == HARDENED]
    ansible_name = {"security_opt": "security_opts"}.get(setting, setting)
    if setting == "tmpfs":  # Ansible sizes it
        assert [entry.split(":", 1)[0] for entry in module["tmpfs"]] == compose["tmpfs"]
    else:
        assert module[ansible_name] == compose[setting]
    assert module["user"] == "{{ skfleet_uid }}:{{ skfleet_uid }}"  # the image's own user, never root
