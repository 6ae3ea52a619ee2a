"""The notebook profile: JupyterLab on loopback behind its token, running the example on the cluster."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from distributed import Client

from tests.stack import ROOT, Stack, free_port
from tests.vms import docker_client

pytestmark = pytest.mark.docker


@dataclasses.dataclass(frozen=True)
class Notebook:
    stack: Stack
    port: int
    token: str


@pytest.fixture(scope="module")
def notebook(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notebook]:
    folder = tmp_path_factory.mktemp("notebooks")
    shutil.copy(ROOT / "compose" / "notebooks" / "example.ipynb", folder)
    for path in (folder, *folder.iterdir()):
        shutil.chown(path, stack.uid, stack.uid)
    port = free_port()
    with_notebook = dataclasses.replace(
        stack, env={**stack.env, "SKFLEET_NOTEBOOK_DIR": str(folder), "SKFLEET_NOTEBOOK_PORT": str(port)}
    )
    with_notebook.compose("--profile", "notebook", "up", "--detach", "--build", "--wait", "notebook")
    try:
        logs = with_notebook.compose("logs", "notebook").stdout
        tokens = re.findall(r"token=([0-9a-f]{16,})", logs)
        assert tokens, f"no token printed at start:\n{logs}"
        yield Notebook(stack=with_notebook, port=port, token=tokens[0])
    finally:
        print(with_notebook.compose("logs", "--tail", "100", "notebook", check=False).stdout)
        with_notebook.compose("--profile", "notebook", "rm", "--stop", "--force", "notebook", check=False)


def status(port: int, token: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_requests_without_the_token_are_refused(notebook: Notebook) -> None:
    assert status(notebook.port, None) == 403
    assert status(notebook.port, "0" * 48) == 403
    assert status(notebook.port, notebook.token) == 200


def test_notebook_listens_on_loopback_only(notebook: Notebook) -> None:
    published = notebook.stack.compose("port", "notebook", "8888").stdout.strip()
    assert published == f"127.0.0.1:{notebook.port}"
    # The host's address on the stack's own network: a local interface that isn't loopback.
    network = json.loads(notebook.stack.compose("ps", "--format", "json", "scheduler").stdout.splitlines()[0])["Networks"]
    gateway = docker_client().networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"]
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.settimeout(5)
        probe.connect((gateway, notebook.port))


def test_example_notebook_runs_its_search_on_the_cluster(notebook: Notebook) -> None:
    started = time.time()
    result = notebook.stack.compose(
        "exec", "-T", "notebook", "jupyter", "execute", "--timeout=600", "/work/notebooks/example.ipynb", check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The scheduler's own task log, not the notebook's word: fits ran on the workers.
    with Client(f"tcp://127.0.0.1:{notebook.stack.scheduler_port}", timeout=10) as client:
        tasks = client.get_task_stream(start=started)
    fits = [task for task in tasks if "fit_and_score" in task["key"]]
    # joblib batches quick fits by timing ([mixed_]batch_of__fit_and_score_N_calls): count the calls, not the tasks.
    calls = [re.search(r"fit_and_score_(\d+)_calls", task["key"]) for task in fits]
    assert sum(int(call[1]) for call in calls if call) >= 12, [task["key"] for task in tasks][:20]
    assert all(task["worker"].startswith("tcp://") for task in fits)
