"""Each image installs its part of the one lock, every package at the lock's version, nothing else, nothing missing.

The runtime image (scheduler and workers) holds the part docker/runtime.in names and what that
pulls in; the trainer the whole lock; the notebook the lock and its own (docker/notebook.lock); the
tracking server its own lock. pip itself is in none of them (docker/install-lock.sh), and each
passes `pip check`: no package lacks a dependency, so the runtime's part is whole.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from tests.stack import Stack
from tests.vms import docker_client

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
# The venv of each image (its Python).
VENV = {"runtime": "/opt/skfleet", "trainer": "/opt/skfleet", "notebook": "/opt/skfleet", "tracking": "/opt/mlflow"}
LIST = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
# What a worker VM loads, in `docker images` MB (10^6 bytes): docker/slim-venv.sh and the base keep it under.
RUNTIME_BUDGET_MB = 450
# pip from the base's ensurepip, in a throwaway venv: the image has none of its own.
CHECK = "python3 -m venv /tmp/pip && /tmp/pip/bin/pip --python {venv}/bin/python check --disable-pip-version-check"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    """Give a lock file's versions by canonical name."""
    text = (DOCKER / lock).read_text()
    return {canonical(name): version for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", text, re.M)}


def runtime_part() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("lock_subset", DOCKER / "lock-subset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entries = module.parse_lock((DOCKER / "requirements.lock").read_text())
    names = module.subset(entries, module.parse_roots((DOCKER / "runtime.in").read_text()))
    return {name: pins("requirements.lock")[name] for name in names}


def expected() -> dict[str, dict[str, str]]:
    return {
        "runtime": runtime_part(),
        "trainer": pins("requirements.lock"),
        "notebook": {**pins("requirements.lock"), **pins("notebook.lock")},
        "tracking": pins("tracking.lock"),
    }


@pytest.fixture(scope="module")
def images(stack: Stack) -> dict[str, str]:
    """Give each image's reference, the profiles' images built too (from the stack's build cache)."""
    stack.compose("--profile", "notebook", "--profile", "tracking", "build", "notebook", "tracking")
    tag = stack.env["SKFLEET_TAG"]
    return {name: f"skfleet/{name}:{tag}" for name in VENV}


def run_in(image: str, *command: str) -> str:
    output = docker_client().containers.run(image, list(command), entrypoint=[], user="0:0", remove=True)
    return output.decode()


@pytest.mark.parametrize("name", list(VENV))
def test_every_package_in_the_image_is_the_locks_at_its_version(images: dict[str, str], name: str) -> None:
    installed = json.loads(run_in(images[name], f"{VENV[name]}/bin/python", "-c", LIST))
    installed = {canonical(package): version for package, version in installed.items()}
    wanted = expected()[name]
    other_versions = {
        package: (installed[package], wanted[package])
        for package in set(installed) & set(wanted)
        if installed[package] != wanted[package]
    }
    assert installed == wanted, {
        "missing": sorted(set(wanted) - set(installed)),
        "not in the lock": sorted(set(installed) - set(wanted)),
        "other versions": other_versions,
    }
    assert "pip" not in installed and "setuptools" not in installed


@pytest.mark.parametrize("name", list(VENV))
def test_no_package_in_the_image_lacks_a_dependency(images: dict[str, str], name: str) -> None:
    printed = run_in(images[name], "sh", "-c", CHECK.format(venv=VENV[name]))
    assert printed.strip().endswith("No broken requirements found."), printed


def test_the_runtime_image_stays_small_enough_to_ship_to_many_vms(images: dict[str, str]) -> None:
    size = docker_client().images.get(images["runtime"]).attrs["Size"] / 1e6
    sizes = {name: docker_client().images.get(reference).attrs["Size"] / 1e6 for name, reference in images.items()}
    print("\nimage sizes: " + ", ".join(f"{name} {megabytes:.0f} MB" for name, megabytes in sizes.items()))
    assert size <= RUNTIME_BUDGET_MB, f"the runtime image is {size:.0f} MB, over its {RUNTIME_BUDGET_MB} MB budget"
