"""Bad options and grid values: refused before any data is read or cluster started, in one line on stderr.

Each case runs in-process (a readable failure) and as a real `python -m skfleet` process. A cluster
started before the check once printed Dask's warnings first, and sometimes a tornado traceback:
what makes that impossible now is tested directly (no case reaches the data or the cluster,
`forbid_work`; checking the options imports no search, cluster start or report), so one process
per case is enough. The real processes prove what only a whole process shows: one line on stderr
from import to exit.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from skfleet import data
from skfleet.__main__ import main

# Two processes at a time: on an idle 2-core machine the 14 runs take about 10 s.
POOL = 2


@dataclass(frozen=True)
class Case:
    """A command line the trainer must refuse; {tmp} in ARGS and NAMES is the test's folder."""

    id: str
    args: tuple[str, ...]
    names: tuple[str, ...]  # what the one line must name: the option or parameter, the value, the file

    def arguments(self, tmp: Path) -> list[str]:
        return [arg.format(tmp=tmp) for arg in self.args]

    def fragments(self, tmp: Path) -> list[str]:
        return [name.format(tmp=tmp) for name in self.names]


CASES = [
    Case("bad type", ("--param", "max_depth=abc"), ("--param", "max_depth='abc'", "an int in the range [1, inf) or None")),
    Case("unknown parameter", ("--param", "max_dept=3"), ("--param", "unknown parameter 'max_dept'", "max_depth")),
    Case("no trees", ("--param", "n_estimators=0"), ("--param", "n_estimators=0", "[1, inf)")),
    Case("negative depth", ("--param", "max_depth=4,-1"), ("--param", "max_depth=-1", "[1, inf)")),
    Case("empty leaves", ("--param", "min_samples_leaf=0"), ("--param", "min_samples_leaf=0", "must be an int")),
    Case("grid file value", ("--grid", "{tmp}/zero.yaml"), ("{tmp}/zero.yaml", "n_estimators=0", "[1, inf)")),
    Case("grid file test_size", ("--grid", "{tmp}/split.yaml"), ("{tmp}/split.yaml", "test_size", "1.5")),
    Case("one fold", ("--cv", "1"), ("--cv", "at least 2", "got 1")),
    Case("unknown scoring", ("--scoring", "acuracy"), ("--scoring", "'acuracy'", "not a scikit-learn scorer")),
    Case("no workers", ("--workers", "0"), ("--workers", "at least 1", "got 0")),
    Case("halving factor", ("--search", "halving", "--halving-factor", "1"), ("--halving-factor", "at least 2", "got 1")),
    Case("data and synthetic", ("--data", "{tmp}/flights.csv", "--synthetic-rows", "100"), ("--data", "--synthetic-rows")),
    Case("unreadable grid", ("--grid", "{tmp}/latin1.yaml"), ("{tmp}/latin1.yaml", "unreadable grid file")),
    Case("missing data", ("--data", "{tmp}/nope.csv"), ("{tmp}/nope.csv", "no such file")),
]
# The same classes again, in-process only: a real process each would add a minute to the suite.
IN_PROCESS_ONLY = [
    Case("float for an int", ("--param", "n_estimators=10,2.5"), ("--param", "n_estimators=2.5", "must be an int")),
    Case("no folds", ("--cv", "0"), ("--cv", "at least 2", "got 0")),
    Case("halving factor alone", ("--halving-factor", "3"), ("--halving-factor", "--search halving")),
    Case("shared trees in halving", ("--search", "halving", "--shared-trees"), ("--shared-trees", "--search grid")),
    Case("missing grid", ("--grid", "{tmp}/nope.yaml"), ("{tmp}/nope.yaml", "no such grid file")),
    Case("bad criterion", ("--param", "criterion=gini,bogus"), ("--param", "criterion='bogus'", "a str among", "'gini'")),
    Case("negative seed", ("--random-state", "-1"), ("--random-state", "got -1")),
    Case("grid file seed", ("--grid", "{tmp}/seed.yaml"), ("{tmp}/seed.yaml", "split_random_state", "got -5")),
    Case("no wait", ("--workers-timeout", "0"), ("--workers-timeout", "above 0")),
    Case("negative pause", ("--paused-timeout", "-1"), ("--paused-timeout", "got -1")),
    Case("too few rows", ("--synthetic-rows", "5"), ("--synthetic-rows", "at least 10", "got 5")),
    Case("negative synthetic seed", ("--synthetic-rows", "100", "--synthetic-seed", "-1"), ("--synthetic-seed", "got -1")),
    Case("tiny sample", ("--sample-rows", "3"), ("--sample-rows", "at least 10", "got 3")),
    Case("no routes", ("--top-routes", "0"), ("--top-routes", "at least 1", "got 0")),
    Case("data is a folder", ("--data", "{tmp}"), ("{tmp}", "not a regular file")),
    Case("usage error", ("--workers", "many"), ("--workers", "'many'", "--help")),
]


def write_inputs(tmp: Path) -> None:
    (tmp / "zero.yaml").write_text("param_grid:\n  n_estimators: [10, 0]\n  max_depth: [2, 4]\n")
    (tmp / "split.yaml").write_text("test_size: 1.5\n")
    (tmp / "seed.yaml").write_text("split_random_state: -5\n")
    (tmp / "latin1.yaml").write_bytes("param_grid:\n  criterion: [entropía]\n".encode("latin-1"))
    (tmp / "flights.csv").write_text("not read\n")


def assert_refused(code: int, stdout: str, stderr: str, output: Path, fragments: list[str]) -> None:
    assert code == 2, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not output.exists() or not any(output.iterdir())


@pytest.fixture
def forbid_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the trainer reads data or starts a cluster."""
    from skfleet import cluster

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the option was checked after the work began")

    monkeypatch.setattr(data, "load", forbidden)
    monkeypatch.setattr(cluster, "connect", forbidden)


@pytest.mark.parametrize("case", CASES + IN_PROCESS_ONLY, ids=lambda case: case.id)
def test_refused_before_any_work(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], forbid_work: None) -> None:
    write_inputs(tmp_path)
    output = tmp_path / "output"
    code = main([*case.arguments(tmp_path), "--output", str(output)])
    captured = capsys.readouterr()
    assert_refused(code, captured.out, captured.err, output, case.fragments(tmp_path))


def test_every_run_of_a_real_process_prints_one_line(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}

    def run(case: Case) -> tuple[Case, Path, subprocess.CompletedProcess[str]]:
        output = tmp_path / f"output-{case.id.replace(' ', '-')}"
        command = [sys.executable, "-m", "skfleet", *case.arguments(tmp_path), "--output", str(output)]
        done = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        return case, output, done

    with concurrent.futures.ThreadPoolExecutor(POOL) as pool:
        runs = [pool.submit(run, case) for case in CASES]
        for future in concurrent.futures.as_completed(runs):
            case, output, done = future.result()
            assert_refused(done.returncode, done.stdout, done.stderr, output, case.fragments(tmp_path))


def test_checking_the_options_imports_no_search_cluster_or_report() -> None:
    # What makes a typo's error quick: these (skops, the search classes, the report) load only once the options
    # are sound. (skfleet.cluster and the joblib backend come with `import skfleet`: distributed is loaded by then.)
    deferred = {"skfleet.search", "skfleet.forest_search", "skfleet.report", "skfleet.checkpoint", "skops", "matplotlib"}
    probe = f"import sys, skfleet.cli; print(sorted({deferred!r} & set(sys.modules)))"
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == "[]"
