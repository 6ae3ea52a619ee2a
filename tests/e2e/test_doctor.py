"""doctor and the trainer's version gate against the Compose stack, with a really drifted worker."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import N_WORKERS, Stack

pytestmark = pytest.mark.docker

# A worker image that differs from the stack's in one package, by each package the gate must catch.
DRIFTS = {"cloudpickle": "3.1.1", "scikit-learn": "1.9.0", "distributed": "2026.7.1"}


def test_doctor_reports_a_healthy_stack(stack: Stack) -> None:
    result = stack.train("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{N_WORKERS} workers, {N_WORKERS} threads" in result.stdout
    assert f"workers ({N_WORKERS})" in result.stdout
    assert "TLS: no" in result.stdout
    assert "all versions match" in result.stdout


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


@pytest.fixture(params=sorted(DRIFTS))
def drifted_worker(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A worker from an image that differs from the stack's in one package, joined to the stack."""
    package = request.param
    # The wheel (for the image's Python) is fetched on the host: the image build needs no network or CA bundle.
    base = f"skfleet/runtime:{stack.env['SKFLEET_TAG']}"
    python = docker("run", "--rm", base, "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    platform = ["--python-version", python, "--implementation", "cp", "--only-binary=:all:"]
    platform += [f"--platform={tag}" for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *platform, "-d", str(tmp_path)]
    subprocess.run([*download, f"{package}=={DRIFTS[package]}"], check=True)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base}\n"
        "USER root\n"
        "COPY *.whl /tmp/wheels/\n"
        "RUN pip install --no-deps --no-index /tmp/wheels/*.whl\n"
        "USER 10001:10001\n"
    )
    image = f"skfleet/runtime-drift:{stack.project}"
    docker("build", "--quiet", "-t", image, str(tmp_path), check=True)
    name = f"{stack.project}-drifted-worker"
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        f"{stack.project}_default",
        image,
        "dask",
        "worker",
        "tcp://scheduler:8786",
        "--nthreads",
        "1",
        "--memory-limit",
        "1GiB",
    )
    try:
        yield package, DRIFTS[package]
    finally:
        print(docker("logs", "--tail", "50", name, check=False).stderr)
        docker("rm", "--force", name, check=False)
        docker("rmi", "--force", image, check=False)
        time.sleep(2)  # the scheduler drops the worker as its connection closes


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
    assert f"{package} {ours} here vs {drifted} on worker tcp://" in trainer.stderr
    assert stack.run_folders() == before
