"""A new user's first minute: `git clone`, then the README's `docker compose up`, as a plain user.

The user (uid 1234, a member of the docker group) clones the repository into a folder of their own
and runs exactly the README's commands, with nothing run before: no output/ folder, no SKFLEET_UID,
no scripts/up.sh. Only what a shared test machine needs differs from a user's first run: free host
ports, a project name and an image tag of the test's own (the build is the stack's, from BuildKit's
cache), a small grid, and the offline base image where no registry answers. The run folder must
land in ./output, owned by the user: without an ./output, and with one (`docker compose run` after
`up`). Root owns whatever it finds, and every other Compose test runs as root: a root clone here
would check nothing they do not.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import pytest

from skfleet.report import RUN_FILES
from tests.stack import N_WORKERS, ROOT, free_port
from tests.summary import summary_value
from tests.vms import docker_client

pytestmark = pytest.mark.docker

# The README's commands, as a user types them in the clone's root.
UP = ["docker", "compose", "up", "--build", "--attach", "trainer", "--abort-on-container-exit", "--exit-code-from", "trainer"]
RUN = ["docker", "compose", "run", "--rm", "trainer"]
DOWN = ["docker", "compose", "down", "--volumes", "--remove-orphans", "--timeout", "10"]
TRAIN_ARGS = "--synthetic-rows 3000 --param n_estimators=4 --param max_depth=4"
NEWCOMER, NEWCOMER_UID = "skfleet-newcomer", 1234


@dataclass(frozen=True)
class Newcomer:
    """A user with a fresh clone: who they are, where the clone is, the environment they run Compose with."""

    name: str
    uid: int
    gid: int
    clone: Path
    env: dict[str, str]

    def run(self, command: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run COMMAND in the clone's root as this user."""
        as_user = {} if self.uid == os.getuid() else {"user": self.uid, "group": self.gid, "extra_groups": [docker_gid()]}
        return subprocess.run(
            command, cwd=self.clone, env=self.env, capture_output=True, text=True, timeout=timeout, check=False, **as_user
        )

    def run_folders(self) -> list[Path]:
        output = self.clone / "output"
        return sorted(path for path in output.iterdir() if not path.name.startswith(".")) if output.is_dir() else []


def docker_gid() -> int:
    return grp.getgrnam("docker").gr_gid


def ensure_newcomer() -> tuple[int, int]:
    """Give the uid and gid of a non-root member of the docker group (uid 1234), created when missing."""
    try:
        entry = pwd.getpwuid(NEWCOMER_UID)
    except KeyError:
        subprocess.run(
            ["useradd", "--uid", str(NEWCOMER_UID), "--user-group", "--groups", "docker", "--no-create-home", NEWCOMER],
            check=True,
        )
        entry = pwd.getpwnam(NEWCOMER)
    return entry.pw_uid, entry.pw_gid


def clone_for(name: str, uid: int, gid: int, home: Path) -> Newcomer:
    """Give a fresh `git clone` of this repository owned by UID, and the environment a user would have."""
    home.mkdir(mode=0o700)
    os.chown(home, uid, gid)
    clone = home / "skfleet"
    as_user = {} if uid == os.getuid() else {"user": uid, "group": gid}
    # The newcomer may not be able to read this checkout (CI's may sit in a 0700 folder), nor would
    # git trust another user's: they clone a bundle of its commit, as from a server.
    bundle = home.parent / "skfleet.bundle"
    subprocess.run(["git", "-c", "safe.directory=*", "bundle", "create", "--quiet", str(bundle), "HEAD"], cwd=ROOT, check=True)
    bundle.chmod(0o644)
    subprocess.run(
        ["git", "clone", "--quiet", str(bundle), str(clone)],
        env={"HOME": str(home), "PATH": os.environ["PATH"]},
        check=True,
        capture_output=True,
        **as_user,
    )
    assert not (clone / "output").exists()
    project = f"skfleet-fresh-{name}-{os.getpid()}"
    # A login's environment, not the test session's: no SKFLEET_* or COMPOSE_* of the shared stack.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SKFLEET_", "COMPOSE_", "DASK_"))}
    env.update(
        HOME=str(home),
        COMPOSE_PROJECT_NAME=project,
        SKFLEET_TAG="fresh",
        SKFLEET_SCHEDULER_PORT=str(free_port()),
        SKFLEET_DASHBOARD_PORT=str(free_port()),
        SKFLEET_TRAIN_ARGS=TRAIN_ARGS,
    )
    return Newcomer(name, uid, gid, clone, env)


@pytest.fixture(scope="module")
def newcomer() -> Iterator[Newcomer]:
    if os.getuid() != 0:
        pytest.fail("the fresh-clone test creates a uid-1234 user and runs Compose as it: run the tests as root (CI does)")
    uid, gid = ensure_newcomer()
    # Not below pytest's temporary folder: that one is private to root, and the user needs a home.
    base = Path(tempfile.mkdtemp(prefix="skfleet-fresh-uid1234-"))
    base.chmod(0o755)
    user = clone_for("uid1234", uid, gid, base / "home")
    try:
        yield user
    finally:
        user.run(DOWN, timeout=120)
        for image in ("runtime", "trainer"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client().images.remove(f"skfleet/{image}:fresh")
        shutil.rmtree(base, ignore_errors=True)


def assert_new_run_folder(user: Newcomer, before: list[Path], result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert summary_value(result.stdout, "best params") == "max_depth=4, n_estimators=4"
    (folder,) = [path for path in user.run_folders() if path not in before]
    assert sorted(path.name for path in folder.iterdir()) == RUN_FILES
    for path in [user.clone / "output", folder, *folder.iterdir()]:
        owner = path.stat()
        assert (owner.st_uid, owner.st_gid) == (user.uid, user.gid), f"{path} belongs to {owner.st_uid}:{owner.st_gid}"
    assert json.loads((folder / "results.json").read_text())["n_workers"] == N_WORKERS
    # Whoever ran Compose can remove what the trainer wrote (no file of the image's user is left).
    leftovers = [path for path in (user.clone / "output").rglob("*") if path.stat().st_uid != user.uid]
    assert leftovers == [], leftovers


def test_compose_up_in_a_fresh_clone_leaves_the_run_folder_to_whoever_ran_it(newcomer: Newcomer) -> None:
    result = newcomer.run(UP)
    assert_new_run_folder(newcomer, [], result)


def test_compose_run_with_an_existing_output_folder_adds_a_run_folder_of_theirs(newcomer: Newcomer) -> None:
    # After `docker compose up`: ./output exists (theirs) and holds one run; the stack is still there.
    before = newcomer.run_folders()
    assert (newcomer.clone / "output").is_dir()
    result = newcomer.run(RUN)
    assert_new_run_folder(newcomer, before, result)
    # Nothing in it is beyond them: they remove it all as themselves.
    removed = newcomer.run(["rm", "-r", "output"], timeout=60)
    assert removed.returncode == 0, removed.stderr
