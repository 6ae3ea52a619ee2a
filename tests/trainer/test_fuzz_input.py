"""Mangled input files: the CLI trains or refuses in one line; never a traceback, a half-written folder or a hang.

Each example starts from a small valid ASA CSV, damages it the way files arrive damaged
(cut short, wrong delimiter, other encodings, binary garbage, extreme numbers, a missing
or duplicated header) and runs the trainer in-process on one shared in-process cluster.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import signal
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
from distributed import LocalCluster
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from skfleet import layouts
from skfleet.__main__ import main
from skfleet.report import RUN_FILES
from tests.flights import asa_frame, write_csv

pytestmark = pytest.mark.cluster

# A clean run of the tiny grid takes about a second; a minute is a hang, not a slow machine.
EXAMPLE_SECONDS = 60
TINY_GRID = ["--param", "n_estimators=2", "--param", "max_depth=2", "--cv", "2"]
BASE_ROWS = 60

NUMERIC_COLUMNS = ("Month", "DayofMonth", "DayOfWeek", "CRSDepTime", "CRSArrTime", "FlightNum", "Distance", "ArrDelay")
TEXT_COLUMNS = ("UniqueCarrier", "Origin", "Dest", "TailNum")
EXTREME_VALUES = (
    "1e308",
    "-1e308",
    "1e309",
    str(10**30),
    f"-{10**30}",
    str(2**64),
    "inf",
    "-inf",
    "Infinity",
    "nan",
    "NaN",
    "-nan",
    "1e-320",
    "0x1F",
    "１２",
    " 7 ",
)
NON_ASCII_WORDS = ("Zürich", "São Paulo", "Köln", "東京", "naïve")
GARBAGE = st.binary(min_size=1, max_size=24)
NEEDED_COLUMNS = [*layouts.LAYOUTS["asa"].source_columns("delayed")]
# The two errors that quote a value, its column and its data row.
OUT_OF_RANGE = re.compile(r"column (\S+) has out-of-range value (\S+) \(data row (\d+)\)")
NOT_NUMERIC = re.compile(r"column (\S+) must be numeric, found (.+) \(data row (\d+)\)")

Rows = list[list[str]]


class ExampleTimeout(BaseException):
    """Raised by SIGALRM in the middle of the CLI: a BaseException, so no `except Exception` swallows it."""


# Row-level manglings: they edit the parsed grid of fields (header first).


def _data_row(rows: Rows, data: st.DataObject) -> int | None:
    """Draw the index of a data row; None when an earlier mangling left none."""
    return data.draw(st.integers(1, len(rows) - 1), label="row") if len(rows) > 1 else None


def extreme_value(rows: Rows, data: st.DataObject) -> Rows:
    column = rows[0].index(data.draw(st.sampled_from(NUMERIC_COLUMNS), label="column"))
    row = _data_row(rows, data)
    if row is not None:
        rows[row][column] = data.draw(st.sampled_from(EXTREME_VALUES), label="value")
    return rows


def empty_numeric(rows: Rows, data: st.DataObject) -> Rows:
    column = rows[0].index(data.draw(st.sampled_from(NUMERIC_COLUMNS), label="column"))
    if len(rows) < 2:
        return rows
    for row in data.draw(st.lists(st.integers(1, len(rows) - 1), min_size=1, max_size=10), label="rows"):
        rows[row][column] = ""
    return rows


def non_ascii_text(rows: Rows, data: st.DataObject) -> Rows:
    column = rows[0].index(data.draw(st.sampled_from(TEXT_COLUMNS), label="column"))
    row = _data_row(rows, data)
    if row is not None:
        rows[row][column] = data.draw(st.sampled_from(NON_ASCII_WORDS), label="word")
    return rows


def missing_header(rows: Rows, data: st.DataObject) -> Rows:
    return rows[1:]


def duplicated_column(rows: Rows, data: st.DataObject) -> Rows:
    """A second column under a needed name, holding another column's values."""
    name = data.draw(st.sampled_from(NUMERIC_COLUMNS), label="name")
    source = data.draw(st.integers(0, len(rows[0]) - 1), label="values of column")
    where = data.draw(st.integers(0, len(rows[0])), label="inserted at")
    for index, row in enumerate(rows):
        row.insert(where, name if index == 0 else (row[source] if source < len(row) else ""))
    return rows


