"""`pip install .` as a Python developer does it: a clean venv, no warning, `python -m skfleet` works.

The wheel is built by pip in an isolated build environment (the build backend within
pyproject's bounds, fetched from the package index as for any user), then installed with
the cluster's exact versions (docker/constraints.txt). This machine's own pip configuration
is left out (PIP_CONFIG_FILE=/dev/null): a user's pip has none of it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import skfleet

ROOT = Path(__file__).resolve().parents[1]
# pip's own lines that say nothing about the package (a notice that pip itself is old).
PIP_NOTICES = re.compile(r"^\[notice\]")


def quiet_pip_environment() -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE makes setuptools say it skips byte-compiling: a setting of this shell, not ours.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_") and key != "PYTHONDONTWRITEBYTECODE"}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if os.environ.get("PIP_CERT"):  # a TLS-intercepting proxy's CA bundle, as the user's pip would have it
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


def warnings_in(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if not PIP_NOTICES.match(line)]
    return [line for line in lines if re.search(r"warn|deprecat|!!", line, re.IGNORECASE)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Give a clean venv with skfleet installed from this checkout, and the wheel it was built into."""
    folder = tmp_path_factory.mktemp("packaging")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    env = quiet_pip_environment()
    build = subprocess.run(
        [*pip, "wheel", "--verbose", "--no-deps", "--wheel-dir", str(folder / "dist"), "."],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "adding 'skfleet/__init__.py'" in build.stdout + build.stderr, "the build backend's own output is not in view"
    assert warnings_in(build.stdout + build.stderr) == []
    (wheel,) = (folder / "dist").glob("skfleet-*.whl")
    install = subprocess.run(
        [*pip, "install", "--quiet", "-c", "docker/constraints.txt", str(wheel)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    assert warnings_in(install.stdout + install.stderr) == [], install.stdout + install.stderr
    return venv, wheel


def test_the_wheel_holds_the_skfleet_package_its_license_and_one_version(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    assert wheel.name.startswith(f"skfleet-{skfleet.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        fields = archive.read(metadata).decode()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"skfleet"}, "the import name is the project's own, nothing else at the top"
    assert "skfleet/skfleet.yaml" in names and "skfleet/__main__.py" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "License-Expression: Apache-2.0" in fields
    assert f"Version: {skfleet.__version__}" in fields
    declared = {
        re.split(r"[\[<>=; ]", line.removeprefix("Requires-Dist: "))[0].lower()
        for line in fields.splitlines()
        if line.startswith("Requires-Dist: ")
    }
    # Every package the code imports is declared (the standard library aside).
    for package in ("dask", "scikit-learn", "joblib", "numpy", "pandas", "pyarrow", "psutil", "pyyaml", "skops", "matplotlib"):
        assert package in declared, package


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
