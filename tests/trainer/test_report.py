"""The run folder appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from skfleet import report


def test_failed_write_leaves_no_run_folder(tmp_path: Path) -> None:
    output = tmp_path / "output"
    with pytest.raises(RuntimeError, match="disk full"), report.atomic_run_folder(output, "20260101T000000Z-abcdef") as folder:
        (folder / "results.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(output.iterdir()) == []


def test_successful_write_renames_into_place(tmp_path: Path) -> None:
    output = tmp_path / "output"
    with report.atomic_run_folder(output, "run") as folder:
        (folder / "results.json").write_text("{}")
        assert not (output / "run").exists()
    assert (output / "run" / "results.json").read_text() == "{}"
    assert [path.name for path in output.iterdir()] == ["run"]


def test_run_ids_sort_by_time_and_are_unique() -> None:
    from datetime import UTC, datetime

    early = report.new_run_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = report.new_run_id(datetime(2026, 1, 2, tzinfo=UTC))
    assert early < late
    assert early.startswith("20260101T000000Z-")
    assert report.new_run_id() != report.new_run_id()
