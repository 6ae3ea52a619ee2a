"""Run the commands of docs/runbooks/ as written, so a runbook can't drift from what works.

A runbook's `sh` fences are its commands. Each fence runs as one `bash -euo pipefail`
script from the repository root; its info string may say what the test expects:

    ```sh                  exits 0
    ```sh exit=4           exits 4 (say so in the text: "status exits 4 here")
    ```sh background       keeps running (a tunnel): started, handed to the test, stopped by it

Sections are addressed as "page.md#heading-slug". Tests name the sections they run as
string literals, and tests/docs/test_runbooks.py checks that every section with a command is
named by some test.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = ROOT / "docs" / "runbooks"
FENCE = re.compile(r"^```sh(?P<options>(?: +[\w=-]+)*)\s*$")


@dataclass(frozen=True)
class Block:
    """One `sh` fence: its commands and what running them should give."""

    section: str  # page.md#slug
    script: str
    exit_code: int = 0
    background: bool = False


def slug(heading: str) -> str:
    """Give GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def blocks(page: Path) -> list[Block]:
    """Give the page's `sh` fences in order, each with its section."""
    found, section, script, options = [], f"{page.name}#", None, ""
    for line in page.read_text().splitlines():
        if script is not None:
            if line.startswith("```"):
                found.append(_block(section, "\n".join(script), options))
                script = None
            else:
                script.append(line)
        elif line.startswith("## "):
            section = f"{page.name}#{slug(line[3:])}"
        elif match := FENCE.match(line):
            script, options = [], match.group("options")
    return found


def _block(section: str, script: str, options: str) -> Block:
    settings = dict(option.partition("=")[::2] for option in options.split())
    unknown = set(settings) - {"exit", "background"}
    if unknown:
        raise ValueError(f"{section}: unknown fence option(s) {sorted(unknown)}")
    return Block(section, script, int(settings.get("exit") or 0), "background" in settings)


def sections() -> dict[str, list[Block]]:
    """Give every runbook section that has commands, by its address."""
    found: dict[str, list[Block]] = {}
    for page in sorted(RUNBOOKS.glob("*.md")):
        for block in blocks(page):
            found.setdefault(block.section, []).append(block)
    return found


def run(
    section: str, env: dict[str, str], timeout: float = 900
) -> list[subprocess.CompletedProcess[str] | subprocess.Popen[str]]:
    """Run a section's fences in order, failing on any unexpected exit code; give their results.

    A `background` fence is started and handed back as a Popen (stdout piped, in a session
    of its own); the caller stops it with os.killpg.
    """
    results: list[subprocess.CompletedProcess[str] | subprocess.Popen[str]] = []
    for block in sections()[section]:
        command = ["bash", "-euo", "pipefail", "-c", block.script]
        if block.background:
            # A session of its own, so the caller stops the script and all it started with os.killpg.
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
            )
            results.append(process)
            continue
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != block.exit_code:
            raise AssertionError(
                f"{section}: `{block.script}` exited {done.returncode}, the runbook says {block.exit_code}\n"
                f"{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
            )
        results.append(done)
    return results
