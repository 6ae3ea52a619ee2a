"""The docs: every knob of the root .env and every role variable documented, every link and reference resolving."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.fleet import VM_SUITES

ROOT = Path(__file__).resolve().parents[2]


def test_every_env_variable_is_in_the_readme_table() -> None:
    variables = re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env").read_text(), re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    table_rows = [line for line in readme.splitlines() if line.startswith("| `")]
    documented = {name for row in table_rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert len(variables) > 10
    assert set(variables) <= documented, sorted(set(variables) - documented)


ROLES = sorted(path for path in (ROOT / "ansible" / "roles").iterdir() if path.is_dir())
# Derived from other hosts' facts, so not checked at role start; documented all the same.
UNCHECKED = {
    "skfleet_scheduler_address",
    "skfleet_dashboard_url",
    "skfleet_dashboard_host",
    "skfleet_tracking_url",
    "skfleet_tls_digest",
    "mlflow_tracking_allowed_hosts",
}


def test_every_role_variable_has_an_argument_spec_and_a_readme_row() -> None:
    expected = {
        "skfleet",
        "apt_packages",
        "docker_engine",
        "dask_images",
        "dask_tls",
        "dask_scheduler",
        "dask_worker",
        "trainer",
        "mlflow_tracking",
    }
    assert {role.name for role in ROLES} == expected
    for role in ROLES:
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
        readme = (role / "README.md").read_text()
        assert all(name.startswith(f"{role.name}_") for name in defaults), role.name
        assert set(defaults) - UNCHECKED <= set(specs), (role.name, sorted(set(defaults) - set(specs)))
        assert set(specs) <= set(defaults), (role.name, sorted(set(specs) - set(defaults)))
        assert {name for name in defaults if f"| `{name}` |" not in readme} == set(), role.name


# Debian's codename of each release number the roles' READMEs name.
DEBIAN_RELEASES = {"bookworm": "12", "trixie": "13"}


def test_every_role_names_the_debian_releases_the_fleet_tests_it_on() -> None:
    tested = sorted(set(VM_SUITES.values()), key=DEBIAN_RELEASES.get)
    sentence = "Tested on " + " and ".join(f"Debian {DEBIAN_RELEASES[suite]} ({suite})" for suite in tested)
    for role in ROLES:
        assert sentence in (role / "README.md").read_text(), role.name
        platforms = yaml.safe_load((role / "meta" / "main.yml").read_text())["galaxy_info"]["platforms"]
        (debian,) = [platform["versions"] for platform in platforms if platform["name"] == "Debian"]
        assert debian == tested, role.name


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


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.split()]


def test_every_link_of_the_docs_resolves_to_a_file_of_the_repository() -> None:
    broken = []
    documents = tracked("*.md")
    assert len(documents) > 10
    for document in documents:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address, or a heading of the same page
            path = (document.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
    assert broken == []


def test_nothing_refers_to_files_outside_the_repository() -> None:
    # The repository stands alone: no sibling folder of a development machine, no absolute path of one.
    outside = re.compile(r"\.\./shared|/work/main|AIRLINE_DATA\.md|VM_TEST_HOSTS\.md|STYLE\.md")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in tracked()
        if path.is_file() and path.suffix not in {".png", ".lock", ".ipynb"} and path.name != "test_docs.py"
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if outside.search(line)
    ]
    assert found == []
