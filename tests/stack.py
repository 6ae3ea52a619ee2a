"""The Compose stack for Docker-backed tests: images built once, the stack up once per session.

Its fixtures are registered in tests/conftest.py; the helpers are imported from here.

pytest-docker brings the stack up (build, then `up --wait` for healthy scheduler and
workers) and down; the trainer runs as `docker compose run` against it, as a user would.
When a test fails, the containers' logs are printed, so a red CI run explains itself.
Compose is the CLI's; everything else goes to the engine through the Docker SDK.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
from distributed import Client

from tests.vms import docker_client

ROOT = Path(__file__).resolve().parents[1]
N_WORKERS = 2
# `docker compose` arguments that run the one-shot trainer against the running stack.
TRAIN = ("run", "--rm", "--no-deps", "trainer")


def docker_ready() -> str | None:
    """Give why Docker can't be used, or None when an engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        docker_client().ping()
    except (docker.errors.DockerException, requests.exceptions.ConnectionError):  # no socket, or nobody answering on it
        return "no running Docker engine"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return "no Compose v2 plugin"
    return None


@pytest.fixture
def _docker_required() -> None:
    pytest.fail(f"Docker-backed test without Docker: {docker_ready()}; .ci/run installs it with scripts/install-docker.sh")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60, explain: Callable[[], str] | None = None) -> Any:
    """Give CONDITION's first truthy value, polled until TIMEOUT; on timeout, say what EXPLAIN gives too."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{explain()}" if explain else ""))
        time.sleep(0.2)
    return value


def wait_for_steady(condition: Callable[[], bool], what: str, steady_s: float, timeout: float = 60) -> float:
    """Wait until CONDITION has held for STEADY_S seconds without a break; give when that stretch began (monotonic).

    For what may hold for a moment and break again: a worker that rejoins and is restarted once more.
    """
    deadline = time.monotonic() + timeout
    since = None
    while since is None or time.monotonic() - since < steady_s:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}, for {steady_s:.0f} s on end")
        held = bool(condition())
        since = (since or time.monotonic()) if held else None
        time.sleep(0.2)
    return since


class Background:
    """A command started without waiting for it, its output read as it comes.

    Unread, a pipe fills (64 KiB on Linux) and the command stalls on its next write: a test that
    waits for something the command does next would time out for a reason it can't see. Threads
    drain both pipes, and `output()` shows what came so far when a wait fails.
    """

    def __init__(self, command: list[str], **popen: Any) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
        self.args = self.process.args
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=lambda stream=stream, lines=lines: lines.extend(stream), daemon=True)
            for stream, lines in ((self.process.stdout, self._stdout), (self.process.stderr, self._stderr))
        ]
        for reader in self._readers:
            reader.start()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, number: int) -> None:
        self.process.send_signal(number)

    def kill(self) -> None:
        self.process.kill()

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait for the command to end (TimeoutExpired after TIMEOUT); give its whole stdout and stderr."""
        self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join()
        return "".join(self._stdout), "".join(self._stderr)

    def output(self, tail: int = 3000) -> str:
        """The last TAIL characters of each stream so far, for a failure's message."""
        return f"stdout so far:\n{''.join(self._stdout)[-tail:]}\nstderr so far:\n{''.join(self._stderr)[-tail:]}"