def renamed_to_duplicate(rows: Rows, data: st.DataObject) -> Rows:
    """One header name replaced by another one already there."""
    if not rows:
        return rows
    target = data.draw(st.integers(0, len(rows[0]) - 1), label="renamed column")
    rows[0][target] = data.draw(st.sampled_from(rows[0]), label="to")
    return rows


def extra_field(rows: Rows, data: st.DataObject) -> Rows:
    """A stray delimiter in one row: one field too many."""
    row = _data_row(rows, data)
    if row is None:
        return rows
    where = data.draw(st.integers(0, len(rows[row])), label="at field")
    rows[row].insert(where, data.draw(st.sampled_from(["", "x", "0"]), label="field"))
    return rows


def few_rows(rows: Rows, data: st.DataObject) -> Rows:
    """A file cut short at a line end: from no data rows to a dozen."""
    return rows[: 1 + data.draw(st.integers(0, 12), label="data rows kept")]


def short_row(rows: Rows, data: st.DataObject) -> Rows:
    row = _data_row(rows, data)
    if row is not None:
        rows[row] = rows[row][: data.draw(st.integers(0, max(0, len(rows[row]) - 1)), label="fields kept")]
    return rows


def repeated_header(rows: Rows, data: st.DataObject) -> Rows:
    """Two files concatenated: the header again in the middle."""
    if not rows:
        return rows
    rows.insert(data.draw(st.integers(1, len(rows)), label="at row"), list(rows[0]))
    return rows


# Text-level manglings.


def wrong_delimiter(text: str, data: st.DataObject) -> str:
    delimiter = data.draw(st.sampled_from([";", "\t", "|"]), label="delimiter")
    lines = text.split("\n")
    if data.draw(st.booleans(), label="whole file"):
        return text.replace(",", delimiter)
    line = data.draw(st.integers(0, len(lines) - 1), label="line")
    lines[line] = lines[line].replace(",", delimiter)
    return "\n".join(lines)


def crlf_line_ends(text: str, data: st.DataObject) -> str:
    return text.replace("\n", "\r\n")


# Byte-level manglings: encodings first (they need the text), then damage to the bytes.


def _with_non_ascii(content: bytes, data: st.DataObject) -> str:
    text = content.decode("utf-8", errors="replace")  # an earlier encoding may have run
    if not text.isascii():
        return text
    lines = text.split("\n")
    line = data.draw(st.integers(0, max(0, len(lines) - 2)), label="non-ASCII line")
    fields = lines[line].split(",")
    fields[data.draw(st.integers(0, len(fields) - 1), label="non-ASCII field")] = data.draw(
        st.sampled_from(NON_ASCII_WORDS), label="word"
    )
    lines[line] = ",".join(fields)
    return "\n".join(lines)


def latin1(content: bytes, data: st.DataObject) -> bytes:
    return _with_non_ascii(content, data).encode("latin-1", errors="replace")


def utf16(content: bytes, data: st.DataObject) -> bytes:
    codec = data.draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be"]), label="codec")
    return content.decode("utf-8", errors="replace").encode(codec)


def mixed_encodings(content: bytes, data: st.DataObject) -> bytes:
    """Some lines UTF-8, some latin-1: two files of different origin pasted together."""
    lines = _with_non_ascii(content, data).split("\n")
    latin = data.draw(st.sets(st.integers(0, len(lines) - 1), min_size=1, max_size=10), label="latin-1 lines")
    return b"\n".join(
        line.encode("latin-1", errors="replace") if index in latin else line.encode("utf-8") for index, line in enumerate(lines)
    )


def utf8_bom(content: bytes, data: st.DataObject) -> bytes:
    return b"\xef\xbb\xbf" + content


def garbage_inserted(content: bytes, data: st.DataObject) -> bytes:
    where = data.draw(st.integers(0, len(content)), label="at byte")
    return content[:where] + data.draw(GARBAGE, label="garbage") + content[where:]


def garbage_appended(content: bytes, data: st.DataObject) -> bytes:
    return content + data.draw(GARBAGE, label="garbage")


def truncated_file(content: bytes, data: st.DataObject) -> bytes:
    return content[: data.draw(st.integers(0, len(content)), label="cut at byte")]


