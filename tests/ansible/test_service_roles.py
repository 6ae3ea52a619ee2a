"""Every service role is in every playbook of a service's life: a new optional service can't be forgotten in one.

A service role runs a container on its hosts and can remove it (its argument spec has
`<role>_state` with `absent`): dask_scheduler, dask_worker and mlflow_tracking today. site.yml
deploys it on its hosts; upgrade.yml must move it to the new images, rotate-certs.yml restart
it on its new certificate, teardown.yml remove it, and every playbook learn its hosts first.
Read from the playbooks themselves (imported plays followed), as Ansible would run them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack import ROOT

ANSIBLE = ROOT / "ansible"
# What each playbook of the life does with a service role: its `<role>_state` there (None: the default, started).
LIFE = {"upgrade.yml": None, "rotate-certs.yml": None, "teardown.yml": "absent"}


def service_roles(ansible: Path) -> list[str]:
    """Give the roles whose argument spec has a `<role>_state` that can be `absent`."""
    found = []
    for spec in sorted(ansible.glob("roles/*/meta/argument_specs.yml")):
        role = spec.parent.parent.name
        options = yaml.safe_load(spec.read_text())["argument_specs"]["main"].get("options", {})
        if "absent" in options.get(f"{role}_state", {}).get("choices", []):
            found.append(role)
    return found


def plays(playbook: Path) -> list[dict[str, Any]]:
    """Give the plays PLAYBOOK runs, in order, its imported playbooks' plays in their place (with the import's vars)."""
    found = []
    for entry in yaml.safe_load(playbook.read_text()):
        imported = entry.get("ansible.builtin.import_playbook") or entry.get("import_playbook")
        if imported:
            for play in plays(playbook.parent / imported):
                found.append({**play, "vars": {**entry.get("vars", {}), **play.get("vars", {})}})
        else:
            found.append(entry)
    return found


def groups(play: dict[str, Any]) -> set[str]:
    """Give the groups of a play's host pattern (a templated pattern: its default, or the import's value)."""
    pattern = str(play["hosts"])
    if "{{" in pattern:
        variable = pattern.split("{{", 1)[1].split("|", 1)[0].strip()
        pattern = play.get("vars", {}).get(variable) or pattern.split("default('", 1)[1].split("'", 1)[0]
    return set(pattern.split(":"))


def applied(play: dict[str, Any]) -> dict[str, str | None]:
    """Give each role a play applies (its `roles:` and its tasks' include_role/import_role), with its `<role>_state`."""
    found: dict[str, str | None] = {}
    for entry in play.get("roles", []):
        role, variables = (entry, {}) if isinstance(entry, str) else (entry["role"], entry.get("vars", {}))
        found[role] = variables.get(f"{role}_state")
    for task in play.get("tasks", []):
        for key in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
            if key in task and "tasks_from" not in task[key]:
                role = task[key]["name"]
                found[role] = task.get("vars", {}).get(f"{role}_state")
    return found


def forgotten(ansible: Path) -> list[str]:
    """Give one line per service role a playbook of its life forgot, naming the playbook, the role and its hosts."""
    lines = []
    learned = [groups(play) for name in ("site.yml", *LIFE) for play in plays(ansible / name)[:1]]
    for role in service_roles(ansible):
        deployed = [groups(play) for play in plays(ansible / "site.yml") if applied(play).get(role, "-") is None]
        if not deployed:
            lines.append(f"site.yml: no play deploys {role}")
            continue
        hosts = set.union(*deployed)
        for index, name in enumerate(("site.yml", *LIFE)):
            unlearned = ", ".join(sorted(hosts - learned[index]))
            if unlearned:
                lines.append(f"{name}: its first play does not learn {role}'s hosts ({unlearned})")
        for name, state in LIFE.items():
            covered = set().union(*[groups(play) for play in plays(ansible / name) if applied(play).get(role, "-") == state])
            if not hosts <= covered:
                action = f"{role}_state: {state}" if state else role
                lines.append(f"{name}: no play applies {action} to {', '.join(sorted(hosts - covered))}")
    return lines


def test_every_service_role_is_in_every_playbook_of_its_life() -> None:
    assert service_roles(ANSIBLE) == ["dask_scheduler", "dask_worker", "mlflow_tracking"]
    assert forgotten(ANSIBLE) == []


@pytest.mark.parametrize(
    ("playbook", "play_name", "expected"),
    [
        ("upgrade.yml", "Move the tracking server", "upgrade.yml: no play applies mlflow_tracking to tracking"),
        ("teardown.yml", "Remove the tracking server", "teardown.yml: no play applies mlflow_tracking_state: absent to tracking"),
        ("rotate-certs.yml", "Restart the workers on theirs", "rotate-certs.yml: no play applies dask_worker to dask_workers"),
    ],
)
def test_a_playbook_that_forgot_a_service_is_named(tmp_path: Path, playbook: str, play_name: str, expected: str) -> None:
    copy = tmp_path / "ansible"
    shutil.copytree(ANSIBLE, copy, ignore=shutil.ignore_patterns(".cache", "inventory"))
    path = copy / playbook
    path.write_text(yaml.safe_dump([play for play in yaml.safe_load(path.read_text()) if play.get("name") != play_name]))
    assert forgotten(copy) == [expected]