def crash(container: str) -> None:
    """SIGKILL a container's init from the host, as the kernel's OOM killer would.

    `docker kill` would count as an operator's stop, and no restart policy would follow.
    """
    inspected = docker_client().containers.get(container)  # as of now: a restart gives the init a new PID
    os.kill(inspected.attrs["State"]["Pid"], signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Stack:
    """A running Compose project and how to reach it."""

    project: str
    env: dict[str, str]
    data_dir: Path
    output_dir: Path
    scheduler_port: int
    dashboard_port: int
    uid: int

    def command(self, *args: str) -> list[str]:
        """Give the argv of `docker compose ARGS` for this project."""
        return ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "-p", self.project, *args]

    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        command = self.command(*args)
        result = subprocess.run(command, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def train(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run the trainer once against the stack, as `docker compose run --rm trainer ARGS`."""
        return self.compose(*TRAIN, *args, check=False, timeout=timeout)

    def train_in_background(self, *args: str) -> Background:
        """Start the trainer like `train`, without waiting for it."""
        return Background(self.command(*TRAIN, *args), cwd=ROOT, env=self.env)

    def run_folders(self) -> list[Path]:
        return sorted(path for path in self.output_dir.iterdir() if not path.name.startswith("."))

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "200", check=False).stdout


def stack_environment(project: str, tmp: Path) -> tuple[dict[str, str], Path, Path, int]:
    data_dir, output_dir = tmp / "data", tmp / "output"
    data_dir.mkdir()
    output_dir.mkdir()
    # Results belong to whoever runs the tests, root included: the trainer's entrypoint finds
    # the owner itself (docker/as-owner.sh), so SKFLEET_UID stays unset as in a fresh clone.
    uid = os.getuid()
    env = {
        **{key: value for key, value in os.environ.items() if key not in ("SKFLEET_UID", "SKFLEET_GID")},
        "SKFLEET_TAG": "e2e",
        "SKFLEET_WORKERS": str(N_WORKERS),
        "SKFLEET_SCHEDULER_PORT": str(free_port()),
        "SKFLEET_DASHBOARD_PORT": str(free_port()),
        "SKFLEET_PROMETHEUS_PORT": str(free_port()),
        "SKFLEET_DATA_DIR": str(data_dir),
        "SKFLEET_OUTPUT_DIR": str(output_dir),
        "SKFLEET_WORKERS_TIMEOUT": "120",
        "COMPOSE_PROJECT_NAME": project,
    }
    return env, data_dir, output_dir, uid


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    project = f"skfleet-e2e-{os.getpid()}"
    env, data_dir, output_dir, uid = stack_environment(project, tmp_path_factory.mktemp("stack"))
    os.environ.update({key: env[key] for key in env if key.startswith(("SKFLEET_", "COMPOSE_"))})
    return Stack(
        project=project,
        env=env,
        data_dir=data_dir,
        output_dir=output_dir,
        scheduler_port=int(env["SKFLEET_SCHEDULER_PORT"]),
        dashboard_port=int(env["SKFLEET_DASHBOARD_PORT"]),
        uid=uid,
    )


# pytest-docker's hooks: which file, which project, how to bring it up and down.
@pytest.fixture(scope="session")
def docker_compose_file(stack_settings: Stack) -> str:
    return str(ROOT / "compose.yaml")


@pytest.fixture(scope="session")
def docker_compose_project_name(stack_settings: Stack) -> str:
    return stack_settings.project


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # Build every image (trainer included), then wait until scheduler and workers are healthy.
    return ["build", f"up --detach --wait --scale worker={N_WORKERS} scheduler worker"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down --volumes --remove-orphans --timeout 10"]


@pytest.fixture(scope="session")
def stack(docker_services, stack_settings: Stack) -> Stack:
    return stack_settings


# One search long enough to disturb mid-way (a worker killed or silent, the scheduler killed), and
# the session's one undisturbed run of it on the stack (`undisturbed_run`).
DISTURBED_GRID = ("--synthetic-rows", "40000", "--param", "n_estimators=30,60", "--param", "max_depth=8,12")


@pytest.fixture(scope="session")
def undisturbed_run(stack: Stack) -> subprocess.CompletedProcess[str]:
    """The stack's undisturbed run of DISTURBED_GRID, whose scores every disturbed run must give (fits are seeded)."""
    result = stack.train(*DISTURBED_GRID)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        print(f"\n===== container logs of {stack.project} =====\n{stack.logs()}")


def drifted_image(stack: Stack, package: str, version: str, tmp_path: Path) -> str:
    """Give a worker image that differs from the stack's in PACKAGE only (at VERSION)."""
    # The wheel (for the image's Python) is fetched on the host: the image build needs no network or CA bundle.
    base = f"skfleet/runtime:{stack.env['SKFLEET_TAG']}"
    ask = "import sys; print('%d.%d' % sys.version_info[:2])"
    python = docker_client().containers.run(base, ["python", "-c", ask], remove=True).decode().strip()
    platform = ["--python-version", python, "--implementation", "cp", "--only-binary=:all:"]
    platform += [f"--platform={tag}" for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *platform, "-d", str(tmp_path)]
    subprocess.run([*download, f"{package}=={version}"], check=True)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base}\n"
        "USER root\n"
        "COPY *.whl /tmp/wheels/\n"
        # The image holds no pip (docker/install-lock.sh): one from the base's ensurepip, thrown away after.
        "RUN python3 -m venv /tmp/pip && /tmp/pip/bin/pip --python /opt/skfleet/bin/python install --quiet --no-deps"
        " --no-index /tmp/wheels/*.whl && rm -rf /tmp/pip /tmp/wheels\n"
        "USER 10001:10001\n"
    )
    image = f"skfleet/runtime-drift:{stack.project}-{package}"
    docker_client().images.build(path=str(tmp_path), tag=image, rm=True, timeout=600)
    return image


