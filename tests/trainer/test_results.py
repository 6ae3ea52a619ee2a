"""The run folder appears whole or not at all; results.json reads back as the Results it was written from."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from skfleet import results


def test_failed_write_leaves_no_run_folder(tmp_path: Path) -> None:
    output = tmp_path / "output"
    with pytest.raises(RuntimeError, match="disk full"), results.atomic_run_folder(output, "20260101T000000Z-abcdef") as folder:
        (folder / "results.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(output.iterdir()) == []


def test_successful_write_renames_into_place(tmp_path: Path) -> None:
    output = tmp_path / "output"
    with results.atomic_run_folder(output, "run") as folder:
        (folder / "results.json").write_text("{}")
        assert not (output / "run").exists()
    assert (output / "run" / "results.json").read_text() == "{}"
    assert [path.name for path in output.iterdir()] == ["run"]


def test_run_ids_sort_by_time_and_are_unique() -> None:
    from datetime import UTC, datetime

    early = results.new_run_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = results.new_run_id(datetime(2026, 1, 2, tzinfo=UTC))
    assert early < late
    assert early.startswith("20260101T000000Z-")
    assert results.new_run_id() != results.new_run_id()


def test_results_json_missing_a_key_is_refused_by_name(tmp_path: Path) -> None:
    from skfleet.errors import InputError

    (tmp_path / "results.json").write_text('{"run_id": "r", "best_params": {}}')
    missing = r"results\.json: not a skfleet results\.json of this version: no best_cv_score, scoring"
    with pytest.raises(InputError, match=missing):
        results.Results.read(tmp_path)
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="a JSON object was expected"):
        results.Results.read(tmp_path / "results.json")
    with pytest.raises(InputError, match="cannot read results"):
        results.Results.read(tmp_path / "absent.json")


def test_reading_a_run_folder_loads_no_cluster_code() -> None:
    # A pure record: `skfleet track`, ops and a notebook read results.json without distributed, the search or the data.
    runtime = ("distributed", "skfleet.cluster", "skfleet.backend", "skfleet.search", "skfleet.data", "sklearn", "pandas")
    probe = f"import sys, skfleet, skfleet.results; print(sorted(set({runtime!r}) & set(sys.modules)))"
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == "[]"


def a_results(**changes: object) -> results.Results:
    """Give a Results with a value of the right type in every field."""
    values = {
        field.name: {"float": 0.5, "int": 1, "str": "x", "bool": False}.get(str(field.type).split(" |")[0])
        for field in dataclasses.fields(results.Results)
    }
    return dataclasses.replace(results.Results(**values), **changes)


def test_results_json_reads_back_as_written_and_one_from_before_the_baseline_score_still_reads(tmp_path: Path) -> None:
    written = a_results(run_id="r", baseline_score=0.25, grid_edges=[], rounds=[{"candidates": 4, "rows": 10}])
    written.write(tmp_path)
    assert results.Results.read(tmp_path) == written
    older = json.loads((tmp_path / "results.json").read_text())
    del older["baseline_score"]
    (tmp_path / "results.json").write_text(json.dumps(older))
    assert results.Results.read(tmp_path) == dataclasses.replace(written, baseline_score=None)
