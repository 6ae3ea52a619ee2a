"""docs/runbooks/: every page linked, every command run by some test, the issue's situations covered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import runbooks

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(path.name for path in runbooks.RUNBOOKS.glob("*.md") if path.name != "README.md")
# The situations ops asked for, one page each.
SITUATIONS = {
    "version-mismatch.md",
    "unreachable-worker.md",
    "oom.md",
    "tls-rotation.md",
    "add-remove-vm.md",
    "scheduler-restart.md",
    "dashboard-tunnel.md",
    "slow-grid-search.md",
}


def sections_named_by_tests() -> set[str]:
    """Give the runbook sections the tests run: "page.md#slug" literals handed to runbooks.run."""
    named = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        named |= set(re.findall(r"runbooks\.run\(\s*\"([\w-]+\.md#[\w-]+)\"", path.read_text()))
    return named


def test_every_situation_has_a_page_linked_from_the_index_and_the_readme() -> None:
    assert set(PAGES) == SITUATIONS
    index = (runbooks.RUNBOOKS / "README.md").read_text()
    assert {page for page in PAGES if f"]({page})" not in index} == set()
    assert "docs/runbooks/README.md" in (ROOT / "README.md").read_text()


def test_every_command_of_every_runbook_is_run_by_a_test() -> None:
    sections = runbooks.sections()
    assert {page.partition("#")[0] for page in sections} == SITUATIONS  # every page has commands
    named = sections_named_by_tests()
    assert set(sections) - named == set(), "runbook sections no test runs"
    assert named - set(sections) == set(), "tests name sections the runbooks don't have"


def test_fences_parse_with_their_options(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n## Look, then fix!\n```sh exit=4\nscripts/ops.sh status\n```\n```sh background\na\nb\n```\n```\nnot run\n```\n"
    )
    assert runbooks.blocks(page) == [
        runbooks.Block("page.md#look-then-fix", "scripts/ops.sh status", exit_code=4),
        runbooks.Block("page.md#look-then-fix", "a\nb", background=True),
    ]
    page.write_text("## A\n```sh retries=3\nx\n```\n")
    with pytest.raises(ValueError, match="retries"):
        runbooks.blocks(page)
