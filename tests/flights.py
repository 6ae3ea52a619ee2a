"""Small flight tables in the ASA layout, written as the real files are: the data the trainer tests read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skfleet import synthetic

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
