"""TLS on one machine: certificates from the VM path's role, the Compose stack over tls:// only.

scripts/local-tls.sh (ansible/local-tls.yml, role dask_tls) makes the CA and certificates; a
Compose project of its own runs with compose/tls.yaml, enabled through COMPOSE_FILE as a user
would in .env. The trainer and doctor run over tls://; a plain tcp:// client and a client whose
certificate another CA signed are refused at the published scheduler port.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from distributed import Client
from distributed.security import Security

from tests.stack import N_WORKERS, ROOT, stack_environment
from tests.summary import summary_value

pytestmark = [
    pytest.mark.docker,
    # This machine's Python and the images' may differ in the micro version (the trainer's gate agrees).
    pytest.mark.filterwarnings("ignore:Mismatched versions found"),
]

SCRIPT = ROOT / "scripts" / "local-tls.sh"
COMPOSE_FILE = "compose.yaml:compose/tls.yaml"
# The images' uid. When the tests run as root, the trainer gets another unprivileged uid, as a
# person's would be, so the scheduler and workers must read node.key through its group.
IMAGE_UID = 10001
PERSON_UID = 10002


@dataclass(frozen=True)
class TlsStack:
    """A running Compose project with the TLS overlay, and its certificate folders."""

    project: str
    env: dict[str, str]
    output_dir: Path
    tls_dir: Path
    foreign_dir: Path
    scheduler_port: int
    dashboard_port: int
    uid: int

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-p", self.project, *args]
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def security(self, certificates: Path) -> Security:
        """Give a host-side client's TLS settings: this stack's CA, the trainer certificate in CERTIFICATES."""
        return Security(
            tls_ca_file=str(self.tls_dir / "ca.pem"),
            tls_client_cert=str(certificates / "trainer.pem"),
            tls_client_key=str(certificates / "trainer.key"),
            require_encryption=True,
        )


def make_certificates(folder: Path, uid: int) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run scripts/local-tls.sh into FOLDER for UID; give its result and how long it took."""
    env = {**os.environ, "SKFLEET_TLS_DIR": str(folder), "SKFLEET_UID": str(uid), "SKFLEET_GID": str(uid)}
    started = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, time.monotonic() - started


def changed(result: subprocess.CompletedProcess[str]) -> int:
    """Give the `changed=` count of the play recap."""
    (count,) = re.findall(r"^localhost\s+:.*\bchanged=(\d+)", result.stdout, flags=re.MULTILINE)
    return int(count)


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    tmp = tmp_path_factory.mktemp("tls")
    project = f"skfleet-e2e-tls-{os.getpid()}"
    env, _, output_dir, uid = stack_environment(project, tmp)
    if os.getuid() == 0:
        uid = PERSON_UID
        os.chown(output_dir, uid, uid)
    tls_dir, foreign_dir = tmp / "tls", tmp / "foreign"
    first, first_seconds = make_certificates(tls_dir, uid)
    assert changed(first) > 0
    # Another CA altogether, made the same way: its certificates must not open this stack.
    make_certificates(foreign_dir, uid)
    print(f"\nlocal-tls.sh: {first_seconds:.1f} s for the CA and certificates")
    env.update(
        COMPOSE_FILE=COMPOSE_FILE,
        SKFLEET_TLS_DIR=str(tls_dir),
        SKFLEET_UID=str(uid),
        SKFLEET_GID=str(uid),
    )
    stack = TlsStack(
        project=project,
        env=env,
        output_dir=output_dir,
        tls_dir=tls_dir,
        foreign_dir=foreign_dir,
        scheduler_port=int(env["SKFLEET_SCHEDULER_PORT"]),
        dashboard_port=int(env["SKFLEET_DASHBOARD_PORT"]),
        uid=uid,
    )
    try:
        started = time.monotonic()
        stack.compose("up", "--detach", "--wait", "--wait-timeout", "180", "scheduler", "worker")
        print(f"TLS stack healthy after {time.monotonic() - started:.1f} s")
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


@pytest.fixture(autouse=True)
def _dump_tls_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and "tls_stack" in request.fixturenames:
        stack: TlsStack = request.getfixturevalue("tls_stack")
        logs = stack.compose("logs", "--no-color", "--tail", "200", check=False).stdout
        print(f"\n===== container logs of {stack.project} =====\n{logs}")


def test_certificates_come_from_the_vm_role_readable_by_the_containers_only(tls_stack: TlsStack) -> None:
    files = {path.name: path.stat() for path in tls_stack.tls_dir.iterdir()}
    assert {"ca.pem", "ca.key", "node.pem", "node.key", "trainer.pem", "trainer.key"} <= set(files)
    assert stat.S_IMODE(files["ca.key"].st_mode) == 0o600
    assert stat.S_IMODE(files["node.key"].st_mode) == 0o640
    assert stat.S_IMODE(files["trainer.key"].st_mode) == 0o600
    for key in ("node.key", "trainer.key"):
        assert (files[key].st_uid, files[key].st_gid) == (tls_stack.uid, tls_stack.uid), key
    node = x509.load_pem_x509_certificate((tls_stack.tls_dir / "node.pem").read_bytes())
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"scheduler", "localhost"}
    assert [str(address) for address in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # The scheduler sees the certificate files, never the CA key.
    mounted = tls_stack.compose("exec", "-T", "scheduler", "ls", "/etc/skfleet/tls").stdout.split()
    assert mounted == ["ca.pem", "node.key", "node.pem"]
    uid = tls_stack.compose("exec", "-T", "scheduler", "id", "-u").stdout.strip()
    assert uid == str(IMAGE_UID)
    # Idempotent: a second run changes nothing.
    again, seconds = make_certificates(tls_stack.tls_dir, tls_stack.uid)
    assert changed(again) == 0, again.stdout
    print(f"local-tls.sh again: changed=0 in {seconds:.1f} s")


def test_trainer_runs_over_tls(tls_stack: TlsStack) -> None:
    started = time.monotonic()
    result = tls_stack.compose(
        "run", "--rm", "--no-deps", "trainer", "--synthetic-rows", "3000", "--param", "n_estimators=4", "--param", "max_depth=4",
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (folder,) = [path for path in tls_stack.output_dir.iterdir() if not path.name.startswith(".")]
    results = json.loads((folder / "results.json").read_text())
    assert results["scheduler_address"].startswith("tls://"), results["scheduler_address"]
    assert results["n_workers"] == N_WORKERS
    assert summary_value(result.stdout, "best params") == "max_depth=4, n_estimators=4"
    print(f"trainer over TLS: {time.monotonic() - started:.1f} s")


def test_doctor_says_tls(tls_stack: TlsStack) -> None:
    result = tls_stack.compose("run", "--rm", "--no-deps", "trainer", "doctor", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^scheduler\s+tls://\S+\s+TLS: yes$", result.stdout, flags=re.MULTILINE), result.stdout
    assert f"{N_WORKERS} workers" in result.stdout
    assert "all versions match" in result.stdout


def test_plain_tcp_and_a_foreign_certificate_are_refused(tls_stack: TlsStack) -> None:
    for port in (8786, 8787):
        published = tls_stack.compose("port", "scheduler", str(port)).stdout.strip()
        assert published.startswith("127.0.0.1:"), published
    # The dashboard and /health (the healthchecks' endpoint) stay plain HTTP.
    with urllib.request.urlopen(f"http://127.0.0.1:{tls_stack.dashboard_port}/health", timeout=5) as response:
        assert response.read() == b"ok"
    address = f"127.0.0.1:{tls_stack.scheduler_port}"
    # The stack's own client certificate opens it from the host, so the refusals below are TLS's doing.
    with Client(f"tls://{address}", security=tls_stack.security(tls_stack.tls_dir), timeout="10s") as client:
        assert client.scheduler_info()["address"].startswith("tls://")
    with pytest.raises(OSError):
        Client(f"tcp://{address}", timeout="5s")
    with pytest.raises(OSError, match=r"(?i)unknown ca"):
        Client(f"tls://{address}", security=tls_stack.security(tls_stack.foreign_dir), timeout="5s")
