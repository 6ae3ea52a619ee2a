"""The README documents every knob of the root .env."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_env_variable_is_in_the_readme_table() -> None:
    variables = re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env").read_text(), re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    table_rows = [line for line in readme.splitlines() if line.startswith("| `")]
    documented = {name for row in table_rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert len(variables) > 10
    assert set(variables) <= documented, sorted(set(variables) - documented)
