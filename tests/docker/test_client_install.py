"""The client install gets exactly the cluster's versions: docker/constraints.txt follows the lock.

That an install with it resolves to the lock's versions: tests/trainer/test_packaging.py.
"""

from __future__ import annotations

from tests.clients import ROOT, lock_pins


def constraint_pins() -> dict[str, str]:
    lines = (ROOT / "docker" / "constraints.txt").read_text().splitlines()
    return dict(line.lower().split("==") for line in lines if line and not line.startswith("#"))


def test_constraints_are_the_lock_without_hashes() -> None:
    assert constraint_pins() == lock_pins()
    assert len(lock_pins()) > 30
