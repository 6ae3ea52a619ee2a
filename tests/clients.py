"""Client installs as a user makes them: skfleet's wheel in a clean venv, with the cluster's exact versions.

The wheel is built by pip in an isolated build environment (the build backend within
pyproject's bounds, fetched from the package index as for any user), then installed with
docker/constraints.txt. This machine's own pip configuration is left out
(PIP_CONFIG_FILE=/dev/null): a user's pip has none of it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pip's own lines that say nothing about the package (a notice that pip itself is old).
PIP_NOTICES = re.compile(r"^\[notice\]")
# pip byte-compiles every file it installs, half an install's time (38 s to 18 s for the trainer's
# extra): a test imports a few of them, and Python compiles those as it imports them. (Not for .venv,
# which every test process imports from: where PYTHONDONTWRITEBYTECODE is set, as on CI's machines,
# each would compile it all again; the fast tests took 868 s instead of 528.)
NO_COMPILE = ("--no-compile",)


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


def pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the venv's pip from the checkout (docker/constraints.txt is relative), quietly configured."""
    command = [str(venv / "bin" / "python"), "-m", "pip", *args]
    return subprocess.run(command, cwd=ROOT, env=quiet_pip_environment(), capture_output=True, text=True, check=False)


def lock_pins() -> dict[str, str]:
    """Give docker/requirements.lock's pins: lowercase name, version."""
    text = (ROOT / "docker" / "requirements.lock").read_text()
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\", text, re.MULTILINE)}


def new_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


def build_wheel(folder: Path) -> tuple[Path, str]:
    """Build skfleet's wheel into FOLDER as `pip wheel .` does; give it and the build's output."""
    builder = new_venv(folder / "builder")
    build = pip(builder, "wheel", "--verbose", "--no-deps", "--wheel-dir", str(folder / "dist"), ".")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (folder / "dist").glob("skfleet-*.whl")
    return wheel, build.stdout + build.stderr


def install(venv: Path, requirement: str) -> str:
    """pip install REQUIREMENT into VENV with the cluster's exact versions; give pip's output."""
    result = pip(venv, "install", "--quiet", *NO_COMPILE, "-c", "docker/constraints.txt", requirement)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def site_packages(venv: Path) -> Path:
    (folder,) = (venv / "lib").glob("python3.*/site-packages")
    return folder


def overlay_venv(path: Path, under: Path, *requirements: str) -> Path:
    """Give a venv that sees UNDER's packages, with REQUIREMENTS (no dependencies) installed over them."""
    venv = new_venv(path)
    (site_packages(venv) / "under.pth").write_text(f"{site_packages(under)}\n")
    result = pip(venv, "install", "--quiet", *NO_COMPILE, "--no-deps", *requirements)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv
