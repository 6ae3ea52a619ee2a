"""Your own scikit-learn code against the stack, from this machine: code we did not write, the README's snippet, versions.

The gallery examples come from scikit-learn's own source release, of the version the cluster
runs, fetched from the package index at test time (its hash checked): none of their files is
in this repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import ssl
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest
from distributed import Client, get_task_stream
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV

from tests import clients
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.docker

# Gallery examples that use bundled or generated data, and finish in seconds; what each exercises.
# (Each costs CI a local and a cluster run. Left out, as the trainer's and the README snippet's tests
# cover what they add: plot_multi_metric_evaluation.py, several scorers with train scores;
# plot_permutation_tests_for_classification.py, 1,000 small cross-validations.)
# (plot_grid_search_digits.py refits "the fastest to predict", a choice timing makes: not the same twice, even locally.)
EXAMPLES = {
    "model_selection/plot_nested_cross_validation_iris.py": "30 nested cross-validations: a search inside each fold's task",
    "model_selection/plot_successive_halving_heatmap.py": "HalvingGridSearchCV and GridSearchCV side by side",
    "feature_selection/plot_rfe_with_cross_validation.py": "RFECV with n_jobs=2, the selected features printed",
}
# Lines that differ from run to run whatever runs them.
TIMINGS = re.compile(r"\btook\b|\d+(?:\.\d+)? ?(?:s|secs?|seconds)\b", re.IGNORECASE)
RUNNER = Path(__file__).with_name("run_example.py")


def address(stack: Stack) -> str:
    return f"tcp://127.0.0.1:{stack.scheduler_port}"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Give a folder with EXAMPLES from scikit-learn's source release of the installed version."""
    version = importlib.metadata.version("scikit-learn")
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    listing = urllib.request.Request(f"{index}/scikit-learn/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(listing, timeout=60, context=context) as response:
        files = json.load(response)["files"]
    (release,) = [entry for entry in files if entry["filename"] == f"scikit_learn-{version}.tar.gz"]
    with urllib.request.urlopen(release["url"], timeout=300, context=context) as response:
        archive = response.read()
    assert hashlib.sha256(archive).hexdigest() == release["hashes"]["sha256"]
    folder = tmp_path_factory.mktemp("gallery")
    (folder / "release.tar.gz").write_bytes(archive)
    wanted = {f"scikit_learn-{version}/examples/{path}": path.split("/")[-1] for path in EXAMPLES}
    with tarfile.open(folder / "release.tar.gz") as release_archive:
        for member in release_archive.getmembers():
            if member.name in wanted:
                (folder / wanted[member.name]).write_bytes(release_archive.extractfile(member).read())
    assert sorted(path.name for path in folder.glob("*.py")) == sorted(path.split("/")[-1] for path in EXAMPLES)
    return folder


def run_examples(*runs: list[str], folder: Path) -> list[tuple[list[str], str]]:
    """Run RUNNER once per argument list in RUNS, side by side; give each one's stdout lines (timings dropped) and stderr."""
    with contextlib.ExitStack() as cleanup:
        started = []
        for number, args in enumerate(runs):
            out, err = folder / f"{number}.out", folder / f"{number}.err"
            with out.open("w") as stdout, err.open("w") as stderr:
                running = subprocess.Popen([sys.executable, str(RUNNER), *args], stdout=stdout, stderr=stderr)
            cleanup.callback(running.kill)  # a no-op once it ended
            started.append((running, out, err))
        outputs = []
        for running, out, err in started:
            running.wait(timeout=900)
            stdout, stderr = out.read_text(), err.read_text()
            assert running.returncode == 0, stdout[-3000:] + stderr[-3000:]
            outputs.append(([line for line in stdout.splitlines() if not TIMINGS.search(line)], stderr))
        return outputs


@pytest.mark.parametrize("example", [path.split("/")[-1] for path in EXAMPLES])
def test_a_gallery_example_prints_on_the_cluster_what_it_prints_locally(
    stack: Stack, gallery: Path, example: str, tmp_path: Path
) -> None:
    # Side by side: the local run computes here while the cluster's computes in the workers.
    script = str(gallery / example)
    (local, _), (ours, stderr) = run_examples([script], [script, "--scheduler", address(stack)], folder=tmp_path)
    assert local.index("--- results ---") < len(local) - 1, local  # a fitted search or scores to compare
    assert ours == local
    tasks = int(re.search(r"tasks: (\d+)", stderr)[1])
    assert tasks > 0, stderr  # the work ran on the cluster, not in the client
    assert "Mismatched versions" not in stderr


def readme_snippet() -> str:
    """Give the README's "Use your own code" snippet: the first python block that uses the skfleet backend."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use your own code", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return next(block for block in blocks if 'parallel_backend("skfleet")' in block)


def test_the_readme_snippet_makes_one_task_per_forest_with_the_local_scores(stack: Stack, tmp_path: Path) -> None:
    snippet = readme_snippet()
    assert "tcp://127.0.0.1:8786" in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("tcp://127.0.0.1:8786", address(stack)))
    # The scheduler records the task stream from here on (as the dashboard's plot would), whatever ran before.
    with Client(address(stack), timeout=10) as client, get_task_stream(client) as stream:
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # no version table, no warning
    tasks = [str(task["key"]) for task in stream.data]
    # 20 candidates x 3 folds answered by 5 forests a fold: 15 tasks, no tree of its own anywhere; then the
    # refit's forest in 2 exact chunks (one per worker) and the task that joins them.
    searched = [key for key in tasks if key.startswith("batch_of__fit_group_1_calls")]
    refitted = [key for key in tasks if key.startswith("_fit_chunk-")]
    joined = [key for key in tasks if key.startswith("batch_of__join_refit_1_calls")]
    assert (len(searched), len(refitted), len(joined), len(tasks)) == (15, 2, 1, 18), tasks[:20]
    X, y = load_digits(return_X_y=True)
    grid = {"n_estimators": [25, 50, 100, 200], "max_depth": [4, 8, 12, 16, None]}
    local = GridSearchCV(RandomForestClassifier(random_state=0), grid, cv=3).fit(X, y)
    assert result.stdout.splitlines()[0] == f"{local.best_params_} {round(local.best_score_, 4)}"
    assert result.stdout.splitlines()[1] == "60 fits answered by 15 forest fits (3,000 of 5,625 trees)"


def test_the_client_install_checks_itself_against_the_stack_with_doctor(stack: Stack, client_venv: Path) -> None:
    # dask, distributed, scikit-learn and skfleet: no pandas, skops or matplotlib.
    doctor = subprocess.run(
        [str(client_venv / "bin" / "python"), "-m", "skfleet", "doctor", "--scheduler", address(stack)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "all versions match" in doctor.stdout
    pandas = next(line for line in doctor.stdout.splitlines() if line.startswith("pandas"))
    assert pandas.split()[1:3] == ["missing", importlib.metadata.version("pandas")], pandas
    assert doctor.stderr == ""


@pytest.fixture(scope="module")
def older_scikit_learn(client_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client install with scikit-learn 1.8.0 in place of the cluster's."""
    return clients.overlay_venv(tmp_path_factory.mktemp("older") / "venv", client_venv, "scikit-learn==1.8.0")


BACKEND_CLIENT = """
import joblib, skfleet
from distributed import Client, get_task_stream
with Client({address!r}, timeout=10):
    with joblib.parallel_backend("skfleet"):
        print("started")
"""


def test_a_client_with_another_scikit_learn_is_refused_naming_both_versions(stack: Stack, older_scikit_learn: Path) -> None:
    python = str(older_scikit_learn / "bin" / "python")
    ours = importlib.metadata.version("scikit-learn")
    run = {"capture_output": True, "text": True, "timeout": 120, "check": False}
    # The backend refuses as it starts, before any task is sent...
    backend = subprocess.run([python, "-c", BACKEND_CLIENT.format(address=address(stack))], **run)
    assert backend.returncode != 0 and "started" not in backend.stdout
    refusal = "VersionMismatchError: version mismatch between this client and the cluster: "
    refusal += f"scikit-learn: client 1.8.0 vs scheduler {ours}"
    assert refusal in backend.stderr, backend.stderr
    assert f"fix (client): pip install 'scikit-learn=={ours}'" in backend.stderr
    # ...and doctor says the same, with the table.
    doctor = subprocess.run([python, "-m", "skfleet", "doctor", "--scheduler", address(stack)], **run)
    assert doctor.returncode == 4, doctor.stdout + doctor.stderr
    assert f"scikit-learn: client 1.8.0 vs scheduler {ours}" in doctor.stdout
    row = next(line for line in doctor.stdout.splitlines() if line.startswith("scikit-learn"))
    assert row.split() == ["scikit-learn", "1.8.0", ours, ours, "MISMATCH"]