@contextlib.contextmanager
def joined_worker(stack: Stack, image: str, name: str, *worker_args: str) -> Iterator[str]:
    """Run one more worker container (`dask worker` of IMAGE) on the stack's network; give its name; remove it after."""
    engine = docker_client()
    container_name = f"{stack.project}-{name}"
    command = ["dask", "worker", "tcp://scheduler:8786", "--nthreads", "1", "--memory-limit", "1GiB", *worker_args]
    container = engine.containers.run(image, command, detach=True, name=container_name, network=f"{stack.project}_default")
    try:
        yield container_name
    finally:
        # Each step on its own: the container may be gone already (a runbook retired it).
        with contextlib.suppress(docker.errors.APIError):
            print(container.logs(stdout=False, tail=50).decode(errors="replace"))
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
        if image != f"skfleet/runtime:{stack.env['SKFLEET_TAG']}":
            with contextlib.suppress(docker.errors.APIError):  # in use by another test's container, or gone
                engine.images.remove(image, force=True)
        time.sleep(2)  # the scheduler drops the worker as its connection closes


def data_holder(client: Client) -> str | None:
    """Give the worker holding joblib's scattered frame once fits are running, else None."""
    if not any(client.processing().values()):
        return None
    for worker, keys in client.has_what().items():
        if any(str(key).startswith("DataFrame-") for key in keys):
            return worker
    return None


def worker_container(stack: Stack, address: str) -> str:
    """Give the id of the worker container whose IP is in ADDRESS."""
    for container in stack.compose("ps", "--quiet", "worker").stdout.split():
        networks = docker_client().containers.get(container).attrs["NetworkSettings"]["Networks"]
        if any(f"//{network['IPAddress']}:" in address for network in networks.values()):
            return container
    raise AssertionError(f"no worker container has the address {address}")


def run_id(result: subprocess.CompletedProcess[str]) -> str:
    """Give the run id a successful trainer printed."""
    assert result.returncode == 0, result.stderr
    (printed,) = re.findall(r"^run (\S+) on ", result.stdout, flags=re.MULTILINE)
    return printed


def scores_of(stack: Stack, result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """Give a finished run's best parameters and every candidate's mean CV score."""
    return scores_in(stack.output_dir / run_id(result))


def scores_in(folder: Path) -> dict[str, object]:
    """Give the best parameters and every candidate's mean CV score of the run folder FOLDER."""
    results = json.loads((folder / "results.json").read_text())
    with (folder / "cv_results.csv").open() as table:
        scores = {row["params"]: float(row["mean_test_score"]) for row in csv.DictReader(table)}
    return {"best_params": results["best_params"], "scores": scores}
