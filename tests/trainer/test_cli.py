"""Bad input: a one-line error naming the file and the problem, its exit code, no output left."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skfleet.__main__ import main
from tests.flights import asa_frame, write_csv
from tests.summary import summary_value


def run(args: list[str], output: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([*args, "--output", str(output), "--quiet"])
    stderr = capsys.readouterr().err
    return code, stderr


def assert_clean_failure(code: int, stderr: str, output: Path, expected_code: int, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == expected_code, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in stderr
    assert not output.exists() or not any(output.iterdir())


def bad_csv(tmp_path: Path, column: str, row: int, value: object) -> Path:
    frame = asa_frame()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return write_csv(frame, tmp_path / "bad.csv")


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return tmp_path / "output"


def test_missing_file(tmp_path: Path, output: Path, capsys) -> None:
    missing = tmp_path / "nope.csv"
    code, stderr = run(["--data", str(missing)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(missing), "no such file")


def test_binary_garbage(tmp_path: Path, output: Path, capsys) -> None:
    path = tmp_path / "garbage.csv.gz"
    path.write_bytes(b"\x00\x01\x02not gzip at all\xff" * 50)
    code, stderr = run(["--data", str(path)], output, capsys)
    # Read as what its first bytes say (not gzip), and the name's claim named.
    assert_clean_failure(code, stderr, output, 2, str(path), "its name says gzip, but its first bytes are not compressed", "NUL")


def test_unknown_layout_lists_missing_columns(tmp_path: Path, output: Path, capsys) -> None:
    path = write_csv(asa_frame().drop(columns=["Origin", "Distance"]), tmp_path / "short.csv")
    code, stderr = run(["--data", str(path)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(path), "unknown layout", "missing columns Origin, Distance")


def test_non_numeric_value_names_column_and_value(tmp_path: Path, output: Path, capsys) -> None:
    path = bad_csv(tmp_path, "Distance", 7, "far")
    code, stderr = run(["--data", str(path)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(path), "column Distance must be numeric", "'far'", "data row 8")


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("Month", 13, "column Month has out-of-range value 13"),
        ("CRSDepTime", 2561, "column CRSDepTime has out-of-range value 2561"),
    ],
)
def test_out_of_range_values(tmp_path: Path, output: Path, capsys, column: str, value: int, expected: str) -> None:
    path = bad_csv(tmp_path, column, 3, value)
    code, stderr = run(["--data", str(path)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(path), expected, "data row 4")


def test_nothing_left_without_target(tmp_path: Path, output: Path, capsys) -> None:
    frame = asa_frame()
    frame["ArrDelay"] = float("nan")
    path = write_csv(frame, tmp_path / "all-cancelled.csv")
    code, stderr = run(["--data", str(path)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(path), f"no rows left after dropping {len(frame)} rows without ArrDelay")


def test_single_class_target(tmp_path: Path, output: Path, capsys) -> None:
    frame = asa_frame()
    frame["ArrDelay"] = frame["ArrDelay"].where(frame["ArrDelay"].isna(), 0)
    path = write_csv(frame, tmp_path / "never-late.csv")
    code, stderr = run(["--data", str(path)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(path), "target delayed has a single class")


def test_more_folds_than_rows_of_any_class(tmp_path: Path, output: Path, capsys) -> None:
    path = write_csv(asa_frame(n_rows=14), tmp_path / "tiny.csv")
    code, stderr = run(["--data", str(path), "--cv", "12"], output, capsys)
    assert_clean_failure(code, stderr, output, 2, "tiny.csv: cv=12 folds need 12 training rows of a class", "lower --cv")


def test_a_feature_empty_in_every_row_is_named(tmp_path: Path, output: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    frame = asa_frame(n_rows=300)
    frame["Distance"] = None
    path = write_csv(frame, tmp_path / "no-distance.csv")
    grid = ["--param", "n_estimators=2", "--param", "max_depth=2", "--cv", "2", "--workers", "1"]
    code = main(["--data", str(path), *grid, "--output", str(output)])
    assert code == 0
    assert "no-distance.csv: feature Distance is empty in every row: the model learns nothing from it" in capsys.readouterr().err


def test_a_file_whose_every_feature_is_empty_is_refused(tmp_path: Path, output: Path, capsys) -> None:
    # It trained to AUC 0.5000, an accuracy equal to the majority baseline's, without a word.
    frame = asa_frame(n_rows=300)
    features = ["Month", "DayofMonth", "DayOfWeek", "CRSDepTime", "CRSArrTime", "FlightNum", "Distance", "UniqueCarrier"]
    frame[[*features, "Origin", "Dest"]] = None
    path = write_csv(frame, tmp_path / "empty.csv")
    code, stderr = run(["--data", str(path)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, "empty.csv: every feature is empty (Month, ", "nothing but the base rate")


def test_unknown_grid_parameter(tmp_path: Path, output: Path, capsys) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("param_grid:\n  n_estimators: [2, 4]\n  max_dept: [2]\n")
    code, stderr = run(["--synthetic-rows", "200", "--grid", str(grid)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(grid), "unknown parameter 'max_dept'", "max_depth")


def test_unknown_grid_file_key(tmp_path: Path, output: Path, capsys) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"param_grid": {"max_depth": [2]}, "folds": 3}))
    code, stderr = run(["--synthetic-rows", "200", "--grid", str(grid)], output, capsys)
    assert_clean_failure(code, stderr, output, 2, str(grid), "unknown key 'folds'")


def test_invalid_grid_value_is_a_user_error(output: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    code, stderr = run(["--synthetic-rows", "300", "--param", "n_estimators=-3", "--workers", "1"], output, capsys)
    assert_clean_failure(code, stderr, output, 2, "n_estimators")


def test_unreachable_scheduler_exits_3(output: Path, capsys, monkeypatch) -> None:
    # Port 9 on loopback: nothing listens there.
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    code, stderr = run(["--synthetic-rows", "300", "--workers-timeout", "2"], output, capsys)
    assert_clean_failure(code, stderr, output, 3, "cannot reach the Dask scheduler at tcp://127.0.0.1:9")


def test_a_scheduler_address_that_accepts_and_never_answers_exits_3_within_the_workers_timeout(
    silent_port: str, output: Path, capsys, monkeypatch
) -> None:
    """A wrong port, a load balancer, a half-started container: the trainer names the address and what did not happen."""
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", silent_port)
    started = time.monotonic()
    code, stderr = run(["--synthetic-rows", "300", "--workers-timeout", "2"], output, capsys)
    assert time.monotonic() - started < 15
    assert_clean_failure(
        code, stderr, output, 3, f"the Dask scheduler at {silent_port} did not complete Dask's handshake within 2 s"
    )


def test_distributeds_logs_stay_quiet_in_a_real_process_after_distributed_sets_its_own_levels() -> None:
    # `import skfleet` loads no distributed, so the CLI's levels must come after distributed's import sets its own:
    # set before, the client's reconnect traceback reached stderr when a scheduler died mid-search (CI).
    probe = "import logging, sys; from skfleet.__main__ import main; code = main(['doctor', '--timeout', '1']); "
    probe += "print(code, 'distributed' in sys.modules, logging.getLogger('distributed').level, "
    probe += "logging.getLogger('distributed.client').level)"
    environment = {**{key: value for key, value in os.environ.items() if not key.startswith("DASK_")}}
    environment["DASK_SCHEDULER_ADDRESS"] = "tcp://127.0.0.1:9"
    done = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["3", "True", str(logging.WARNING), str(logging.CRITICAL)], done.stdout + done.stderr


def test_output_that_is_a_file(tmp_path: Path, capsys) -> None:
    output = tmp_path / "taken"
    output.write_text("mine")
    code, stderr = run(["--synthetic-rows", "300"], output, capsys)
    assert code == 2
    assert "exists and is not a folder" in stderr
    assert output.read_text() == "mine"


def test_the_commands_are_listed_and_train_is_the_default(output: Path, capsys) -> None:
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: python -m skfleet [COMMAND] [OPTIONS]")
    assert re.findall(r"^ {4}(\w+) ", shown, re.MULTILINE) == ["train", "doctor", "bench", "track"]
    # `train` may be said or left out: the same run, the same error for the same bad option.
    for arguments in (["--workers", "many"], ["train", "--workers", "many"]):
        code, stderr = run(arguments, output, capsys)
        assert_clean_failure(code, stderr, output, 2, "invalid int value: 'many' (usage: python -m skfleet train --help)")


def test_json_ends_the_run_with_one_line_for_scripts(output: Path, capsys) -> None:
    grid = ["--param", "n_estimators=4", "--param", "max_depth=3", "--cv", "2"]
    assert main(["--synthetic-rows", "800", *grid, "--output", str(output), "--json"]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()  # stdout: the result, nothing else
    result = json.loads(line)
    folder = Path(result.pop("run_folder"))
    assert folder.parent == output and folder.name == result["run_id"]
    summary = result.pop("summary")
    assert result == json.loads((folder / "results.json").read_text())
    # The human summary, on stderr, and its very text in the result (train.yml prints it).
    assert summary.startswith(f"run {result['run_id']} on ") and summary_value(summary, "written to") == str(folder)
    assert captured.err.rstrip().endswith(summary)
