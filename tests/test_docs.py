"""The README documents every knob of the root .env."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_env_variable_is_in_the_readme_table() -> None:
    variables = re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env").read_text(), re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    table_rows = [line for line in readme.splitlines() if line.startswith("| `")]
    documented = {name for row in table_rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert len(variables) > 10
    assert set(variables) <= documented, sorted(set(variables) - documented)


ROLES = sorted(path for path in (ROOT / "ansible" / "roles").iterdir() if path.is_dir())
# Derived from other hosts' facts, so not checked at role start; documented all the same.
UNCHECKED = {"skfleet_scheduler_address", "skfleet_dashboard_url", "skfleet_tls_digest"}


def test_every_role_variable_has_an_argument_spec_and_a_readme_row() -> None:
    expected = {"skfleet", "docker_engine", "dask_images", "dask_tls", "dask_scheduler", "dask_worker", "trainer"}
    assert {role.name for role in ROLES} == expected
    for role in ROLES:
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
        readme = (role / "README.md").read_text()
        assert all(name.startswith(f"{role.name}_") for name in defaults), role.name
        assert set(defaults) - UNCHECKED <= set(specs), (role.name, sorted(set(defaults) - set(specs)))
        assert set(specs) <= set(defaults), (role.name, sorted(set(specs) - set(defaults)))
        assert {name for name in defaults if f"| `{name}` |" not in readme} == set(), role.name


def pins(path: Path) -> dict[str, str]:
    """Give the exact pins (name==version) of a requirements file, names normalised."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", path.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


def test_a_package_pinned_in_several_requirements_files_has_one_version() -> None:
    # The tests' tools and the ops tool's controller pin some packages twice on purpose (the docker SDK,
    # requests): each file installs alone, but .venv installs them together.
    files = [ROOT / "docker" / "requirements.lock", ROOT / "tests" / "requirements.txt", ROOT / "ansible" / "requirements.txt"]
    seen: dict[str, tuple[str, Path]] = {}
    for path in files:
        for name, version in pins(path).items():
            first = seen.setdefault(name, (version, path))
            assert first[0] == version, f"{name}: {first[0]} in {first[1].name}, {version} in {path.relative_to(ROOT)}"
    assert seen["docker"][0] == pins(ROOT / "ansible" / "requirements.txt")["docker"]


def test_the_dask_settings_baked_into_the_images_are_dasks_own_keys() -> None:
    # A misspelt key in docker/dask.yaml would be kept by Dask and read by nobody.
    import dask.config
    import distributed  # noqa: F401 (registers distributed's defaults)

    def keys(tree: dict, prefix: str = "") -> set[str]:
        found = set()
        for key, value in tree.items():
            name = f"{prefix}.{key}" if prefix else key
            found |= keys(value, name) if isinstance(value, dict) else {name}
        return found

    baked = yaml.safe_load((ROOT / "docker" / "dask.yaml").read_text())
    defaults: dict = {}
    for tree in dask.config.defaults:
        dask.config.update(defaults, tree)
    unknown = {key for key in keys(baked) if dask.config.get(key, default=None, config=defaults) is None}
    assert unknown == set(), sorted(unknown)