def empty_file(content: bytes, data: st.DataObject) -> bytes:
    return b""


ROW_MANGLINGS: dict[str, Callable[[Rows, st.DataObject], Rows]] = {
    function.__name__: function
    for function in (
        extreme_value,
        empty_numeric,
        non_ascii_text,
        missing_header,
        duplicated_column,
        renamed_to_duplicate,
        extra_field,
        few_rows,
        short_row,
        repeated_header,
    )
}
TEXT_MANGLINGS: dict[str, Callable[[str, st.DataObject], str]] = {
    function.__name__: function for function in (wrong_delimiter, crlf_line_ends)
}
BYTE_MANGLINGS: dict[str, Callable[[bytes, st.DataObject], bytes]] = {
    function.__name__: function
    for function in (latin1, utf16, mixed_encodings, utf8_bom, garbage_inserted, garbage_appended, truncated_file, empty_file)
}
# Listed in the order they are applied, so an example reads like the file's history.
MANGLINGS = [*ROW_MANGLINGS, *TEXT_MANGLINGS, *BYTE_MANGLINGS]


def base_csv(path: Path) -> Path:
    """Write the valid file every example starts from: small, both classes, every ASA column."""
    return write_csv(asa_frame(BASE_ROWS, seed=2), path)


def mangled_csv(path: Path, kinds: list[str], data: st.DataObject) -> bytes:
    """Give the bytes of the valid CSV at `path` after the manglings `kinds`, applied in MANGLINGS order."""
    ordered = sorted(kinds, key=MANGLINGS.index)
    # The ASA columns hold no commas or quotes: splitting on commas is parsing.
    rows = [line.split(",") for line in path.read_text().splitlines()]
    for kind in ordered:
        if kind in ROW_MANGLINGS:
            rows = ROW_MANGLINGS[kind](rows, data)
    text = "".join(",".join(row) + "\n" for row in rows)
    for kind in ordered:
        if kind in TEXT_MANGLINGS:
            text = TEXT_MANGLINGS[kind](text, data)
    content = text.encode("utf-8")
    for kind in ordered:
        if kind in BYTE_MANGLINGS:
            content = BYTE_MANGLINGS[kind](content, data)
    return content


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[str]:
    """One in-process cluster for every example, reached the way the trainer always reaches one."""
    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs its own SIGTERM handler
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as local,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("DASK_SCHEDULER_ADDRESS", local.scheduler_address)
        yield local.scheduler_address
    signal.signal(signal.SIGTERM, sigterm)


def _on_alarm(signum: int, frame: object) -> None:
    raise ExampleTimeout(f"the trainer ran over {EXAMPLE_SECONDS} s")


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_trainer(path: Path, output: Path) -> tuple[int, str]:
    """Give the CLI's exit code and its stderr, failing on a hang or an uncaught exception."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["--data", str(path), "--output", str(output), "--quiet", *TINY_GRID]
    try:
        with time_limit(EXAMPLE_SECONDS), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(argv)
    except ExampleTimeout:
        pytest.fail(f"hang: `python -m skfleet {' '.join(argv)}` ran over {EXAMPLE_SECONDS} s\nstderr: {stderr.getvalue()}")
    except Exception as error:
        error.add_note(f"uncaught by skfleet.cli.main: the user sees this traceback\nstderr: {stderr.getvalue()}")
        raise
    return code, stderr.getvalue()


def assert_clean_outcome(code: int, stderr: str, path: Path, output: Path) -> None:
    """A complete run folder and exit 0, or exit 2 with one line naming the file and nothing written."""
    assert "Traceback" not in stderr, stderr
    entries = sorted(output.iterdir()) if output.exists() else []
    if code == 0:
        assert len(entries) == 1, f"exit 0 but the output holds {[entry.name for entry in entries]}"
        (folder,) = entries
        assert folder.is_dir() and not folder.name.startswith("."), folder.name
        assert sorted(entry.name for entry in folder.iterdir()) == RUN_FILES
        results = json.loads((folder / "results.json").read_text())
        assert results["n_train_rows"] > 0 and 0 <= results["test_accuracy"] <= 1
        return
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {stderr}"
    assert len(lines) == 1, f"not one line:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert path.name in lines[0], f"the error does not name the file: {lines[0]}"
    assert entries == [], f"a refused run left {[entry.name for entry in entries]}"


def plain_rows(content: bytes) -> list[tuple[int, list[str]]] | None:
    """Give the file's rows and their line numbers as every CSV reader must see them, or None.

    UTF-8 without quotes, NUL bytes or carriage returns has one reading: lines split at
    newlines (blank ones skipped, as pandas does), fields at commas. None where readers may differ.
    """
    try:
        text = content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None
    if any(character in text for character in '"\x00\r'):
        return None
    lines = enumerate(text.split("\n"), start=1)
    return [(number, line.split(",")) for number, line in lines if line.strip(" \t")] or None


def _same_number(shown: str, cell: str) -> bool:
    """Whether a quoted number is the cell's: an integer exactly (no digits the file lacks), others as floats."""
    try:
        if re.fullmatch(r"-?\d+", shown):
            return Decimal(cell.strip()) == int(shown)
        return float(shown) == float(cell)
    except (ValueError, InvalidOperation):
        return False


