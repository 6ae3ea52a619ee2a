"""doctor and the trainer's version gate against the Compose stack, with a really drifted worker."""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import N_WORKERS, Stack, drifted_image, joined_worker

pytestmark = pytest.mark.docker

# A worker image that differs from the stack's in one package: the package users change most, and
# the one whose drift can break the wire itself. (A cloudpickle drift is the version-mismatch
# runbook's case, tests/ops/test_ops_on_the_stack.py; the gate compares every package alike.)
DRIFTS = {"scikit-learn": "1.9.0", "distributed": "2026.7.1"}


def test_doctor_reports_a_healthy_stack(stack: Stack) -> None:
    result = stack.train("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{N_WORKERS} workers, {N_WORKERS} threads" in result.stdout
    assert f"workers ({N_WORKERS})" in result.stdout
    assert "TLS: no" in result.stdout
    assert "all versions match" in result.stdout


@pytest.fixture(params=sorted(DRIFTS))
def drifted_worker(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A worker from an image that differs from the stack's in one package, joined to the stack."""
    package = request.param
    with joined_worker(stack, drifted_image(stack, package, DRIFTS[package], tmp_path), "drifted-worker"):
        yield package, DRIFTS[package]


def test_drifted_worker_is_refused_by_doctor_and_trainer(stack: Stack, drifted_worker: tuple[str, str]) -> None:
    package, drifted = drifted_worker
    ours = importlib.metadata.version(package)  # this machine's .venv is built from the images' lock
    doctor = stack.train("doctor", "--timeout", "30")
    for _ in range(30):  # the extra worker may still be starting
        if f"{N_WORKERS + 1} workers" in doctor.stdout:
            break
        time.sleep(1)
        doctor = stack.train("doctor", "--timeout", "30")
    assert doctor.returncode == 4, doctor.stdout + doctor.stderr
    assert f"{package}: client {ours} vs worker tcp://" in doctor.stdout
    assert f" {drifted}" in doctor.stdout

    before = stack.run_folders()
    trainer = stack.train("--synthetic-rows", "500", "--workers", str(N_WORKERS + 1))
    assert trainer.returncode == 4, trainer.stdout + trainer.stderr
    assert f"{package}: client {ours} vs worker tcp://" in trainer.stderr and f" {drifted}." in trainer.stderr
    assert stack.run_folders() == before
