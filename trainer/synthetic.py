"""Deterministic synthetic flights in the canonical ASA schema, with a planted signal.

The project's synthetic-data generator: the same `(n_rows, seed)` always gives the
same frame, so tests can tell a working pipeline (beats the majority baseline) from a
broken one (shuffled labels do not), and benchmarks can scale rows freely.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

YEAR = 2008
CARRIERS = ("AA", "DL", "UA", "WN", "B6", "EV", "MQ", "US", "AS", "F9")
CARRIER_WEIGHTS = (14, 14, 13, 16, 9, 9, 8, 8, 5, 4)
AIRPORTS = [
    "ATL",
    "ORD",
    "DFW",
    "DEN",
    "LAX",
    "SFO",
    "JFK",
    "LGA",
    "EWR",
    "BOS",
    "SEA",
    "PHX",
    "LAS",
    "MCO",
    "MIA",
    "IAH",
    "DTW",
    "MSP",
    "CLT",
    "SLC",
]
LATE_CARRIERS = ("EV", "F9", "MQ")
PUNCTUAL_CARRIERS = ("AS", "DL")
CONGESTED_ORIGINS = ("ORD", "EWR", "LGA", "SFO")
BUSY_MONTHS = (6, 7, 12)
WINTER_MONTHS = (1, 2, 12)
CANCEL_RATE = 0.02
DIVERT_RATE = 0.003


def _hour_weights() -> np.ndarray:
    hours = np.arange(5, 24)
    weights = np.where(hours <= 8, 1.3, np.where(hours <= 17, 1.0, 0.8))
    return weights / weights.sum()


def _distances(rng: np.random.Generator) -> np.ndarray:
    """One fixed, symmetric distance per airport pair, 150-2599 miles."""
    upper = rng.integers(150, 2600, size=(len(AIRPORTS), len(AIRPORTS)))
    return np.triu(upper, 1) + np.triu(upper, 1).T


def _hhmm(minutes_of_day: np.ndarray) -> np.ndarray:
    minutes = np.mod(minutes_of_day, 24 * 60)
    hhmm = (minutes // 60) * 100 + minutes % 60
    return np.where(hhmm == 0, 2400, hhmm)


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Give `n_rows` synthetic flights of 2008, deterministic from `(n_rows, seed)`."""
    rng = np.random.default_rng(seed)
    distance_table = _distances(rng)

    days = pd.Timestamp(f"{YEAR}-01-01") + pd.to_timedelta(rng.integers(0, 366, n_rows), unit="D")
    month = days.month.to_numpy()
    carrier_index = rng.choice(len(CARRIERS), size=n_rows, p=np.array(CARRIER_WEIGHTS) / sum(CARRIER_WEIGHTS))
    carrier = np.array(CARRIERS)[carrier_index]
    origin_index = rng.integers(0, len(AIRPORTS), n_rows)
    # Adding 1..19 modulo 20 picks a uniform destination other than the origin.
    dest_index = (origin_index + rng.integers(1, len(AIRPORTS), n_rows)) % len(AIRPORTS)
    origin = np.array(AIRPORTS)[origin_index]
    distance = distance_table[origin_index, dest_index]

    hour = rng.choice(np.arange(5, 24), size=n_rows, p=_hour_weights())
    departure = hour * 60 + 5 * rng.integers(0, 12, n_rows)
    elapsed = np.round(30 + distance / 7.5 + rng.normal(0, 5, n_rows)).astype(int)

    z = (
        -4
        + 4 * (hour >= 17)
        + 3 * np.isin(carrier, LATE_CARRIERS)
        - 2 * np.isin(carrier, PUNCTUAL_CARRIERS)
        + 2.5 * np.isin(origin, CONGESTED_ORIGINS)
        + 1.5 * np.isin(month, BUSY_MONTHS)
    )
    delayed = rng.random(n_rows) < 1 / (1 + np.exp(-z))
    arr_delay = np.where(
        delayed,
        np.round(15 + rng.exponential(40, n_rows)),
        np.minimum(14, np.round(rng.normal(-6, 9, n_rows))),
    )
    cancel_rate = np.where(np.isin(month, WINTER_MONTHS), 2 * CANCEL_RATE, CANCEL_RATE)
    cancelled = rng.random(n_rows) < cancel_rate
    diverted = ~cancelled & (rng.random(n_rows) < DIVERT_RATE)
    arr_delay = np.where(cancelled | diverted, np.nan, arr_delay)
    # The leak canary: known only after departure, strongly tied to the target.
    dep_delay = np.where(cancelled, np.nan, np.round(arr_delay + rng.normal(0, 5, n_rows)))

    return pd.DataFrame(
        {
            "Year": YEAR,
            "Month": month,
            "DayofMonth": days.day.to_numpy(),
            "DayOfWeek": days.day_of_week.to_numpy() + 1,
            "CRSDepTime": _hhmm(departure),
            "CRSArrTime": _hhmm(departure + elapsed),
            "UniqueCarrier": carrier,
            "FlightNum": rng.integers(1, 8000, n_rows),
            "Origin": origin,
            "Dest": np.array(AIRPORTS)[dest_index],
            "Distance": distance,
            "ArrDelay": arr_delay,
            "DepDelay": dep_delay,
            "Cancelled": cancelled.astype("int8"),
            "Diverted": diverted.astype("int8"),
        }
    )
