"""The versions that must agree between client, scheduler and workers, compared; and distributed's own table, quieted.

Pure logic, no cluster: skfleet.cluster reads the versions from the scheduler and gates on them,
`doctor` and ops print them, and `import skfleet` keeps distributed's version table quiet where
every difference it lists is harmless.
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any

# Packages whose versions must agree between client, scheduler and workers: pickled
# estimators, task graphs and data cross between them. Python compares major.minor
# (pickles and wheels are compatible across micro releases); the rest compare exactly.
CHECKED_PACKAGES = ("python", "dask", "distributed", "scikit-learn", "numpy", "pandas", "cloudpickle", "joblib")

# A package the client lacks: nothing of it crosses from the client, so it can't mismatch there.
MISSING = "missing"
CLIENT_FIX = "pip install -c docker/constraints.txt ."
WORKER_FIX = "docker compose up --detach --build --force-recreate scheduler worker  (VMs: ansible-playbook upgrade.yml)"


def package_versions(report: dict[str, Any]) -> dict[str, str]:
    """Give the checked packages' versions from one `get_versions` entry (MISSING where not installed)."""
    packages = report.get("packages", {})
    python = str(packages.get("python", ""))
    versions = {"python": ".".join(python.split(".")[:2])}
    for name in CHECKED_PACKAGES[1:]:
        versions[name] = str(packages.get(name) or MISSING)
    return versions


@dataclass(frozen=True)
class VersionReport:
    """The checked packages' versions on the client, the scheduler and each worker."""

    client: dict[str, str]
    scheduler: dict[str, str]
    workers: dict[str, dict[str, str]]

    def places(self) -> dict[str, dict[str, str]]:
        """Give every place but the client: `scheduler` and `worker ADDRESS`."""
        return {"scheduler": self.scheduler, **{f"worker {address}": versions for address, versions in self.workers.items()}}

    def mismatches(self) -> dict[str, dict[str, str]]:
        """Give, for each package that differs from the client's, where and which version.

        A package the client lacks is no mismatch: a client with only dask, distributed and
        scikit-learn sends nothing of pandas.
        """
        found: dict[str, dict[str, str]] = {}
        places = self.places()
        for package, version in self.client.items():
            if version == MISSING:
                continue
            differing = {where: theirs[package] for where, theirs in places.items() if theirs[package] != version}
            if differing:
                found[package] = differing
        return found

    def problems(self) -> list[tuple[str, list[str]]]:
        """Give each mismatch as one line and the commands that end it: the client follows the scheduler, workers both.

        `doctor` prints them; `check_versions` refuses the cluster with the same words.
        """
        found = []
        for package, differing in self.mismatches().items():
            line = f"{package}: client {self.client[package]} vs {_where(differing)}"
            fixes = []
            if "scheduler" in differing:
                if package == "python":
                    fixes.append(f"fix: run the client on Python {self.scheduler['python']}, then {CLIENT_FIX}")
                else:
                    wanted = f"{package}=={self.scheduler[package]}"
                    fixes.append(f"fix (client): pip install '{wanted}', or all at once: {CLIENT_FIX}")
            if any(where.startswith("worker") and version != self.scheduler[package] for where, version in differing.items()):
                fixes.append(f"fix (workers): {WORKER_FIX}")
            found.append((line, fixes))
        return found


def _where(differing: dict[str, str]) -> str:
    """Give "scheduler 1.9.1, worker tcp://a 1.9.0" or, for many workers, "3 workers 1.9.1 (tcp://a, tcp://b, +1)"."""
    parts = [f"scheduler {differing['scheduler']}"] if "scheduler" in differing else []
    by_version: dict[str, list[str]] = {}
    for where, version in differing.items():
        if where.startswith("worker "):
            by_version.setdefault(version, []).append(where.removeprefix("worker "))
    for version, addresses in by_version.items():
        if len(addresses) == 1:
            parts.append(f"worker {addresses[0]} {version}")
        else:
            shown = ", ".join(addresses[:2]) + (f", +{len(addresses) - 2}" if len(addresses) > 2 else "")
            parts.append(f"{len(addresses)} workers {version} ({shown})")
    return ", ".join(parts)


def quiet_harmless_table() -> None:
    """Silence distributed's version table when every difference it lists is harmless to this client.

    distributed compares Python's full version at every connect and prints a 7-line table for
    3.11.7 against 3.11.2; a client install without pandas gets one for pandas too. Pickles and
    wheels don't change within a Python minor release, and nothing of a package the client lacks
    crosses from it (skfleet's own check agrees on both). A table users learn to ignore hides
    a real mismatch, so those cases stay quiet; any other difference still prints.
    """
    minor = re.escape(f"{sys.version_info.major}.{sys.version_info.minor}.")
    version = rf"{minor}\d+\.\w+\.\d+"
    cell = rf"\s*(?:{version}|\{{'{version}'(?:, '{version}')*\}})\s*"
    python = rf"\|\s*python\s*\|{cell}\|{cell}\|(?:{cell}|\s*None\s*)\|\s*"
    lacking = r"\|\s*(?:numpy|pandas)\s*\|\s*None\s*\|[^|\n]*\|[^|\n]*\|\s*"
    border = r"\s*\+[-+]+\+\s*"
    table = (
        rf"Mismatched versions found\s*{border}\|\s*Package\s*\|\s*Client\s*\|\s*Scheduler\s*\|\s*Workers\s*\|{border}"
        rf"(?:{python}|{lacking})+{border}\Z"
    )
    # Warning, not distributed.versions.VersionMismatchWarning: importing it would load distributed. The message
    # alone is the table.
    warnings.filterwarnings("ignore", message=table, category=Warning)