def _same_text(shown: str, cell: str) -> bool:
    try:
        return ast.literal_eval(shown) == cell
    except (ValueError, SyntaxError):
        return False


def assert_faithful(code: int, stderr: str, content: bytes) -> None:
    """Ambiguous files are refused for what they are, and an error quoting a value quotes the file.

    An independent oracle, where the file has a single reading (see plain_rows): these are
    the errors a run can pass the generic checks with and still mislead, or train on
    values from the wrong column.
    """
    rows = plain_rows(content)
    if rows is None:
        return
    (_, header), body = rows[0], [fields for _, fields in rows[1:]]
    readable = set(NEEDED_COLUMNS) <= set(header)
    repeated = [column for column in NEEDED_COLUMNS if header.count(column) > 1]
    longer = [(number, len(fields)) for number, fields in rows[1:] if len(fields) > len(header)]
    if longer:
        (line, found), first_row = longer[0], rows[1][0]
        assert code == 2, f"line {line} has {found} fields, the header {len(header)}: read shifted, not refused"
        # The first data row is checked with the header, the others once the layout is known.
        if line == first_row or (readable and not repeated):
            assert f"line {line} has {found} fields but the header has {len(header)}" in stderr, stderr
        return
    if repeated:
        assert code == 2, f"the header names {repeated[0]} twice: one of them was used, not refused"
        if readable:
            assert f"column {repeated[0]} appears" in stderr, stderr
        return
    for pattern, same in ((OUT_OF_RANGE, _same_number), (NOT_NUMERIC, _same_text)):
        match = pattern.search(stderr)
        if match is None or match.group(1) not in header:
            continue
        column, shown, number = match.groups()
        index, row = header.index(column), int(number)
        cell = body[row - 1][index] if row <= len(body) and index < len(body[row - 1]) else None
        assert cell is not None and same(shown, cell), f"the error quotes {shown}; data row {row} holds {cell!r} in {column}"


# 100 examples, the same ones each run (derandomize): every mangling, alone and combined, in about 25 s
# (--hypothesis-show-statistics lists them).
@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(kinds=st.lists(st.sampled_from(MANGLINGS), min_size=1, max_size=3), data=st.data())
def test_mangled_csv_trains_or_fails_in_one_line(
    shared_cluster: str, tmp_path_factory: pytest.TempPathFactory, kinds: list[str], data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = base_csv(folder / "flights.csv")
    path.write_bytes(mangled_csv(path, kinds, data))
    note(f"file: {path.read_bytes()[:300]!r}")
    output = folder / "output"
    code, stderr = run_trainer(path, output)
    note(f"exit {code}; stderr: {stderr!r}")
    # --hypothesis-show-statistics: the manglings tried and the mix of outcomes.
    for kind in set(kinds):
        event(kind)
    event("trained" if code == 0 else "refused")
    assert_clean_outcome(code, stderr, path, output)
    assert_faithful(code, stderr, path.read_bytes())


def test_the_unmangled_base_file_trains(shared_cluster: str, tmp_path: Path) -> None:
    # Without this, a broken base file would make every example a (clean) refusal.
    path = base_csv(tmp_path / "flights.csv")
    output = tmp_path / "output"
    code, stderr = run_trainer(path, output)
    assert code == 0, stderr
    assert_clean_outcome(code, stderr, path, output)
