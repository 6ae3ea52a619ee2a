"""Headless Chromium, as the tests render pages with it: the run report (a file) and the MLflow UI (a URL).

Debian's `chromium` package, installed by scripts/test.sh. Missing, the tests that need it fail in
CI and skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    """Give the chromium executable; fail in CI, skip elsewhere, when it is missing."""
    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI") or os.environ.get("SKFLEET_REQUIRE_DOCKER"):
        pytest.fail("no chromium on PATH: scripts/test.sh installs Debian's chromium package (as root)")
    pytest.skip("no chromium on PATH: apt-get install chromium (scripts/test.sh does, as root) to render the page")


def render_in_chromium(page: Path | str, *arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Give headless Chromium's run on PAGE (a file, or a URL): stdout, and stderr with the page's console messages."""
    command = [
        chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *arguments,
        page.as_uri() if isinstance(page, Path) else page,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def console_messages(stderr: str) -> list[str]:
    """Give the page's console lines (Chromium logs them as ...:CONSOLE...] "message", source: ...)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]
