"""Facts written in more than one place say the same: where a copy must exist, it is tested equal to its home."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from skfleet import dask_config

ROOT = Path(__file__).resolve().parents[1]


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
